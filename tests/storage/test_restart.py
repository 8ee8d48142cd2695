"""Stored events survive close()/open() and are seen by every store object on the same URL."""

from __future__ import annotations

from collections.abc import Callable

from flask_shimmie.events import NO_STREAM
from flask_shimmie.storage.interface import EventStore
from tests.backends import require_durable
from tests.storage.helpers import append_one, batch, pending, pending_with_pii, positions


def test_close_and_open_again_keeps_every_event(store: EventStore) -> None:
    written = (pending("a", data={"k": "v"}), pending("b"), pending("a"))
    first = store.append(batch(*written)).events
    before = store.read()

    store.close()
    store.open()

    assert store.read() == before == first
    assert store.last_sequence_num() == 3
    assert store.stream_versions(["a", "b"]) == {"a": 2, "b": 1}
    (next_event,) = store.append(batch(pending("a"), expected={"a": 2})).events
    assert (next_event.sequence_num, next_event.stream_version) == (4, 3)
    assert store.append(batch(written[1])).created is False


def test_close_and_open_again_keeps_pii(store: EventStore) -> None:
    event = pending_with_pii("p", {"title": "t"}, {"email": "a@example.com"})
    store.append(batch(event), write_pii=True)

    store.close()
    store.open()

    assert store.colocated_pii_store().get([event.event_id]) == {event.event_id: {"email": "a@example.com"}}


def test_a_new_store_object_on_the_same_url_sees_every_event(
    backend: str, store: EventStore, open_store: Callable[[], EventStore]
) -> None:
    require_durable(backend)
    written = store.append(batch(pending("a", data={"n": 1}), pending("b"), pending("a"))).events

    other = open_store()

    assert other.read() == written
    assert other.last_sequence_num() == 3
    assert other.stream_versions(["a", "b", "c"]) == {"a": 2, "b": 1, "c": 0}
    assert other.count_by_event_name() == {"THING_HAPPENED": 3}
    assert other.count_streams() == 2
    assert other.existing_event_ids([e.event_id for e in written]) == {e.event_id for e in written}


def test_store_objects_on_the_same_url_share_positions_versions_and_event_ids(
    backend: str, store: EventStore, open_store: Callable[[], EventStore]
) -> None:
    require_durable(backend)
    other = open_store()
    known = pending("s")

    append_one(store, "s")
    other.append(batch(known, expected={"s": 1}))
    (third,) = store.append(batch(pending("s"), expected={"s": 2})).events
    retry = store.append(batch(known, expected={"s": NO_STREAM}))

    assert (third.sequence_num, third.stream_version) == (3, 3)
    assert retry.created is False and positions(retry.events) == [2]
    assert store.read() == other.read()
    assert positions(other.read()) == [1, 2, 3]


def test_a_new_store_object_sees_the_pii_written_by_another(
    backend: str, store: EventStore, open_store: Callable[[], EventStore]
) -> None:
    require_durable(backend)
    event = pending_with_pii("p", {"title": "t"}, {"email": "a@example.com"})
    store.append(batch(event), write_pii=True)
    store.close()

    other = open_store()

    assert other.colocated_pii_store().get([event.event_id]) == {event.event_id: {"email": "a@example.com"}}

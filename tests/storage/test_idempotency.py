"""Recording a known event_id again returns the stored event and writes nothing."""

from __future__ import annotations

import dataclasses

import pytest

from flask_shimmie.errors import ShimmieError, StreamVersionError
from flask_shimmie.events import NO_STREAM
from flask_shimmie.storage.interface import AppendResult, EventStore
from tests.storage.helpers import append_one, batch, pending, positions


def test_a_retry_with_a_known_event_id_returns_the_stored_event(store: EventStore) -> None:
    event = pending("s", data={"v": 1})
    append_one(store, "other")
    (original,) = store.append(batch(event)).events

    retry = store.append(batch(event))

    assert retry.created is False
    assert retry.events == [original]
    assert retry.events == store.read(after=1)
    assert store.last_sequence_num() == 2
    assert store.stream_versions(["s"]) == {"s": 1}


def test_a_retry_returns_the_stored_data_not_the_retried_data(store: EventStore) -> None:
    event = pending("s", data={"v": 1})
    store.append(batch(event))

    changed = dataclasses.replace(event, data={"v": 2}, data_json='{"v": 2}', event_name="OTHER")
    (returned,) = store.append(batch(changed)).events

    assert (returned.data, returned.event_name) == ({"v": 1}, "THING_HAPPENED")
    assert [e.data for e in store.read()] == [{"v": 1}]


def test_a_retry_is_answered_before_the_version_check(store: EventStore) -> None:
    event = pending("s")
    (original,) = store.append(batch(event, expected={"s": NO_STREAM})).events
    append_one(store, "s")

    retry = store.append(batch(event, expected={"s": NO_STREAM}))

    assert retry.created is False
    assert retry.events == [original]
    assert store.last_sequence_num() == 2


def test_a_retry_of_a_whole_batch_returns_every_stored_event_in_order(store: EventStore) -> None:
    events = [pending("a"), pending("b"), pending("a")]
    original = store.append(batch(*events)).events
    append_one(store, "c")

    retry = store.append(batch(*events, expected={"a": NO_STREAM}))

    assert retry == AppendResult(original, False)
    assert positions(retry.events) == [1, 2, 3]
    assert store.last_sequence_num() == 4


def test_a_batch_mixing_known_and_new_event_ids_is_rejected_and_writes_nothing(store: EventStore) -> None:
    known = pending("s")
    store.append(batch(known))
    new = pending("s")

    with pytest.raises(ShimmieError) as caught:
        store.append(batch(new, known))

    assert not isinstance(caught.value, StreamVersionError)
    assert store.existing_event_ids([new.event_id]) == set()
    assert store.last_sequence_num() == 1


def test_the_same_event_id_twice_in_one_batch_is_rejected_and_writes_nothing(store: EventStore) -> None:
    event = pending("s")

    with pytest.raises(ShimmieError):
        store.append(batch(event, pending("t"), event))

    assert store.read() == []
    assert store.existing_event_ids([event.event_id]) == set()


def test_an_event_id_repeated_in_a_later_batch_of_one_call_is_a_retry(store: EventStore) -> None:
    event = pending("s")

    first, second = store.append_batches([batch(event), batch(event, expected={"s": NO_STREAM})])

    assert isinstance(first, AppendResult) and isinstance(second, AppendResult)
    assert (first.created, second.created) == (True, False)
    assert second.events == first.events
    assert positions(store.read()) == [1]

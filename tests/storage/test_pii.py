"""PII: written with its event in one transaction, never into the event data, erasable per stream."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection

import pytest

from flask_shimmie.errors import StreamVersionError
from flask_shimmie.events import NO_STREAM
from flask_shimmie.storage.interface import AppendResult, EventStore, PiiRecord, PiiStore
from tests.backends import require_durable
from tests.storage.helpers import PII_PLACEHOLDER, batch, new_event_id, pending, pending_with_pii

EMAIL = "zoë.secret@example.com"
PHONE = "+44 7700 900123"


def record(stream_id: str, **values: object) -> PiiRecord:
    return PiiRecord(new_event_id(), stream_id, json.dumps(values))


# --- written by append(write_pii=True) into the colocated store -----------------------------


def test_append_with_write_pii_stores_the_pii_in_the_colocated_store(
    store: EventStore, pii_store: PiiStore
) -> None:
    event = pending_with_pii("person-1", {"name_len": 3}, {"email": EMAIL, "phone": PHONE})

    (stored,) = store.append(batch(event), write_pii=True).events

    assert pii_store.get([event.event_id]) == {event.event_id: {"email": EMAIL, "phone": PHONE}}
    assert json.loads(pii_store.get_json([event.event_id])[event.event_id]) == {
        "email": EMAIL,
        "phone": PHONE,
    }
    assert stored.data == {"name_len": 3, "email": EMAIL, "phone": PHONE}  # the delivered payload
    assert stored.pii_fields == ("email", "phone")


def test_pii_values_never_reach_the_stored_event(store: EventStore) -> None:
    event = pending_with_pii("person-1", {"title": "hello"}, {"email": EMAIL, "phone": PHONE})

    store.append(batch(event), write_pii=True)
    (stored,) = store.read()

    assert stored.data == {"title": "hello", "email": PII_PLACEHOLDER, "phone": PII_PLACEHOLDER}
    raw = json.dumps([stored.data, stored.meta], ensure_ascii=False)
    assert EMAIL not in raw and PHONE not in raw
    assert stored.pii_fields == ("email", "phone")


def test_append_without_write_pii_stores_no_pii(store: EventStore, pii_store: PiiStore) -> None:
    event = pending_with_pii("person-1", {}, {"email": EMAIL})

    store.append(batch(event))

    assert pii_store.get([event.event_id]) == {}


def test_an_event_without_pii_gets_no_pii_row(store: EventStore, pii_store: PiiStore) -> None:
    event = pending("plain")

    store.append(batch(event), write_pii=True)

    assert pii_store.get_json([event.event_id]) == {}
    assert pii_store.event_ids_older_than(0) == []


def test_a_batch_rejected_by_its_version_check_leaves_no_pii_row(
    store: EventStore, pii_store: PiiStore
) -> None:
    store.append(batch(pending("person-1")))
    rejected = [
        pending_with_pii("person-1", {}, {"email": EMAIL}),
        pending_with_pii("person-2", {}, {"phone": PHONE}),
    ]

    with pytest.raises(StreamVersionError):
        store.append(batch(*rejected, expected={"person-1": NO_STREAM}), write_pii=True)

    assert pii_store.get([e.event_id for e in rejected]) == {}
    assert pii_store.event_ids_older_than(0) == []


def test_append_batches_writes_the_pii_of_accepted_batches_only(
    store: EventStore, pii_store: PiiStore
) -> None:
    good = pending_with_pii("a", {}, {"email": "good@example.com"})
    bad = pending_with_pii("b", {}, {"email": EMAIL})

    outcomes = store.append_batches(
        [batch(good), batch(bad, expected={"b": 7})],
        write_pii=True,
    )

    assert [type(o) for o in outcomes] == [AppendResult, StreamVersionError]
    assert pii_store.get([good.event_id, bad.event_id]) == {good.event_id: {"email": "good@example.com"}}


def test_append_batches_on_one_stream_write_the_pii_of_the_batches_their_checks_let_through(
    store: EventStore, pii_store: PiiStore
) -> None:
    create = pending_with_pii("s", {}, {"email": "create@example.com"})
    stale = pending_with_pii("s", {}, {"email": EMAIL})
    update = pending_with_pii("s", {}, {"email": "update@example.com"})

    outcomes = store.append_batches(
        [
            batch(create, expected={"s": NO_STREAM}),
            batch(stale, expected={"s": 5}),
            batch(update, expected={"s": 1}),
        ],
        write_pii=True,
    )

    assert [type(o) for o in outcomes] == [AppendResult, StreamVersionError, AppendResult]
    assert [(e.sequence_num, e.stream_version) for e in store.read()] == [(1, 1), (2, 2)]
    assert pii_store.get([create.event_id, stale.event_id, update.event_id]) == {
        create.event_id: {"email": "create@example.com"},
        update.event_id: {"email": "update@example.com"},
    }


def test_a_retry_writes_no_pii(store: EventStore, pii_store: PiiStore) -> None:
    event = pending_with_pii("a", {}, {"email": "first@example.com"})
    store.append(batch(event), write_pii=True)
    changed = pending_with_pii("a", {}, {"email": "second@example.com"}, event_id=event.event_id)

    assert store.append(batch(changed), write_pii=True).created is False

    assert pii_store.get([event.event_id]) == {event.event_id: {"email": "first@example.com"}}


def test_erase_stream_deletes_the_pii_written_by_append_and_keeps_the_events(
    store: EventStore, pii_store: PiiStore
) -> None:
    mine = [pending_with_pii("me", {"i": i}, {"email": EMAIL}) for i in range(2)]
    theirs = pending_with_pii("them", {}, {"email": "them@example.com"})
    store.append(batch(mine[0], theirs, mine[1]), write_pii=True)

    assert pii_store.erase_stream("me") == 2

    assert pii_store.get([e.event_id for e in [*mine, theirs]]) == {
        theirs.event_id: {"email": "them@example.com"}
    }
    assert store.last_sequence_num() == 3
    assert pii_store.erase_stream("me") == 0


def test_purge_orphans_deletes_pii_rows_whose_event_is_not_stored(
    store: EventStore, pii_store: PiiStore
) -> None:
    kept = pending_with_pii("a", {}, {"email": "kept@example.com"})
    store.append(batch(kept), write_pii=True)
    orphans = [record("a", email="orphan1@example.com"), record("b", email="orphan2@example.com")]
    pii_store.put(orphans)

    assert pii_store.purge_orphans(store.existing_event_ids, older_than=3600) == 0
    assert len(pii_store.get([o.event_id for o in orphans])) == 2
    assert pii_store.purge_orphans(store.existing_event_ids, older_than=0) == 2

    assert pii_store.get([kept.event_id, *(o.event_id for o in orphans)]) == {
        kept.event_id: {"email": "kept@example.com"}
    }
    assert pii_store.purge_orphans(store.existing_event_ids, older_than=0) == 0


# --- the PiiStore interface, for the colocated store and for a store of its own ------------


def test_put_then_get_returns_the_values_of_known_ids_only(any_pii_store: PiiStore) -> None:
    first, second = record("s", email=EMAIL, nested={"a": [1, 2.5, None]}), record("t", phone=PHONE)
    any_pii_store.put([first, second])

    assert any_pii_store.get([first.event_id, second.event_id, new_event_id()]) == {
        first.event_id: {"email": EMAIL, "nested": {"a": [1, 2.5, None]}},
        second.event_id: {"phone": PHONE},
    }
    assert json.loads(any_pii_store.get_json([second.event_id])[second.event_id]) == {"phone": PHONE}
    assert any_pii_store.get([]) == {}
    assert any_pii_store.get([new_event_id()]) == {}


def test_put_replaces_the_row_of_the_same_event_id(any_pii_store: PiiStore) -> None:
    row = record("s", email="old@example.com")
    any_pii_store.put([row])

    any_pii_store.put([PiiRecord(row.event_id, "s", json.dumps({"email": "new@example.com"}))])

    assert any_pii_store.get([row.event_id]) == {row.event_id: {"email": "new@example.com"}}
    assert any_pii_store.erase_stream("s") == 1


def test_erase_stream_deletes_that_streams_rows_only_and_returns_the_count(any_pii_store: PiiStore) -> None:
    mine = [record("me", email=EMAIL), record("me", phone=PHONE), record("me", n=1)]
    theirs = [record("them", email="them@example.com"), record("me-too", email="x@example.com")]
    any_pii_store.put([*mine, *theirs])

    assert any_pii_store.erase_stream("me") == 3
    assert any_pii_store.get([r.event_id for r in mine]) == {}
    assert set(any_pii_store.get([r.event_id for r in theirs])) == {r.event_id for r in theirs}
    assert any_pii_store.erase_stream("me") == 0
    assert any_pii_store.erase_stream("nobody") == 0


def test_delete_removes_the_named_rows(any_pii_store: PiiStore) -> None:
    rows = [record("s", n=i) for i in range(3)]
    any_pii_store.put(rows)

    any_pii_store.delete([rows[0].event_id, rows[2].event_id, new_event_id()])
    any_pii_store.delete([])

    assert any_pii_store.get([r.event_id for r in rows]) == {rows[1].event_id: {"n": 1}}


def test_event_ids_older_than_tells_old_rows_from_new_ones(any_pii_store: PiiStore) -> None:
    rows = [record("s", n=i) for i in range(3)]
    any_pii_store.put(rows)
    time.sleep(0.05)

    assert sorted(any_pii_store.event_ids_older_than(0)) == sorted(r.event_id for r in rows)
    assert any_pii_store.event_ids_older_than(3600) == []


def test_purge_orphans_keeps_rows_whose_event_exists(any_pii_store: PiiStore) -> None:
    rows = [record("s", n=i) for i in range(4)]
    any_pii_store.put(rows)
    stored = {rows[0].event_id, rows[3].event_id}
    asked: list[str] = []

    def existing(event_ids: Collection[str]) -> set[str]:
        asked.extend(event_ids)
        return stored & set(event_ids)

    assert any_pii_store.purge_orphans(existing, older_than=3600) == 0
    assert len(any_pii_store.get([r.event_id for r in rows])) == 4
    assert any_pii_store.purge_orphans(existing, older_than=0) == 2

    assert set(any_pii_store.get([r.event_id for r in rows])) == stored
    assert sorted(set(asked)) == sorted(r.event_id for r in rows)


def test_a_standalone_pii_store_is_not_the_colocated_one(
    standalone_pii_store: PiiStore, pii_store: PiiStore
) -> None:
    row = record("s", email=EMAIL)
    standalone_pii_store.put([row])

    assert pii_store.get([row.event_id]) == {}
    assert standalone_pii_store.get([row.event_id]) == {row.event_id: {"email": EMAIL}}


def test_a_standalone_pii_store_keeps_its_rows_across_store_objects(
    backend: str, standalone_pii_store: PiiStore, open_pii_store: Callable[[], PiiStore]
) -> None:
    require_durable(backend)
    row = record("s", email=EMAIL)
    standalone_pii_store.put([row])
    standalone_pii_store.close()

    other = open_pii_store()

    assert other.get([row.event_id]) == {row.event_id: {"email": EMAIL}}
    assert other.erase_stream("s") == 1

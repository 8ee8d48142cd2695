"""Batches are atomic, and the batches of one append_batches call succeed or fail on their own."""

from __future__ import annotations

import pytest

from flask_shimmie.errors import StreamVersionError
from flask_shimmie.events import NO_STREAM
from flask_shimmie.storage.interface import AppendResult, EventStore
from tests.storage.helpers import append_one, batch, pending, positions


def test_a_batch_whose_check_fails_writes_none_of_its_events(store: EventStore) -> None:
    append_one(store, "s")
    events = [pending("s"), pending("t"), pending("s")]

    with pytest.raises(StreamVersionError):
        store.append(batch(*events, expected={"s": NO_STREAM}))

    assert store.last_sequence_num() == 1
    assert positions(store.read()) == [1]
    assert store.stream_versions(["s", "t"]) == {"s": 1, "t": 0}
    assert store.existing_event_ids([e.event_id for e in events]) == set()
    assert store.count_by_event_name() == {"THING_HAPPENED": 1}
    assert store.count_streams() == 1


def test_append_batches_rejects_only_the_conflicting_batch(store: EventStore) -> None:
    append_one(store, "taken")
    good1 = batch(pending("a"), pending("b"))
    bad = batch(pending("taken"), pending("c"), expected={"taken": NO_STREAM})
    good2 = batch(pending("a"), pending("d"))

    outcomes = store.append_batches([good1, bad, good2])

    assert [type(o) for o in outcomes] == [AppendResult, StreamVersionError, AppendResult]
    first, error, second = outcomes
    assert isinstance(first, AppendResult) and isinstance(second, AppendResult)
    assert isinstance(error, StreamVersionError)
    assert positions(first.events) == [2, 3]
    assert positions(second.events) == [4, 5]
    assert first.created and second.created
    assert error.conflicts == [{"stream_id": "taken", "expected": NO_STREAM, "actual": 1}]
    stored = store.read()
    assert positions(stored) == [1, 2, 3, 4, 5]
    assert [e.event_id for e in stored[1:]] == [e.event_id for e in good1.events + good2.events]
    assert store.existing_event_ids([e.event_id for e in bad.events]) == set()
    assert store.stream_versions(["a", "b", "c", "d", "taken"]) == {
        "a": 2,
        "b": 1,
        "c": 0,
        "d": 1,
        "taken": 1,
    }


def test_append_batches_checks_each_batch_against_the_batches_before_it(store: EventStore) -> None:
    create = batch(pending("s", "CREATED"), expected={"s": NO_STREAM})
    update = batch(pending("s", "UPDATED"), expected={"s": 1})
    create_again = batch(pending("s", "CREATED"), expected={"s": NO_STREAM})
    stale = batch(pending("s", "UPDATED"), expected={"s": 1})

    outcomes = store.append_batches([create, update, create_again, stale])

    assert [type(o) for o in outcomes] == [AppendResult, AppendResult, StreamVersionError, StreamVersionError]
    assert [(e.stream_id, e.stream_version, e.event_name) for e in store.read()] == [
        ("s", 1, "CREATED"),
        ("s", 2, "UPDATED"),
    ]
    conflicts = [o.conflicts for o in outcomes if isinstance(o, StreamVersionError)]
    assert conflicts == [
        [{"stream_id": "s", "expected": NO_STREAM, "actual": 2}],
        [{"stream_id": "s", "expected": 1, "actual": 2}],
    ]


def test_append_batches_with_every_batch_rejected_writes_nothing(store: EventStore) -> None:
    append_one(store, "s")

    outcomes = store.append_batches(
        [batch(pending("s"), expected={"s": NO_STREAM}), batch(pending("t"), expected={"t": 5})]
    )

    assert all(isinstance(o, StreamVersionError) for o in outcomes)
    assert store.last_sequence_num() == 1
    assert positions(store.read()) == [1]


def test_append_raises_the_error_that_rejects_the_batch(store: EventStore) -> None:
    with pytest.raises(StreamVersionError) as caught:
        store.append(batch(pending("s"), expected={"s": 4}))

    assert caught.value.conflicts == [{"stream_id": "s", "expected": 4, "actual": 0}]
    assert store.read() == []

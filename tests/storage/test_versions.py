"""Expected-version checks: ANY, NO_STREAM, STREAM_EXISTS and ints, on one stream or several."""

from __future__ import annotations

import pytest

from flask_shimmie.errors import StreamVersionError
from flask_shimmie.events import ANY, NO_STREAM, STREAM_EXISTS, Expected
from flask_shimmie.storage.interface import EventStore
from tests.storage.helpers import append_one, batch, pending, positions

CASES = [
    # (events already on the stream, expected, accepted)
    (0, ANY, True),
    (2, ANY, True),
    (0, NO_STREAM, True),
    (2, NO_STREAM, False),
    (0, STREAM_EXISTS, False),
    (1, STREAM_EXISTS, True),
    (2, STREAM_EXISTS, True),
    (0, 0, True),
    (2, 2, True),
    (2, 1, False),
    (2, 3, False),
    (2, 0, False),
    (0, 1, False),
]


@pytest.mark.parametrize(("existing", "expected", "accepted"), CASES)
def test_expected_version_semantics(
    store: EventStore, existing: int, expected: Expected, accepted: bool
) -> None:
    for _ in range(existing):
        append_one(store, "s")
    event = pending("s")

    if accepted:
        (stored,) = store.append(batch(event, expected={"s": expected})).events
        assert stored.stream_version == existing + 1
        assert store.stream_versions(["s"]) == {"s": existing + 1}
    else:
        with pytest.raises(StreamVersionError) as caught:
            store.append(batch(event, expected={"s": expected}))
        assert caught.value.conflicts == [{"stream_id": "s", "expected": expected, "actual": existing}]
        assert store.stream_versions(["s"]) == {"s": existing}
        assert store.existing_event_ids([event.event_id]) == set()
    assert store.last_sequence_num() == existing + (1 if accepted else 0)


def test_conflicts_list_every_mismatched_stream_with_expected_and_actual(store: EventStore) -> None:
    append_one(store, "one")
    append_one(store, "two")
    append_one(store, "two")

    with pytest.raises(StreamVersionError) as caught:
        store.append(
            batch(
                pending("one"),
                pending("two"),
                expected={"one": 1, "two": 1, "three": STREAM_EXISTS, "four": NO_STREAM},
            )
        )

    conflicts = sorted(caught.value.conflicts, key=lambda c: c["stream_id"])
    assert conflicts == [
        {"stream_id": "three", "expected": STREAM_EXISTS, "actual": 0},
        {"stream_id": "two", "expected": 1, "actual": 2},
    ]
    assert store.last_sequence_num() == 3


def test_a_multi_stream_check_passes_only_when_every_stream_matches(store: EventStore) -> None:
    append_one(store, "song-1")
    append_one(store, "artist-9")
    append_one(store, "artist-9")

    result = store.append(
        batch(
            pending("song-1"), pending("artist-9"), expected={"song-1": 1, "artist-9": 2, "album": NO_STREAM}
        )
    )

    assert [(e.stream_id, e.stream_version) for e in result.events] == [("song-1", 2), ("artist-9", 3)]


def test_expected_may_name_a_stream_the_batch_does_not_write(store: EventStore) -> None:
    append_one(store, "parent")

    with pytest.raises(StreamVersionError) as caught:
        store.append(batch(pending("child"), expected={"parent": 2}))
    assert caught.value.conflicts == [{"stream_id": "parent", "expected": 2, "actual": 1}]
    assert store.stream_versions(["child"]) == {"child": 0}

    (child,) = store.append(batch(pending("child"), expected={"parent": 1})).events
    assert (child.stream_id, child.stream_version, child.sequence_num) == ("child", 1, 2)
    assert store.stream_versions(["parent", "child"]) == {"parent": 1, "child": 1}


def test_streams_not_named_in_expected_are_not_checked(store: EventStore) -> None:
    append_one(store, "s")
    append_one(store, "other")

    result = store.append(batch(pending("s"), pending("other"), expected={"s": 1}))

    assert [e.stream_version for e in result.events] == [2, 2]


def test_a_batch_with_several_events_on_one_stream_is_checked_against_the_version_before_it(
    store: EventStore,
) -> None:
    append_one(store, "s")

    with pytest.raises(StreamVersionError):
        store.append(batch(pending("s"), pending("s"), pending("s"), expected={"s": 3}))
    result = store.append(batch(pending("s"), pending("s"), pending("s"), expected={"s": 1}))

    assert [e.stream_version for e in result.events] == [2, 3, 4]
    assert positions(result.events) == [2, 3, 4]
    with pytest.raises(StreamVersionError):
        store.append(batch(pending("new"), pending("new"), expected={"new": 1}))
    result = store.append(batch(pending("new"), pending("new"), expected={"new": NO_STREAM}))
    assert [e.stream_version for e in result.events] == [1, 2]


def test_a_conflict_on_an_unknown_stream_reports_actual_zero(store: EventStore) -> None:
    with pytest.raises(StreamVersionError) as caught:
        store.append(batch(pending("ghost"), expected={"ghost": STREAM_EXISTS}))

    assert caught.value.conflicts == [{"stream_id": "ghost", "expected": STREAM_EXISTS, "actual": 0}]
    assert store.read() == []


@pytest.mark.parametrize("expected", [2**31, 2**63, 2**70, -1])
def test_a_version_no_stream_can_be_at_is_a_conflict_showing_it(store: EventStore, expected: int) -> None:
    append_one(store, "s")

    with pytest.raises(StreamVersionError) as caught:
        store.append(batch(pending("s"), expected={"s": expected}))

    assert caught.value.conflicts == [{"stream_id": "s", "expected": expected, "actual": 1}]
    assert store.last_sequence_num() == 1

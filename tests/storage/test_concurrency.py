"""Many writers at once, on threads and in other processes: positions stay gap-free, checks stay exact."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from flask_shimmie.errors import StreamVersionError
from flask_shimmie.events import NO_STREAM, Expected
from flask_shimmie.storage.interface import EventStore, PendingEvent
from tests.backends import require_durable
from tests.storage.helpers import batch, new_event_id, pending, positions, run_in_threads, versions_by_stream
from tests.storage.workers import CONTEXT, Workers

THREADS = 8
APPENDS_PER_THREAD = 100
HOT_STREAMS = ["hot-0", "hot-1", "hot-2"]


@dataclass
class Outcomes:
    """What one writer thread saw."""

    stored: list[tuple[PendingEvent, int, int]] = field(default_factory=list)  # event, position, version
    rejected: list[tuple[PendingEvent, Expected, list[dict[str, object]]]] = field(default_factory=list)


def mixed_writer(store: EventStore, thread: int) -> Outcomes:
    """Unchecked appends, NO_STREAM claims every thread races for, and int checks on hot streams."""
    outcomes = Outcomes()
    for index in range(APPENDS_PER_THREAD):
        kind = index % 4
        expected: Expected | None
        if kind == 0:
            event, expected = pending(f"own-{thread}", data={"t": thread, "i": index}), None
        elif kind == 1:
            event, expected = pending(HOT_STREAMS[index % 3], data={"t": thread, "i": index}), None
        elif kind == 2:
            # every thread tries to create claim-<index>: exactly one may win
            event, expected = pending(f"claim-{index}", data={"t": thread}), NO_STREAM
        else:
            stream_id = HOT_STREAMS[(index + thread) % 3]
            expected = store.stream_versions([stream_id])[stream_id]
            event = pending(stream_id, data={"t": thread, "i": index})
        try:
            (stored,) = store.append(
                batch(event, expected={} if expected is None else {event.stream_id: expected})
            ).events
        except StreamVersionError as error:
            assert expected is not None
            outcomes.rejected.append((event, expected, error.conflicts))
        else:
            outcomes.stored.append((event, stored.sequence_num, stored.stream_version))
            if isinstance(expected, int):
                assert stored.stream_version == expected + 1
    return outcomes


def test_concurrent_appends_from_threads_keep_positions_gap_free_and_checks_exact(store: EventStore) -> None:
    results = run_in_threads(lambda thread: mixed_writer(store, thread), THREADS)

    stored = [item for outcome in results for item in outcome.stored]
    rejected = [item for outcome in results for item in outcome.rejected]
    events = store.read()
    by_id = {e.event_id: e for e in events}

    assert len(stored) + len(rejected) == THREADS * APPENDS_PER_THREAD
    assert positions(events) == list(range(1, len(stored) + 1))
    assert store.last_sequence_num() == len(stored)
    assert len(by_id) == len(events)
    for event, position, version in stored:
        assert by_id[event.event_id].sequence_num == position
        assert by_id[event.event_id].stream_version == version
        assert by_id[event.event_id].data == event.data
    for event, expected, conflicts in rejected:
        assert event.event_id not in by_id
        assert len(conflicts) == 1 and conflicts[0]["stream_id"] == event.stream_id
        assert conflicts[0]["expected"] == expected
        if expected is NO_STREAM:
            assert conflicts[0]["actual"] >= 1
        else:
            assert conflicts[0]["actual"] != expected
    for stream_id, versions in versions_by_stream(events).items():
        assert versions == list(range(1, len(versions) + 1)), stream_id
    claims = Counter(e.stream_id for e in events if e.stream_id.startswith("claim-"))
    assert claims == {f"claim-{i}": 1 for i in range(2, APPENDS_PER_THREAD, 4)}
    assert store.stream_versions([f"own-{t}" for t in range(THREADS)]) == {
        f"own-{t}": APPENDS_PER_THREAD // 4 for t in range(THREADS)
    }


def test_checked_writes_racing_on_one_stream_use_each_version_exactly_once(store: EventStore) -> None:
    attempts = 25

    def writer(thread: int) -> list[int]:
        won: list[int] = []
        for _ in range(attempts):
            version = store.stream_versions(["race"])["race"]
            try:
                (event,) = store.append(
                    batch(pending("race", data={"t": thread}), expected={"race": version})
                ).events
            except StreamVersionError as error:
                assert error.conflicts[0]["actual"] > version
            else:
                assert event.stream_version == version + 1
                won.append(event.stream_version)
        return won

    results = run_in_threads(writer, THREADS)

    won = sorted(v for versions in results for v in versions)
    assert won == list(range(1, len(won) + 1))
    assert [e.stream_version for e in store.read(stream_ids=["race"])] == won
    assert store.last_sequence_num() == len(won)
    assert len(won) >= attempts  # at least one writer wins each round


def test_concurrent_append_batches_calls_from_threads_stay_atomic(store: EventStore) -> None:
    def writer(thread: int) -> int:
        written = 0
        for index in range(20):
            batches = [batch(*(pending(f"b-{thread}-{index}") for _ in range(3))), batch(pending("shared"))]
            for outcome in store.append_batches(batches):
                assert not isinstance(outcome, Exception), outcome
                written += len(outcome.events)
        return written

    total = sum(run_in_threads(writer, 4))

    events = store.read()
    assert positions(events) == list(range(1, total + 1))
    # the three events of a batch are adjacent
    for stream_id, versions in versions_by_stream(events).items():
        if stream_id.startswith("b-"):
            found = [e.sequence_num for e in events if e.stream_id == stream_id]
            assert found == [found[0], found[0] + 1, found[0] + 2] and versions == [1, 2, 3]
    assert store.stream_versions(["shared"]) == {"shared": 80}


def test_processes_opening_an_empty_database_at_once_can_all_append(
    backend: str, store_url: str, open_store: Callable[[], EventStore]
) -> None:
    require_durable(backend)
    workers = Workers()
    start = CONTEXT.Barrier(3)
    ids = [[new_event_id() for _ in range(4)] for _ in range(3)]
    for worker in range(3):
        workers.start("open_and_append", store_url, f"p{worker}", ids[worker], start, True)

    workers.wait()

    store = open_store()
    assert positions(store.read()) == list(range(1, 13))
    assert store.existing_event_ids([i for chunk in ids for i in chunk]) == {
        i for chunk in ids for i in chunk
    }


def test_processes_appending_at_once_keep_positions_gap_free(
    backend: str, store_url: str, store: EventStore
) -> None:
    require_durable(backend)
    workers = Workers()
    start = CONTEXT.Barrier(3)
    ids = [[new_event_id() for _ in range(100)] for _ in range(3)]
    for worker in range(3):
        workers.start("open_and_append", store_url, f"p{worker}", ids[worker], start, False)

    reported = sorted(p for result in workers.wait() for p in result)

    events = store.read()
    assert positions(events) == list(range(1, 301))
    assert reported == list(range(1, 301))
    assert sorted(e.event_id for e in events) == sorted(i for chunk in ids for i in chunk)
    versions = versions_by_stream(events)
    assert versions["shared"] == list(range(1, 151))
    for worker in range(3):
        assert versions[f"p{worker}"] == list(range(1, 51))

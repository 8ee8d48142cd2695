"""Following the store: a reader never skips a position, and wait_for_events wakes up promptly."""

from __future__ import annotations

import threading
import time

import pytest

from flask_shimmie.storage.interface import EventStore
from tests.backends import require_durable
from tests.storage.helpers import append_one, batch, new_event_id, pending, run_in_threads
from tests.storage.workers import CONTEXT, Workers

WRITER_THREADS = 3
APPENDS_PER_WRITER = 60


def tail(store: EventStore, until: int, stop: threading.Event, limit: int | None) -> list[int]:
    """Follow the store with read(after=last_seen) until position ``until``; return what was seen."""
    seen: list[int] = []
    last = 0
    deadline = time.monotonic() + 60
    while last < until and time.monotonic() < deadline and not stop.is_set():
        for event in store.read(after=last, limit=limit):
            # a skipped, repeated or out-of-order position shows up in the comparison the test makes
            seen.append(event.sequence_num)
            last = max(last, event.sequence_num)
    return seen


def thread_writer(store: EventStore, thread: int) -> int:
    written = 0
    for index in range(APPENDS_PER_WRITER):
        if index % 5 == 4:
            written += len(store.append(batch(pending(f"w{thread}"), pending("shared"))).events)
        else:
            written += len(store.append(batch(pending(f"w{thread}"))).events)
    return written


@pytest.mark.parametrize("limit", [None, 3])
def test_a_tailing_reader_sees_every_position_once_in_order_while_threads_write(
    store: EventStore, limit: int | None
) -> None:
    total = WRITER_THREADS * (APPENDS_PER_WRITER + APPENDS_PER_WRITER // 5)
    stop = threading.Event()
    seen: list[list[int]] = []

    def role(index: int) -> int:
        if index == WRITER_THREADS:
            try:
                seen.append(tail(store, total, stop, limit))
            finally:
                stop.set()
            return 0
        try:
            return thread_writer(store, index)
        except BaseException:
            stop.set()
            raise

    written = sum(run_in_threads(role, WRITER_THREADS + 1))

    assert written == total
    assert seen == [list(range(1, total + 1))]


def test_a_tailing_reader_sees_every_position_once_in_order_while_processes_and_threads_write(
    backend: str, store_url: str, store: EventStore
) -> None:
    require_durable(backend)
    workers = Workers()
    start = CONTEXT.Barrier(3)
    for worker in range(2):
        workers.start(
            "open_and_append", store_url, f"p{worker}", [new_event_id() for _ in range(80)], start, False
        )
    total = 2 * 80 + 2 * (APPENDS_PER_WRITER + APPENDS_PER_WRITER // 5)
    stop = threading.Event()
    seen: list[int] = []

    def reader() -> None:
        try:
            seen.extend(tail(store, total, stop, None))
        finally:
            stop.set()

    reading = threading.Thread(target=reader, daemon=True)
    reading.start()
    start.wait(30)  # the processes have opened their stores
    try:
        run_in_threads(lambda index: thread_writer(store, index), 2)
        workers.wait()
    except BaseException:
        stop.set()
        workers.kill()
        raise
    finally:
        reading.join(60)

    assert seen == list(range(1, total + 1))


def test_a_reader_never_sees_half_a_batch(store: EventStore) -> None:
    batches_per_writer = 40
    total = 2 * batches_per_writer * 3
    stop = threading.Event()
    torn: list[list[tuple[str, int]]] = []

    def role(index: int) -> int:
        if index == 2:
            last = 0
            deadline = time.monotonic() + 60
            try:
                while last < total and time.monotonic() < deadline and not stop.is_set():
                    page = store.read(after=last)
                    if page:
                        if page[-1].stream_version != 3:  # every batch is three events on a new stream
                            torn.append([(e.stream_id, e.stream_version) for e in page[-3:]])
                        last = page[-1].sequence_num
            finally:
                stop.set()
            return 0
        for number in range(batches_per_writer):
            store.append(batch(*(pending(f"b-{index}-{number}") for _ in range(3))))
        return 3 * batches_per_writer

    assert sum(run_in_threads(role, 3)) == total
    assert torn == []


def test_wait_for_events_returns_at_once_when_events_are_already_past(store: EventStore) -> None:
    append_one(store, "s")
    append_one(store, "s")

    started = time.monotonic()
    assert store.wait_for_events(0, timeout=5) == 2
    assert store.wait_for_events(1, timeout=5) == 2
    assert time.monotonic() - started < 1


def test_wait_for_events_returns_promptly_after_a_write_by_another_thread(store: EventStore) -> None:
    append_one(store, "s")
    writer = threading.Timer(0.3, lambda: append_one(store, "s"))

    writer.start()
    started = time.monotonic()
    position = store.wait_for_events(1, timeout=10)
    elapsed = time.monotonic() - started
    writer.join()

    assert position == 2
    assert elapsed < 2, f"woke up {elapsed:.2f}s after waiting (the write came at 0.3s)"


@pytest.mark.parametrize("others_only", [False, True], ids=["any-writer", "others-only"])
def test_wait_for_events_returns_promptly_after_a_write_by_another_process(
    backend: str, store_url: str, store: EventStore, others_only: bool
) -> None:
    require_durable(backend)
    append_one(store, "s")
    workers = Workers()
    ready, go = CONTEXT.Event(), CONTEXT.Event()
    workers.start("append_when_told", store_url, "s", new_event_id(), ready, go)
    workers.wait_for(ready, "the writer process did not open its store")

    go.set()
    position = store.wait_for_events(1, timeout=10, others_only=others_only)
    woke = time.time()
    (written,) = workers.wait()

    assert position == 2
    assert woke - written < 2, f"woke up {woke - written:.2f}s after the other process wrote"


def test_wait_for_events_times_out_when_nothing_happens(store: EventStore) -> None:
    append_one(store, "s")

    started = time.monotonic()
    position = store.wait_for_events(1, timeout=0.5)
    elapsed = time.monotonic() - started

    assert position == 1
    assert 0.4 <= elapsed < 2, elapsed
    started = time.monotonic()
    assert store.wait_for_events(0, timeout=0) == 1
    assert store.wait_for_events(5, timeout=0.1) <= 5
    assert time.monotonic() - started < 1.5


def test_a_wait_for_others_is_not_woken_by_this_store_s_own_writes(store: EventStore) -> None:
    append_one(store, "s")
    writer = threading.Timer(0.1, lambda: append_one(store, "s"))

    writer.start()
    started = time.monotonic()
    position = store.wait_for_events(1, timeout=0.8, others_only=True)
    elapsed = time.monotonic() - started
    writer.join()

    # The writer hands its own events over; the follower's wait runs to its end.
    assert elapsed >= 0.7, f"woken after {elapsed:.2f}s by a write of this store object"
    assert position == 2
    assert store.wait_for_events(1, timeout=5) == 2

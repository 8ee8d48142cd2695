"""lock_stream: a pessimistic lock per stream, with a timeout, across threads and processes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from flask_shimmie.errors import ObjectLockedError
from flask_shimmie.storage.interface import EventStore
from tests.backends import require_durable
from tests.storage.helpers import append_one, run_in_threads
from tests.storage.workers import CONTEXT, Workers


def try_lock_in_thread(
    store: EventStore, stream_id: str, timeout: float
) -> tuple[BaseException | None, float]:
    """Try the lock from another thread; return its error (None when obtained) and how long it took."""
    outcome: list[tuple[BaseException | None, float]] = []

    def attempt() -> None:
        started = time.monotonic()
        try:
            with store.lock_stream(stream_id, timeout):
                pass
        except BaseException as error:  # reported to the test
            outcome.append((error, time.monotonic() - started))
        else:
            outcome.append((None, time.monotonic() - started))

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout + 10)
    assert outcome, "the locking thread hung"
    return outcome[0]


def test_a_second_holder_waits_then_times_out_with_object_locked_error(store: EventStore) -> None:
    with store.lock_stream("s", 5):
        error, waited = try_lock_in_thread(store, "s", 0.5)

    assert isinstance(error, ObjectLockedError), error
    assert error.stream_id == "s"
    assert 0.4 <= waited < 3, waited


def test_a_waiting_holder_gets_the_lock_once_it_is_released(store: EventStore) -> None:
    released = threading.Event()

    def holder() -> None:
        with store.lock_stream("s", 5):
            held.set()
            time.sleep(0.3)
            released.set()

    held = threading.Event()
    thread = threading.Thread(target=holder, daemon=True)
    thread.start()
    assert held.wait(5)
    started = time.monotonic()
    with store.lock_stream("s", 5):
        assert released.is_set()
        waited = time.monotonic() - started
    thread.join(5)

    assert 0.1 <= waited < 2, waited


def test_the_lock_is_released_after_the_with_block(store: EventStore) -> None:
    with store.lock_stream("s", 5):
        pass
    assert try_lock_in_thread(store, "s", 1)[0] is None

    with pytest.raises(RuntimeError), store.lock_stream("s", 5):
        raise RuntimeError("boom")
    error, waited = try_lock_in_thread(store, "s", 1)
    assert error is None and waited < 1


def test_a_lock_on_another_stream_is_independent(store: EventStore) -> None:
    with store.lock_stream("a", 5):
        error, waited = try_lock_in_thread(store, "b", 1)

    assert error is None
    assert waited < 1.5, waited


def test_a_lock_does_not_block_appends_to_its_stream(store: EventStore) -> None:
    with store.lock_stream("s", 5):
        writer = threading.Thread(target=append_one, args=(store, "s"), daemon=True)
        writer.start()
        writer.join(5)
        assert not writer.is_alive(), "an append waited for lock_stream"

    assert store.stream_versions(["s"]) == {"s": 1}


def test_threads_holding_the_lock_run_one_at_a_time(store: EventStore) -> None:
    counter = {"value": 0, "inside": 0, "most_inside": 0}

    def increment(_thread: int) -> None:
        for _ in range(5):
            with store.lock_stream("counter", 10):
                counter["inside"] += 1
                counter["most_inside"] = max(counter["most_inside"], counter["inside"])
                value = counter["value"]
                time.sleep(0.005)
                counter["value"] = value + 1
                counter["inside"] -= 1

    run_in_threads(increment, 4)

    assert counter["value"] == 20
    assert counter["most_inside"] == 1


def test_two_store_objects_in_one_process_exclude_each_other(
    backend: str, store: EventStore, open_store: Callable[[], EventStore]
) -> None:
    require_durable(backend)
    other = open_store()

    with store.lock_stream("s", 5):
        error, _waited = try_lock_in_thread(other, "s", 0.3)
        assert isinstance(error, ObjectLockedError), error
        assert try_lock_in_thread(other, "t", 1)[0] is None

    assert try_lock_in_thread(other, "s", 1)[0] is None


def test_a_holder_in_another_process_blocks_this_one(
    backend: str, store_url: str, open_store: Callable[[], EventStore]
) -> None:
    require_durable(backend)
    store = open_store()
    workers = Workers()
    held, release = CONTEXT.Event(), CONTEXT.Event()
    workers.start("hold_lock", store_url, "s", held, release)
    try:
        workers.wait_for(held, "the other process did not take the lock")
        with pytest.raises(ObjectLockedError), store.lock_stream("s", 0.5):
            pass
        with store.lock_stream("other", 1):
            pass
    finally:
        release.set()
    assert workers.wait() == [True]

    started = time.monotonic()
    with store.lock_stream("s", 5):
        pass
    assert time.monotonic() - started < 2

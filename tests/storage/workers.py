"""Code that runs in other processes (spawned), so it lives at module level in an importable module.

:func:`spawn` starts ``workers.<name>(*args)`` in a new process and :func:`Workers.results` collects
what each returned, or raises with the worker's traceback.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import time
import traceback
from multiprocessing.context import SpawnProcess
from multiprocessing.synchronize import Barrier, Event
from typing import Any

from flask_shimmie.storage import event_store_from_url
from flask_shimmie.storage.interface import EventStore, Lease
from tests.storage.helpers import batch, pending

CONTEXT = multiprocessing.get_context("spawn")


def _open(url: str) -> EventStore:
    store = event_store_from_url(url)
    store.open()
    return store


def _main(results: Any, name: str, args: tuple[Any, ...]) -> None:
    try:
        value = globals()[name](*args)
    except BaseException:
        results.put((os.getpid(), False, traceback.format_exc()))
    else:
        results.put((os.getpid(), True, value))


class Workers:
    """Processes started together, each reporting one result."""

    def __init__(self) -> None:
        self.results: Any = CONTEXT.Queue()
        self.processes: list[SpawnProcess] = []

    def start(self, name: str, *args: Any) -> None:
        """Run ``name(*args)`` (a function of this module) in a new process."""
        process = CONTEXT.Process(target=_main, args=(self.results, name, args), daemon=True)
        process.start()
        self.processes.append(process)

    def wait(self, timeout: float = 60.0) -> list[Any]:
        """Each worker's return value (in the order they finished); raise if one failed or hung."""
        deadline = time.monotonic() + timeout
        values: list[Any] = []
        failures: list[str] = []
        for _ in self.processes:
            try:
                _pid, ok, value = self.results.get(timeout=max(deadline - time.monotonic(), 0.1))
            except queue.Empty:
                self.kill()
                raise AssertionError(f"a worker process did not finish within {timeout}s") from None
            if ok:
                values.append(value)
            else:
                failures.append(value)
        for process in self.processes:
            process.join(max(deadline - time.monotonic(), 1))
        self.kill()
        if failures:
            raise AssertionError("a worker process failed:\n" + "\n".join(failures))
        return values

    def wait_for(self, event: Event, what: str, timeout: float = 30.0) -> None:
        """Wait until a worker sets ``event``; fail with the worker's traceback if it died first."""
        deadline = time.monotonic() + timeout
        while not event.wait(0.05):
            dead = [p for p in self.processes if not p.is_alive()]
            if dead or time.monotonic() > deadline:
                try:
                    _pid, _ok, value = self.results.get(timeout=1)
                except queue.Empty:
                    value = f"exit code {dead[0].exitcode}" if dead else f"nothing after {timeout}s"
                self.kill()
                raise AssertionError(f"{what}:\n{value}")

    def kill(self) -> None:
        """Stop the workers still running (after a failure)."""
        for process in self.processes:
            if process.is_alive():
                process.kill()
                process.join(5)


# --- worker functions (run in the spawned processes) -------------------------------------


def open_and_append(
    url: str, stream_id: str, event_ids: list[str], start: Barrier | None, open_at_once: bool
) -> list[int]:
    """Open a store (after ``start`` when ``open_at_once``), append one event per id; return positions.

    Every other event goes to the shared stream ``"shared"`` unchecked; the rest to ``stream_id``,
    checked against its previous version.
    """
    if open_at_once and start is not None:
        start.wait(30)
    store = _open(url)
    try:
        if not open_at_once and start is not None:
            start.wait(30)
        positions: list[int] = []
        own_version = 0
        for index, event_id in enumerate(event_ids):
            if index % 2:
                target = batch(pending("shared", "SHARED_THING", {"i": index}, event_id=event_id))
            else:
                target = batch(
                    pending(stream_id, "OWN_THING", {"i": index}, event_id=event_id),
                    expected={stream_id: own_version},
                )
                own_version += 1
            (event,) = store.append(target).events
            positions.append(event.sequence_num)
        return positions
    finally:
        store.close()


def append_when_told(url: str, stream_id: str, event_id: str, ready: Event, go: Event) -> float:
    """Open a store, say ready, wait for go, append one event; return the wall-clock time it committed."""
    store = _open(url)
    try:
        ready.set()
        if not go.wait(30):
            raise TimeoutError("never told to go")
        store.append(batch(pending(stream_id, event_id=event_id)))
        return time.time()
    finally:
        store.close()


def hold_lock(url: str, stream_id: str, held: Event, release: Event) -> bool:
    """Take ``lock_stream(stream_id)``, say held, keep it until told to release."""
    store = _open(url)
    try:
        with store.lock_stream(stream_id, 10):
            held.set()
            if not release.wait(30):
                raise TimeoutError("never told to release")
        return True
    finally:
        store.close()


def hold_sqlite_writer_gate(lock_path: str, held: Event, release: Event) -> bool:
    """Take the SQLite store's writer gate (its byte of the lock file), say held, keep it until told."""
    import fcntl

    from flask_shimmie.storage.sqlite.locks import WRITER_GATE_OFFSET

    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX, 1, WRITER_GATE_OFFSET)
        held.set()
        if not release.wait(30):
            raise TimeoutError("never told to release")
        return True
    finally:
        os.close(fd)


def try_subscription_lease(url: str, name: str, runner: str, tried: Barrier, release: Event) -> bool:
    """Try ``name``'s lease when the others do (``tried`` passes once all did); hold it until told."""
    store = _open(url)
    try:
        subscriptions = store.subscription_store()
        tried.wait(30)
        lease = subscriptions.try_lease(name, runner)
        tried.wait(30)
        if lease is not None:
            if not release.wait(30):
                raise TimeoutError("never told to release")
            lease.release()
        return lease is not None
    finally:
        store.close()


def hold_subscription_until_killed(url: str, name: str, runner: str, held: Event) -> None:
    """Take ``name``'s lease, say held, and keep it until the process is killed."""
    store = _open(url)
    lease = _take(store, name, runner)
    held.set()
    time.sleep(120)
    raise TimeoutError(f"{lease.name} was held for 120 s without being killed")


def take_over_subscription(url: str, name: str, runner: str, taken: Event, done: Event) -> bool:
    """Take ``name``'s lease as soon as it is free, say taken, hold it until told it is done."""
    store = _open(url)
    try:
        lease = _take(store, name, runner)
        taken.set()
        if not done.wait(30):
            raise TimeoutError("never told it is done")
        lease.release()
        return True
    finally:
        store.close()


def _take(store: EventStore, name: str, runner: str, timeout: float = 20.0) -> Lease:
    deadline = time.monotonic() + timeout
    while True:
        lease = store.subscription_store().try_lease(name, runner)
        if lease is not None:
            return lease
        if time.monotonic() > deadline:
            raise TimeoutError(f"the lease of {name} was not free within {timeout}s")
        time.sleep(0.01)

"""Thread primitives the engines share: per-stream locks and the position signal."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import ObjectLockedError


class StreamLocks:
    """Per-stream locks for the threads of one process, with a timeout."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, stream_id: str, timeout: float) -> Iterator[None]:
        """Hold ``stream_id``'s lock; raise :class:`ObjectLockedError` after ``timeout``."""
        with self._guard:
            lock, users = self._locks.get(stream_id, (threading.Lock(), 0))
            self._locks[stream_id] = (lock, users + 1)
        try:
            if not lock.acquire(timeout=max(timeout, 0)):
                raise ObjectLockedError(stream_id, timeout)
            try:
                yield
            finally:
                lock.release()
        finally:
            with self._guard:
                lock, users = self._locks[stream_id]
                if users == 1:
                    del self._locks[stream_id]
                else:
                    self._locks[stream_id] = (lock, users - 1)


class PositionSignal:
    """Wakes threads waiting for the store to move past a position (one process).

    Positions come from this process's own commits (``local``) or from news
    of other writers (a notification, a poll). A waiter that only cares about
    other writers, such as the follower, is not woken by local commits: their
    writers hand those events to the models themselves, and waking another
    thread at every commit costs more than the commit's own work.
    """

    def __init__(self) -> None:
        lock = threading.Lock()
        self._any = threading.Condition(lock)
        self._others = threading.Condition(lock)
        #: How many threads wait on each condition (notify only when someone does).
        self._waiting = {self._any: 0, self._others: 0}
        self.position = 0
        #: The highest position learned from news of other writers.
        self.others_position = 0

    def advance(self, position: int, *, local: bool = False) -> None:
        """Record that the store holds events up to ``position``, and wake waiters."""
        with self._any:
            if position > self.position:
                self.position = position
                if self._waiting[self._any]:
                    self._any.notify_all()
                # News of others is news only past what this process knows.
                if not local:
                    self.others_position = position
                    if self._waiting[self._others]:
                        self._others.notify_all()

    def wait_past(self, after: int, timeout: float, *, others_only: bool = False) -> int:
        """Wait until the position exceeds ``after`` or ``timeout`` passes; return it.

        With ``others_only``, only news of other writers ends the wait early.
        """
        deadline = time.monotonic() + timeout
        condition = self._others if others_only else self._any
        with condition:
            while (self.others_position if others_only else self.position) <= after:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._waiting[condition] += 1
                try:
                    condition.wait(remaining)
                finally:
                    self._waiting[condition] -= 1
            return self.position

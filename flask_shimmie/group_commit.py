"""Group commit: concurrent writers share one transaction and one fsync.

Each writer still gets its own positions and its own version check: the
store plans every batch of the group on its own (see
:class:`~flask_shimmie.storage.planner.AppendPlanner`), and a rejected batch
does not affect the others. Only a failure of the transaction itself fails
the whole group.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from .errors import ShimmieError
from .storage.interface import AppendBatch, AppendResult

#: The most batches one transaction carries.
MAX_GROUP = 256

#: The longest a committing writer waits for the others of its group to arrive.
MAX_GATHER_SECONDS = 0.002

Commit = Callable[[Sequence[AppendBatch]], list[AppendResult | ShimmieError]]


class _Slot:
    __slots__ = ("batch", "done", "lead", "outcome")

    def __init__(self, batch: AppendBatch) -> None:
        self.batch = batch
        #: Made only for a writer that has to wait: the first one commits at once.
        self.done: threading.Event | None = None
        self.lead = False
        self.outcome: AppendResult | BaseException | None = None


class GroupCommitter:
    """Funnels concurrent appends into as few store transactions as possible.

    The first writer to arrive commits at once, unless the last commit
    carried several writers: then it first waits a moment for as many (see
    :meth:`_gather`). Writers arriving while a commit is in flight queue up;
    when it ends, the first of them commits everything queued, in arrival
    order, in one transaction.
    """

    def __init__(
        self, commit: Commit, after_commit: Callable[[Sequence[AppendResult]], None] | None = None
    ) -> None:
        self._commit = commit
        #: Called by the committing thread with the group's successful results,
        #: after it handed the lead on and before it wakes the group's writers.
        self._after_commit = after_commit
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._queue: list[_Slot] = []
        self._busy = False
        #: The size and the duration of the last commit (see :meth:`_gather`).
        self._last_size = 1
        self._last_seconds = 0.0

    def append(self, batch: AppendBatch) -> AppendResult:
        """Append ``batch`` (with the others in flight); raise its error if it was rejected."""
        slot = _Slot(batch)
        with self._lock:
            self._queue.append(slot)
            if not self._busy:
                self._busy = slot.lead = True
            else:
                slot.done = threading.Event()
                self._arrived.notify()
        if slot.done is not None:
            slot.done.wait()
        if slot.lead:
            self._lead()
        outcome = slot.outcome
        if isinstance(outcome, BaseException):
            raise outcome
        assert outcome is not None
        return outcome

    def _lead(self) -> None:
        with self._lock:
            self._gather()
            group, self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]
        started = time.perf_counter()
        try:
            outcomes: Sequence[AppendResult | BaseException] = self._commit([s.batch for s in group])
        except BaseException as error:  # the transaction failed: every batch of it did
            outcomes = [error] * len(group)
        finally:
            self._last_size, self._last_seconds = len(group), time.perf_counter() - started
            with self._lock:
                if self._queue:
                    successor = self._queue[0]
                    successor.lead = True
                    assert successor.done is not None
                    successor.done.set()
                else:
                    self._busy = False
        if self._after_commit is not None:
            self._after_commit([outcome for outcome in outcomes if isinstance(outcome, AppendResult)])
        for slot, outcome in zip(group, outcomes, strict=True):
            slot.outcome = outcome
            if slot.done is not None:
                slot.done.set()

    def _gather(self) -> None:
        """Let the writers of the last group join this one before it commits (lock held).

        Writers woken by a commit come back at about the same time; the
        first to arrive would otherwise commit alone and the others queue
        behind it, so every other transaction carried one write. When the
        last commit carried several, the leader waits for as many to queue,
        at most a quarter of that commit's duration. A lone writer never waits.
        """
        wanted = min(self._last_size, MAX_GROUP)
        if wanted <= 1 or len(self._queue) >= wanted:
            return
        deadline = time.perf_counter() + min(self._last_seconds / 4, MAX_GATHER_SECONDS)
        while len(self._queue) < wanted:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._arrived.wait(remaining)

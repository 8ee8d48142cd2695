"""Group commit: concurrent writers share one transaction and one fsync.

Each writer still gets its own positions and its own version check: the
store plans every batch of the group on its own (see
:class:`~flask_shimmie.stores.base.AppendPlanner`), and a rejected batch
does not affect the others. Only a failure of the transaction itself fails
the whole group.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from .errors import ShimmieError
from .stores.base import AppendBatch, AppendResult

#: The most batches one transaction carries.
MAX_GROUP = 256

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

    The first writer to arrive commits at once. Writers arriving while a
    commit is in flight queue up; when it ends, the first of them commits
    everything queued, in arrival order, in one transaction.
    """

    def __init__(
        self, commit: Commit, after_commit: Callable[[Sequence[AppendResult]], None] | None = None
    ) -> None:
        self._commit = commit
        #: Called by the committing thread with the group's successful results,
        #: after it handed the lead on and before it wakes the group's writers.
        self._after_commit = after_commit
        self._lock = threading.Lock()
        self._queue: list[_Slot] = []
        self._busy = False

    def append(self, batch: AppendBatch) -> AppendResult:
        """Append ``batch`` (with the others in flight); raise its error if it was rejected."""
        slot = _Slot(batch)
        with self._lock:
            self._queue.append(slot)
            if not self._busy:
                self._busy = slot.lead = True
            else:
                slot.done = threading.Event()
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
            group, self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]
        try:
            outcomes: Sequence[AppendResult | BaseException] = self._commit([s.batch for s in group])
        except BaseException as error:  # the transaction failed: every batch of it did
            outcomes = [error] * len(group)
        finally:
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

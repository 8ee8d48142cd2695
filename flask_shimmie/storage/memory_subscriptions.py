"""The memory engine's subscription store: rows in dicts, leases per store object, projections in SQLite.

Development only. Nothing outlives the process, and a forked child starts
with no subscriptions at all (it holds none of its parent's leases). A
projection writes to a per-process in-memory SQLite database, one connection
guarded by a lock: ``tx.db`` is that connection inside a transaction, and
:meth:`MemorySubscriptionStore.projection_reader` the same connection.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..errors import ShimmieError
from .interface import (
    Lease,
    ParkedEvent,
    ProjectionTransaction,
    SubscriptionInfo,
    SubscriptionNotFoundError,
    SubscriptionStore,
)
from .planner import utc_now
from .process import ProcessLocal
from .subscriptions import PendingPosition, ProcessLease, check_kind, check_state, registered, stored_error

if TYPE_CHECKING:
    import sqlite3

# In-memory databases inherited over fork(): never used, and never closed or
# collected in the child (SQLite forbids touching them there).
_ABANDONED: list[Any] = []


class _ProcessState:
    """One process's subscriptions of one store object."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rows: dict[str, SubscriptionInfo] = {}
        #: subscription -> event_id -> parked event
        self.parked: dict[str, dict[str, ParkedEvent]] = {}
        self.leases: dict[str, _MemoryLease] = {}
        # Reentrant, so that a read inside a projection's transaction (same thread) does not wait for itself.
        self.projection_lock = threading.RLock()
        self.projection_connection: sqlite3.Connection | None = None

    def projection_db(self) -> sqlite3.Connection:
        """The projections' database, opened on first use; the caller holds :attr:`projection_lock`."""
        if self.projection_connection is None:
            import sqlite3

            self.projection_connection = sqlite3.connect(
                ":memory:", check_same_thread=False, isolation_level=None
            )
        return self.projection_connection

    def abandon(self) -> None:
        if self.projection_connection is not None:
            _ABANDONED.append(self.projection_connection)


class _MemoryLease(ProcessLease):
    def __init__(self, store: MemorySubscriptionStore, state: _ProcessState, name: str, runner: str) -> None:
        super().__init__(name, runner)
        self.store = store
        self.state = state

    def _still_held(self) -> bool:
        state = self.state
        with state.lock:
            row = state.rows.get(self.name)
            return state.leases.get(self.name) is self and row is not None and row.runner == self.runner

    def _let_go(self) -> None:
        state = self.state
        with state.lock:
            if state.leases.get(self.name) is self:
                del state.leases[self.name]
            row = state.rows.get(self.name)
            if row is not None and row.runner == self.runner:
                state.rows[self.name] = replace(row, runner=None, updated_at=utc_now())


class MemorySubscriptionStore(SubscriptionStore):
    """Subscriptions of a memory event store, in this process only."""

    def __init__(self) -> None:
        self._process: ProcessLocal[_ProcessState] = ProcessLocal(_ProcessState, _ProcessState.abandon)

    def _own(self, lease: Lease) -> _MemoryLease:
        if not isinstance(lease, _MemoryLease) or lease.store is not self:
            raise ValueError(f"{lease!r} was not taken through this subscription store.")
        lease.check()
        return lease

    @staticmethod
    def _fence(state: _ProcessState, lease: _MemoryLease, changes: dict[str, Any] | None = None) -> None:
        """Apply ``changes`` to the lease's row; the caller holds ``state.lock``."""
        row = state.rows.get(lease.name)
        if row is None or row.runner != lease.runner:
            raise lease.fenced_off()
        state.rows[lease.name] = replace(row, **(changes or {}), updated_at=utc_now())

    @staticmethod
    def _row(state: _ProcessState, name: str) -> SubscriptionInfo:
        row = state.rows.get(name)
        if row is None:
            raise SubscriptionNotFoundError(name)
        return row

    def register(self, name: str, kind: str, *, start_position: int, version: int = 0) -> SubscriptionInfo:
        check_kind(kind)
        state = self._process.get()
        with state.lock:
            info = state.rows.get(name)
            if info is None:
                info = state.rows[name] = SubscriptionInfo(
                    name, kind, start_position, "active", None, None, version, utc_now()
                )
        return registered(info, kind)

    def get(self, name: str) -> SubscriptionInfo | None:
        state = self._process.get()
        with state.lock:
            return state.rows.get(name)

    def all(self) -> list[SubscriptionInfo]:
        state = self._process.get()
        with state.lock:
            return sorted(state.rows.values(), key=lambda info: info.name)

    def try_lease(self, name: str, runner: str) -> Lease | None:
        state = self._process.get()
        with state.lock:
            row = self._row(state, name)
            if name in state.leases:
                return None
            lease = state.leases[name] = _MemoryLease(self, state, name, runner)
            state.rows[name] = replace(row, runner=runner, updated_at=utc_now())
        return lease

    def advance(self, lease: Lease, position: int) -> None:
        held = self._own(lease)
        with held.state.lock:
            self._fence(held.state, held, {"position": position})

    def park(self, lease: Lease, event_id: str, sequence_num: int, error: str, attempts: int) -> None:
        held = self._own(lease)
        state = held.state
        with state.lock:
            position = max(self._row(state, held.name).position, sequence_num)
            self._fence(state, held, {"position": position})
            events = state.parked.setdefault(held.name, {})
            known = events.get(event_id)
            if known is None:
                events[event_id] = ParkedEvent(
                    held.name, event_id, sequence_num, error, attempts, utc_now(), False
                )
            else:
                events[event_id] = replace(known, error=error, attempts=attempts, retry_requested=False)

    def parked(self, name: str) -> list[ParkedEvent]:
        state = self._process.get()
        with state.lock:
            events = list(state.parked.get(name, {}).values())
        return sorted(events, key=lambda event: (event.sequence_num, event.event_id))

    def request_retry(self, name: str, event_id: str | None = None) -> int:
        state = self._process.get()
        with state.lock:
            self._row(state, name)
            events = state.parked.get(name, {})
            marked = [key for key in events if event_id is None or key == event_id]
            for key in marked:
                events[key] = replace(events[key], retry_requested=True)
        return len(marked)

    def unpark(self, lease: Lease, event_id: str) -> None:
        held = self._own(lease)
        state = held.state
        with state.lock:
            self._fence(state, held)
            state.parked.get(held.name, {}).pop(event_id, None)

    def set_state(
        self, name: str, state: str, error: str | None = None, *, lease: Lease | None = None
    ) -> None:
        check_state(state)
        changes: dict[str, Any] = {"state": state, "error": stored_error(state, error)}
        if lease is not None:
            held = self._own(lease)
            with held.state.lock:
                self._fence(held.state, held, changes)
            return
        process = self._process.get()
        with process.lock:
            row = self._row(process, name)
            process.rows[name] = replace(row, **changes, updated_at=utc_now())

    def reset(self, name: str, position: int, *, version: int | None = None) -> None:
        state = self._process.get()
        with state.lock:
            row = self._row(state, name)
            state.rows[name] = replace(
                row,
                position=position,
                version=row.version if version is None else version,
                state="active",
                error=None,
                runner=None,
                updated_at=utc_now(),
            )
            state.parked.pop(name, None)

    def projection_transaction(self, lease: Lease) -> AbstractContextManager[ProjectionTransaction]:
        """This process's in-memory SQLite database inside ``BEGIN`` (``tx.db``, a ``sqlite3.Connection``)."""
        return self._projection(self._own(lease))

    @contextmanager
    def _projection(self, lease: _MemoryLease) -> Iterator[ProjectionTransaction]:
        state = lease.state
        with state.projection_lock:
            connection = state.projection_db()
            connection.execute("BEGIN")
            try:
                tx = PendingPosition(connection)
                yield tx
                if not connection.in_transaction:
                    raise ShimmieError(
                        f"The projection {lease.name!r} committed or rolled back its transaction itself; "
                        "its writes may be stored without its position. Never end the transaction of tx.db."
                    )
                changes: dict[str, Any] = {}
                if tx.position is not None:
                    changes["position"] = tx.position
                if tx.version is not None:
                    changes["version"] = tx.version
                # Checked and applied under the rows' lock, with the commit in between, so that a
                # takeover or a reset lands either before (and the batch is refused) or after.
                with state.lock:
                    self._fence(state, lease)
                    connection.execute("COMMIT")
                    self._fence(state, lease, changes)
            finally:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")

    @contextmanager
    def projection_reader(self) -> Iterator[sqlite3.Connection]:
        """This process's in-memory projections database, held under its lock for the block."""
        state = self._process.get()
        with state.projection_lock:
            yield state.projection_db()

"""The SQLite subscription store: positions and parked events beside the events, leases on the sidecar.

Rows live in ``shimmie_subscriptions`` and ``shimmie_parked``, created with
the event store's tables. A lease is an ``fcntl`` lock on the subscription's
byte of the ``<file>-locks`` sidecar (see :mod:`.locks`): the kernel drops a
dead process's locks, so another process takes over at its next try. Every
write queues with the appends (the writers' gate, then ``BEGIN IMMEDIATE``),
and every write made for a lease is fenced by the row's ``runner``.

A projection's transaction runs on the writer connection inside ``BEGIN
IMMEDIATE``: it holds the file's one write lock while the handlers run, so
every other writer (appends included) waits for it. Keep its batches short.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Any

from ...errors import ShimmieError
from ..interface import (
    Lease,
    ParkedEvent,
    ProjectionTransaction,
    SubscriptionInfo,
    SubscriptionNotFoundError,
    SubscriptionStore,
)
from ..planner import utc_now
from ..process import ProcessLocal
from ..subscriptions import (
    PARKED_COLUMNS,
    SUBSCRIPTION_COLUMNS,
    PendingPosition,
    ProcessLease,
    check_kind,
    check_state,
    info_from_row,
    parked_from_row,
    registered,
    stored_error,
)
from .database import SqliteDatabase
from .locks import (
    HoldsLockFile,
    LockFile,
    holds_subscription,
    try_lock_subscription,
    unlock_subscription,
    writer_gate,
)

logger = logging.getLogger(__name__)

#: The subscription tables, created with the event store's (``IF NOT EXISTS``: no migration).
SUBSCRIPTIONS_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS shimmie_subscriptions (
        name TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        position INTEGER NOT NULL,
        state TEXT NOT NULL,
        error TEXT NULL,
        runner TEXT NULL,
        version INTEGER NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS shimmie_parked (
        subscription TEXT NOT NULL,
        event_id TEXT NOT NULL,
        sequence_num INTEGER NOT NULL,
        error TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        parked_at TEXT NOT NULL,
        retry_requested INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (subscription, event_id)
    )""",
)

_SELECT = f"SELECT {SUBSCRIPTION_COLUMNS} FROM shimmie_subscriptions"


def _now() -> str:
    return utc_now().isoformat(timespec="microseconds")


class _ProcessState(HoldsLockFile):
    """This process's lock file reference and the leases it took through the store object."""

    def __init__(self) -> None:
        super().__init__()
        self.leases: set[_SqliteLease] = set()


def _forget(state: _ProcessState) -> None:
    # The child holds none of these locks, and its registry of lock files is its own.
    state.lock_file = None
    state.leases = set()


class _SqliteLease(ProcessLease):
    def __init__(
        self,
        store: SqliteSubscriptionStore,
        state: _ProcessState,
        lock_file: LockFile,
        name: str,
        runner: str,
    ) -> None:
        super().__init__(name, runner)
        self.store = store
        self.state = state
        self.lock_file = lock_file

    def _still_held(self) -> bool:
        return (
            holds_subscription(self.lock_file, self.name) and self.store.runner_of(self.name) == self.runner
        )

    def _let_go(self) -> None:
        try:
            with self.store.writing(self.lock_file) as connection:
                connection.execute(
                    "UPDATE shimmie_subscriptions SET runner = NULL, updated_at = ?"
                    " WHERE name = ? AND runner = ?",
                    (_now(), self.name, self.runner),
                )
        except (ShimmieError, sqlite3.Error) as error:
            # The next holder overwrites the stale runner id anyway.
            logger.warning("Could not clear the runner of subscription %r: %s", self.name, error)
        finally:
            unlock_subscription(self.lock_file, self.name)
            with self.state.guard:
                self.state.leases.discard(self)


class SqliteSubscriptionStore(SubscriptionStore):
    """Durable subscriptions in an SQLite event store's file; built by the event store, closed with it."""

    def __init__(self, database: SqliteDatabase, lock_path: str) -> None:
        self._db = database
        self.lock_path = lock_path
        self._process: ProcessLocal[_ProcessState] = ProcessLocal(_ProcessState, _forget)

    def close(self) -> None:
        """Release the leases this process took through this object, and its lock file.

        The event store calls it before it closes the database, which the leases' release writes to.
        """
        state = self._process.pop()
        if state is None:
            return
        with state.guard:
            leases = list(state.leases)
        for lease in leases:
            lease.release()
        state.release()

    @contextmanager
    def writing(self, lock_file: LockFile | None = None) -> Iterator[sqlite3.Connection]:
        """The writer in ``BEGIN IMMEDIATE``, queued with the appends on the writers' gate."""
        self._db.require_open()
        if lock_file is None:
            lock_file = self._process.get().lock_file_for(self.lock_path)
        with writer_gate(lock_file), self._db.writing() as connection:
            yield connection

    def runner_of(self, name: str) -> str | None:
        """The stored ``runner`` of ``name`` (``None`` also when there is no such row)."""
        with self._db.reading() as connection:
            row = connection.execute(
                "SELECT runner FROM shimmie_subscriptions WHERE name = ?", (name,)
            ).fetchone()
        return None if row is None else row[0]

    def _own(self, lease: Lease) -> _SqliteLease:
        if not isinstance(lease, _SqliteLease) or lease.store is not self:
            raise ValueError(f"{lease!r} was not taken through this subscription store.")
        lease.check()
        return lease

    @staticmethod
    def _fence(
        connection: sqlite3.Connection, lease: _SqliteLease, sets: str, params: tuple[Any, ...]
    ) -> None:
        """Update the lease's row (``sets``); raise :class:`LeaseLostError` when another runner holds it."""
        changed = connection.execute(
            f"UPDATE shimmie_subscriptions SET {sets}, updated_at = ? WHERE name = ? AND runner = ?",
            (*params, _now(), lease.name, lease.runner),
        ).rowcount
        if changed == 0:
            raise lease.fenced_off()

    def register(self, name: str, kind: str, *, start_position: int, version: int = 0) -> SubscriptionInfo:
        check_kind(kind)
        info = self.get(name)
        if info is None:
            with self.writing() as connection:
                connection.execute(
                    "INSERT INTO shimmie_subscriptions (name, kind, position, state, error, runner, version,"
                    " updated_at) VALUES (?, ?, ?, 'active', NULL, NULL, ?, ?) ON CONFLICT (name) DO NOTHING",
                    (name, kind, start_position, version, _now()),
                )
                row = connection.execute(f"{_SELECT} WHERE name = ?", (name,)).fetchone()
            info = info_from_row(row, datetime.fromisoformat)
        return registered(info, kind)

    def get(self, name: str) -> SubscriptionInfo | None:
        with self._db.reading() as connection:
            row = connection.execute(f"{_SELECT} WHERE name = ?", (name,)).fetchone()
        return None if row is None else info_from_row(row, datetime.fromisoformat)

    def all(self) -> list[SubscriptionInfo]:
        with self._db.reading() as connection:
            rows = connection.execute(_SELECT).fetchall()
        return sorted((info_from_row(row, datetime.fromisoformat) for row in rows), key=lambda i: i.name)

    def try_lease(self, name: str, runner: str) -> Lease | None:
        self._db.require_open()
        state = self._process.get()
        lock_file = state.lock_file_for(self.lock_path)
        if not try_lock_subscription(lock_file, name):
            return None
        try:
            with self.writing(lock_file) as connection:
                changed = connection.execute(
                    "UPDATE shimmie_subscriptions SET runner = ?, updated_at = ? WHERE name = ?",
                    (runner, _now(), name),
                ).rowcount
                if changed == 0:
                    raise SubscriptionNotFoundError(name)
        except BaseException:
            unlock_subscription(lock_file, name)
            raise
        lease = _SqliteLease(self, state, lock_file, name, runner)
        with state.guard:
            state.leases.add(lease)
        return lease

    def advance(self, lease: Lease, position: int) -> None:
        held = self._own(lease)
        with self.writing() as connection:
            self._fence(connection, held, "position = ?", (position,))

    def park(self, lease: Lease, event_id: str, sequence_num: int, error: str, attempts: int) -> None:
        held = self._own(lease)
        with self.writing() as connection:
            self._fence(connection, held, "position = max(position, ?)", (sequence_num,))
            connection.execute(
                "INSERT INTO shimmie_parked (subscription, event_id, sequence_num, error, attempts,"
                " parked_at, retry_requested) VALUES (?, ?, ?, ?, ?, ?, 0)"
                " ON CONFLICT (subscription, event_id) DO UPDATE"
                " SET error = excluded.error, attempts = excluded.attempts, retry_requested = 0",
                (held.name, event_id, sequence_num, error, attempts, _now()),
            )

    def parked(self, name: str) -> list[ParkedEvent]:
        with self._db.reading() as connection:
            rows = connection.execute(
                f"SELECT {PARKED_COLUMNS} FROM shimmie_parked WHERE subscription = ?"
                " ORDER BY sequence_num, event_id",
                (name,),
            ).fetchall()
        return [parked_from_row(row, datetime.fromisoformat) for row in rows]

    def request_retry(self, name: str, event_id: str | None = None) -> int:
        with self.writing() as connection:
            query = "UPDATE shimmie_parked SET retry_requested = 1 WHERE subscription = ?"
            params: tuple[str, ...] = (name,)
            if event_id is not None:
                query += " AND event_id = ?"
                params += (event_id,)
            marked = connection.execute(query, params).rowcount
            if marked == 0 and not self._exists(connection, name):
                raise SubscriptionNotFoundError(name)
        return int(marked)

    def unpark(self, lease: Lease, event_id: str) -> None:
        held = self._own(lease)
        with self.writing() as connection:
            self._fence(connection, held, "position = position", ())
            connection.execute(
                "DELETE FROM shimmie_parked WHERE subscription = ? AND event_id = ?", (held.name, event_id)
            )

    def set_state(
        self, name: str, state: str, error: str | None = None, *, lease: Lease | None = None
    ) -> None:
        check_state(state)
        params = (state, stored_error(state, error))
        held = None if lease is None else self._own(lease)
        with self.writing() as connection:
            if held is not None:
                self._fence(connection, held, "state = ?, error = ?", params)
                return
            changed = connection.execute(
                "UPDATE shimmie_subscriptions SET state = ?, error = ?, updated_at = ? WHERE name = ?",
                (*params, _now(), name),
            ).rowcount
            if changed == 0:
                raise SubscriptionNotFoundError(name)

    def reset(self, name: str, position: int, *, version: int | None = None) -> None:
        with self.writing() as connection:
            changed = connection.execute(
                "UPDATE shimmie_subscriptions SET position = ?, version = coalesce(?, version),"
                " state = 'active', error = NULL, runner = NULL, updated_at = ? WHERE name = ?",
                (position, version, _now(), name),
            ).rowcount
            if changed == 0:
                raise SubscriptionNotFoundError(name)
            connection.execute("DELETE FROM shimmie_parked WHERE subscription = ?", (name,))

    @staticmethod
    def _exists(connection: sqlite3.Connection, name: str) -> bool:
        return (
            connection.execute("SELECT 1 FROM shimmie_subscriptions WHERE name = ?", (name,)).fetchone()
            is not None
        )

    def projection_transaction(self, lease: Lease) -> AbstractContextManager[ProjectionTransaction]:
        """The writer connection in ``BEGIN IMMEDIATE`` (``tx.db``, a ``sqlite3.Connection``).

        It holds the file's write lock until the block ends: every other
        writer of the file, appends included, waits meanwhile, so keep the
        batch short, and do not write to the event store inside it (that
        write would wait for this one for good).
        """
        return self._projection(self._own(lease))

    @contextmanager
    def _projection(self, lease: _SqliteLease) -> Iterator[ProjectionTransaction]:
        with self.writing() as connection:
            tx = PendingPosition(connection)
            yield tx
            if not connection.in_transaction:
                raise ShimmieError(
                    f"The projection {lease.name!r} committed or rolled back its transaction itself; "
                    "its writes may be stored without its position. Never end the transaction of tx.db."
                )
            sets, params = [], []
            if tx.position is not None:
                sets.append("position = ?")
                params.append(tx.position)
            if tx.version is not None:
                sets.append("version = ?")
                params.append(tx.version)
            self._fence(connection, lease, ", ".join(sets) or "position = position", tuple(params))

    def projection_reader(self) -> AbstractContextManager[sqlite3.Connection]:
        """A reader connection of the file (autocommit: each statement reads one snapshot)."""
        return self._db.reading()

"""The PostgreSQL subscription store: rows in the store's schema, leases as session advisory locks.

Rows live in ``shimmie_subscriptions`` and ``shimmie_parked``, created with
the event store's tables. A lease is a session advisory lock (keyed by the
schema and the name) held by a connection of its own, opened for the lease
and closed when it is released: the lock lasts exactly as long as that
session, so a dead process's lease is free as soon as the server sees its
connection close. Lease sessions use short TCP keepalives on both ends, so a
vanished host or network is noticed within seconds too.

Every write made for a lease runs on a pooled connection and is fenced by the
row's ``runner`` (``UPDATE ... WHERE name = %s AND runner = %s``): a takeover
sets ``runner`` first, so the old holder's writes find no row and store
nothing. Connection failures raise
:class:`~flask_shimmie.errors.StoreUnavailableError`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow
from psycopg_pool import PoolTimeout

from ..interface import (
    Lease,
    ParkedEvent,
    ProjectionTransaction,
    SubscriptionInfo,
    SubscriptionNotFoundError,
    SubscriptionStore,
)
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
from .database import PooledConnection, PostgresDatabase, TableSet, advisory_key, error_summary

logger = logging.getLogger(__name__)

T = TypeVar("T")

SUBSCRIPTION_TABLES = TableSet(
    ("shimmie_subscriptions", "shimmie_parked"),
    (
        "CREATE TABLE IF NOT EXISTS {schema}.shimmie_subscriptions ("
        " name text PRIMARY KEY,"
        " kind text NOT NULL,"
        " position bigint NOT NULL,"
        " state text NOT NULL,"
        " error text NULL,"
        " runner text NULL,"
        " version int NOT NULL,"
        " updated_at timestamptz NOT NULL DEFAULT now())",
        "CREATE TABLE IF NOT EXISTS {schema}.shimmie_parked ("
        " subscription text NOT NULL,"
        " event_id text NOT NULL,"
        " sequence_num bigint NOT NULL,"
        " error text NOT NULL,"
        " attempts int NOT NULL,"
        " parked_at timestamptz NOT NULL DEFAULT now(),"
        " retry_requested boolean NOT NULL DEFAULT false,"
        " PRIMARY KEY (subscription, event_id))",
    ),
)

#: libpq parameters of a lease's connection (unless the URL gives them): a dead server or
#: network is noticed within about 4 s, so a lease never outlives its lock for long.
LEASE_CONNECTION = {
    "keepalives": "1",
    "keepalives_idle": "2",
    "keepalives_interval": "1",
    "keepalives_count": "2",
}
# libpq learnt tcp_user_timeout in release 12; an older one refuses to connect with it.
if psycopg.pq.version() >= 120000:
    LEASE_CONNECTION["tcp_user_timeout"] = "4000"

#: Server settings of a lease's session: the server drops the session (and its lock) within
#: about 4 s of losing the client's host, and never for being idle. Settings the server does
#: not know (older releases) are left out.
_LEASE_SESSION = sql.SQL(
    "SELECT set_config(s.name, s.value, false) FROM (VALUES"
    " ('tcp_keepalives_idle', '2'), ('tcp_keepalives_interval', '1'), ('tcp_keepalives_count', '2'),"
    " ('tcp_user_timeout', '4000'), ('idle_session_timeout', '0')) AS s(name, value)"
    " WHERE s.name IN (SELECT name FROM pg_catalog.pg_settings)"
)

#: Connections inherited through a fork: kept referenced so that their finalisers never run
#: in the child (they would end the parent's sessions, and with them its leases).
_INHERITED: list[psycopg.Connection[TupleRow]] = []

_BROKEN = (psycopg.OperationalError, psycopg.InterfaceError)


#: The stores' own sessions keep sequential scans as a last resort (see
#: ``database._configure``); a projection's queries run on the user's tables,
#: which deserve the ordinary planner. ``LOCAL``: only for the transaction.
_PLANNER_FOR_USERS = "SET LOCAL enable_seqscan = on"


class _ProcessState:
    """This process's lease connections, and one idle connection kept for the next try."""

    def __init__(self) -> None:
        self.guard = threading.Lock()
        self.spare: psycopg.Connection[TupleRow] | None = None
        self.leases: set[_PostgresLease] = set()

    def abandon(self) -> None:
        _INHERITED.extend(lease.connection for lease in self.leases)
        if self.spare is not None:
            _INHERITED.append(self.spare)


class _PostgresLease(ProcessLease):
    def __init__(
        self,
        store: PostgresSubscriptionStore,
        state: _ProcessState,
        connection: psycopg.Connection[TupleRow],
        key: int,
        name: str,
        runner: str,
    ) -> None:
        super().__init__(name, runner)
        self.store = store
        self.state = state
        self.connection = connection
        self.key = key
        # The session is used by alive() and release(), maybe from two threads.
        self.lock = threading.Lock()

    def _still_held(self) -> bool:
        with self.lock:
            if self.connection.closed:
                return False
            try:
                row = self.connection.execute(self.store.sql_runner, [self.name]).fetchone()
            except psycopg.Error as error:
                # A session that does not answer holds no lock we can count on.
                logger.warning(
                    "The lease of subscription %r lost its session (%s).", self.name, error_summary(error)
                )
                self.connection.close()
                return False
            return row is not None and row[0] == self.runner

    def _let_go(self) -> None:
        with self.lock:
            connection = self.connection
            try:
                if not connection.closed:
                    connection.execute(self.store.sql_clear_runner, [self.name, self.runner])
                    connection.execute("SELECT pg_advisory_unlock(%s)", [self.key])
            except psycopg.Error as error:
                # Closing the session below releases the lock anyway.
                logger.warning(
                    "Could not release subscription %r cleanly: %s", self.name, error_summary(error)
                )
            finally:
                connection.close()
        with self.state.guard:
            self.state.leases.discard(self)


class PostgresSubscriptionStore(SubscriptionStore):
    """Durable subscriptions in a PostgreSQL event store's schema; built by it, closed with it."""

    def __init__(self, database: PostgresDatabase) -> None:
        self._db = database
        self._process: ProcessLocal[_ProcessState] = ProcessLocal(_ProcessState, _ProcessState.abandon)
        given = psycopg.conninfo.conninfo_to_dict(database.conninfo)
        self._lease_options = {key: value for key, value in LEASE_CONNECTION.items() if key not in given}
        subscriptions = database.table("shimmie_subscriptions")
        parked = database.table("shimmie_parked")
        self._sql_get = sql.SQL(f"SELECT {SUBSCRIPTION_COLUMNS} FROM {{}} WHERE name = %s").format(
            subscriptions
        )
        self._sql_all = sql.SQL(f"SELECT {SUBSCRIPTION_COLUMNS} FROM {{}}").format(subscriptions)
        self._sql_insert = sql.SQL(
            "INSERT INTO {} (name, kind, position, state, version) VALUES (%s, %s, %s, 'active', %s)"
            " ON CONFLICT (name) DO NOTHING"
        ).format(subscriptions)
        self.sql_runner = sql.SQL("SELECT runner FROM {} WHERE name = %s").format(subscriptions)
        self.sql_clear_runner = sql.SQL(
            "UPDATE {} SET runner = NULL, updated_at = now() WHERE name = %s AND runner = %s"
        ).format(subscriptions)
        self._sql_take = sql.SQL("UPDATE {} SET runner = %s, updated_at = now() WHERE name = %s").format(
            subscriptions
        )
        self._subscriptions = subscriptions
        self._sql_park = sql.SQL(
            "INSERT INTO {} (subscription, event_id, sequence_num, error, attempts)"
            " VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (subscription, event_id) DO UPDATE SET error = EXCLUDED.error,"
            " attempts = EXCLUDED.attempts, retry_requested = false"
        ).format(parked)
        self._sql_parked = sql.SQL(
            f"SELECT {PARKED_COLUMNS} FROM {{}} WHERE subscription = %s ORDER BY sequence_num, event_id"
        ).format(parked)
        self._sql_retry_all = sql.SQL("UPDATE {} SET retry_requested = true WHERE subscription = %s").format(
            parked
        )
        self._sql_retry_one = sql.SQL(
            "UPDATE {} SET retry_requested = true WHERE subscription = %s AND event_id = %s"
        ).format(parked)
        self._sql_unpark = sql.SQL("DELETE FROM {} WHERE subscription = %s AND event_id = %s").format(parked)
        self._sql_drop_parked = sql.SQL("DELETE FROM {} WHERE subscription = %s").format(parked)
        self._sql_set_state = sql.SQL(
            "UPDATE {} SET state = %s, error = %s, updated_at = now() WHERE name = %s"
        ).format(subscriptions)
        self._sql_reset = sql.SQL(
            "UPDATE {} SET position = %s, version = coalesce(%s, version), state = 'active', error = NULL,"
            " runner = NULL, updated_at = now() WHERE name = %s"
        ).format(subscriptions)

    # -- lifecycle ---------------------------------------------------------

    def close(self) -> None:
        """Release the leases this process took through this object, and close its spare connection.

        The event store calls it before it closes its pools.
        """
        state = self._process.pop()
        if state is None:
            return
        with state.guard:
            leases = list(state.leases)
            spare, state.spare = state.spare, None
        for lease in leases:
            lease.release()
        if spare is not None:
            spare.close()

    # -- helpers -----------------------------------------------------------

    def _own(self, lease: Lease) -> _PostgresLease:
        if not isinstance(lease, _PostgresLease) or lease.store is not self:
            raise ValueError(f"{lease!r} was not taken through this subscription store.")
        lease.check()
        return lease

    def _fence(
        self, conn: PooledConnection, lease: _PostgresLease, sets: str, params: tuple[Any, ...] = ()
    ) -> None:
        """Update the lease's row (``sets``); raise :class:`LeaseLostError` when another runner holds it."""
        query = sql.SQL(
            "UPDATE {} SET " + sets + ", updated_at = now() WHERE name = %s AND runner = %s"
        ).format(self._subscriptions)
        if conn.execute(query, [*params, lease.name, lease.runner]).rowcount == 0:
            raise lease.fenced_off()

    def _in_transaction(self, work: Callable[[PooledConnection], T]) -> T:
        """Run ``work`` in one transaction on a pooled connection (run again once on a broken one)."""

        def transaction(conn: PooledConnection) -> T:
            with conn.transaction():
                return work(conn)

        return self._db.run(transaction)

    def _key(self, name: str) -> int:
        return advisory_key(self._db.schema, "subscription", name)

    # -- rows --------------------------------------------------------------

    def register(self, name: str, kind: str, *, start_position: int, version: int = 0) -> SubscriptionInfo:
        check_kind(kind)

        def work(conn: PooledConnection) -> Any:
            # Two statements: a row another process inserts meanwhile is seen by the second.
            conn.execute(self._sql_insert, [name, kind, start_position, version])
            return conn.execute(self._sql_get, [name]).fetchone()

        return registered(info_from_row(self._db.run(work)), kind)

    def get(self, name: str) -> SubscriptionInfo | None:
        row = self._db.run(lambda conn: conn.execute(self._sql_get, [name]).fetchone())
        return None if row is None else info_from_row(row)

    def all(self) -> list[SubscriptionInfo]:
        rows = self._db.run(lambda conn: conn.execute(self._sql_all).fetchall())
        # Sorted here rather than by the server's collation, which varies.
        return sorted((info_from_row(row) for row in rows), key=lambda info: info.name)

    def parked(self, name: str) -> list[ParkedEvent]:
        rows = self._db.run(lambda conn: conn.execute(self._sql_parked, [name]).fetchall())
        return [parked_from_row(row) for row in rows]

    def request_retry(self, name: str, event_id: str | None = None) -> int:
        def work(conn: PooledConnection) -> int:
            if event_id is None:
                marked = conn.execute(self._sql_retry_all, [name]).rowcount
            else:
                marked = conn.execute(self._sql_retry_one, [name, event_id]).rowcount
            if marked == 0 and conn.execute(self._sql_get, [name]).fetchone() is None:
                raise SubscriptionNotFoundError(name)
            return marked

        return self._db.run(work)

    def set_state(
        self, name: str, state: str, error: str | None = None, *, lease: Lease | None = None
    ) -> None:
        check_state(state)
        params = (state, stored_error(state, error))
        if lease is not None:
            held = self._own(lease)
            self._db.run(lambda conn: self._fence(conn, held, "state = %s, error = %s", params))
            return
        changed = self._db.run(lambda conn: conn.execute(self._sql_set_state, [*params, name]).rowcount)
        if changed == 0:
            raise SubscriptionNotFoundError(name)

    def reset(self, name: str, position: int, *, version: int | None = None) -> None:
        def work(conn: PooledConnection) -> None:
            if conn.execute(self._sql_reset, [position, version, name]).rowcount == 0:
                raise SubscriptionNotFoundError(name)
            conn.execute(self._sql_drop_parked, [name])

        self._in_transaction(work)

    # -- leases ------------------------------------------------------------

    def try_lease(self, name: str, runner: str) -> Lease | None:
        self._db.pool()  # opens the store (and creates its tables) on first use
        state = self._process.get()
        key = self._key(name)
        connection = self._locked_connection(state, key)
        if connection is None:
            return None
        try:
            if connection.execute(self._sql_take, [runner, name]).rowcount == 0:
                raise SubscriptionNotFoundError(name)
        except BaseException as error:
            connection.close()  # which releases the lock
            if isinstance(error, _BROKEN):
                raise self._db.unavailable(error) from error
            raise
        lease = _PostgresLease(self, state, connection, key, name, runner)
        with state.guard:
            state.leases.add(lease)
        return lease

    def _locked_connection(self, state: _ProcessState, key: int) -> psycopg.Connection[TupleRow] | None:
        """A session holding advisory lock ``key``, or ``None`` when another session holds it.

        A failed try leaves its session as the spare for the next one, so that
        runners polling for a lease do not open a connection at every try.
        """
        for attempt in (1, 2):
            with state.guard:
                connection, state.spare = state.spare, None
            fresh = connection is None
            try:
                if connection is None:
                    connection = self._db.connect(**self._lease_options)
                    connection.execute(_LEASE_SESSION)
                row = connection.execute("SELECT pg_try_advisory_lock(%s)", [key]).fetchone()
            except psycopg.Error as error:
                if connection is not None:
                    connection.close()
                # A spare may have died while idle (a server restart): try once with a new one.
                if fresh or attempt == 2:
                    raise self._db.unavailable(error) from error
                continue
            if row is not None and row[0]:
                return connection
            with state.guard:
                if state.spare is None:
                    state.spare = connection
                    connection = None
            if connection is not None:
                connection.close()
            return None
        raise AssertionError("unreachable")

    def advance(self, lease: Lease, position: int) -> None:
        held = self._own(lease)
        self._db.run(lambda conn: self._fence(conn, held, "position = %s", (position,)))

    def park(self, lease: Lease, event_id: str, sequence_num: int, error: str, attempts: int) -> None:
        held = self._own(lease)

        def work(conn: PooledConnection) -> None:
            self._fence(conn, held, "position = greatest(position, %s)", (sequence_num,))
            conn.execute(self._sql_park, [held.name, event_id, sequence_num, error, attempts])

        self._in_transaction(work)

    def unpark(self, lease: Lease, event_id: str) -> None:
        held = self._own(lease)

        def work(conn: PooledConnection) -> None:
            self._fence(conn, held, "position = position")
            conn.execute(self._sql_unpark, [held.name, event_id])

        self._in_transaction(work)

    # -- projections -------------------------------------------------------

    def projection_transaction(self, lease: Lease) -> AbstractContextManager[ProjectionTransaction]:
        """A pooled connection in a transaction (``tx.db``: a ``psycopg.Connection``, ``%s`` placeholders).

        The position is updated (fenced) last, just before the commit. A
        connection lost while committing raises
        :class:`~flask_shimmie.errors.StoreUnavailableError`: the batch and its
        position may or may not be stored (together or not at all), so read the
        position again before going on.
        """
        return self._projection(self._own(lease))

    @contextmanager
    def _projection(self, lease: _PostgresLease) -> Iterator[ProjectionTransaction]:
        with self._pooled() as conn:
            with conn.transaction():
                conn.execute(_PLANNER_FOR_USERS)
                tx = PendingPosition(conn)
                yield tx
                sets, params = [], []
                if tx.position is not None:
                    sets.append("position = %s")
                    params.append(tx.position)
                if tx.version is not None:
                    sets.append("version = %s")
                    params.append(tx.version)
                self._fence(conn, lease, ", ".join(sets) or "position = position", tuple(params))

    def projection_reader(self) -> AbstractContextManager[PooledConnection]:
        """A pooled connection to the store's database (``%s`` placeholders), in a transaction.

        The block reads one consistent state of the projections' tables; the
        transaction ends (committed) with the block.
        """
        return self._reading()

    @contextmanager
    def _reading(self) -> Iterator[PooledConnection]:
        with self._pooled() as conn:
            with conn.transaction():
                conn.execute(_PLANNER_FOR_USERS)
                yield conn

    @contextmanager
    def _pooled(self) -> Iterator[PooledConnection]:
        pool = self._db.pool()
        try:
            conn = self._db.getconn(pool)
        except (PoolTimeout, *_BROKEN) as error:
            raise self._db.unavailable(error) from error
        try:
            yield conn
        except _BROKEN as error:
            if not conn.broken:
                raise
            self._db.heal(pool)
            raise self._db.unavailable(error) from error
        finally:
            pool.putconn(conn)

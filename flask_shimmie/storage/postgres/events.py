"""The PostgreSQL event store (``postgresql://user@host/db?schema=...``).

Global order without gaps
    A write transaction first takes a transaction-level advisory lock that
    every writer of the schema shares, then numbers its events from
    ``max(sequence_num) + 1``. The ``eventsourcing`` library takes
    ``LOCK TABLE ... IN EXCLUSIVE MODE`` instead; the advisory lock
    serialises writers the same way but does not conflict with autovacuum,
    which otherwise holds writers up to ``deadlock_timeout`` before it gives
    way (seen here as stalls after bulk writes). Readers take no lock. The
    lock is held until the commit is visible, so transactions commit in
    position order: a reader that has seen position *n* has seen every
    position before it, and a tailing reader that asks for
    ``sequence_num > n`` never skips an event committed later with a lower
    number. A sequence would be cheaper to take but leaves holes on rollback
    and hands out numbers in start order rather than commit order, which is
    exactly how tailing readers skip events.

One write, one round trip
    An append is one call of the ``shimmie_append`` function (see
    :mod:`flask_shimmie.storage.postgres.append`) on an autocommit
    connection: the lock, the checks of
    :class:`~flask_shimmie.storage.planner.AppendPlanner`'s rules, the
    insert, the PII rows, ``pg_notify`` and the commit, all answered at
    once. Every round trip made while the lock is held would delay every
    other writer; none is. Threads of one process queue on a local mutex
    before that, rather than each holding a connection in the server's lock
    queue. Notifications are delivered at commit, so a listener never hears
    of an uncommitted position.

Failures
    Connection failures raise :class:`~flask_shimmie.errors.StoreUnavailableError`
    and leave nothing half-written (the statement's transaction rolls back).
    A pooled connection that the server has already closed (say, after a
    server restart) is found out before anything is sent, and the work runs
    again once on a fresh one. A connection lost after an append was sent
    leaves its outcome unknown: that error says so, and retrying with the
    same event ids is safe.

Following other processes
    :meth:`PostgresEventStore.wait_for_events` is served by one listener
    thread per store, with its own autocommit connection doing ``LISTEN`` on a
    channel named after the schema. It re-reads ``max(sequence_num)`` after
    every (re)connection and every few idle seconds, so a lost connection or
    notification delays a waiter but never leaves it behind.

Locks
    :meth:`PostgresEventStore.lock_stream` queues threads of one process on a
    local lock first, then takes a session advisory lock (keyed by a hash of
    schema and stream id) on a connection from a pool kept for lock holders.

JSON columns are ``text``; see :mod:`flask_shimmie.storage.postgres.database` for why.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from hashlib import blake2b
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from ...errors import ObjectLockedError, ShimmieError
from ..codec import ROW_COLUMNS
from ..interface import AppendBatch, AppendResult, EventStore, Snapshot
from ..process import ProcessLocal
from ..threads import PositionSignal, StreamLocks
from .append import APPEND_CALL, APPEND_FUNCTION, answer, append_params
from .database import (
    CommitUnknown,
    PooledConnection,
    PostgresDatabase,
    TableSet,
    advisory_key,
    ensure_open,
    error_summary,
)
from .pii import PII_TABLES, PostgresPiiStore
from .subscriptions import SUBSCRIPTION_TABLES, PostgresSubscriptionStore

logger = logging.getLogger(__name__)

#: The first half of the writers' advisory lock key ("SHIM"); the second is the schema's.
WRITER_LOCK_CLASS = 0x5348494D


def writer_lock_id(schema: str) -> int:
    """The second half of the writers' advisory lock key: a signed 32-bit hash of ``schema``."""
    return int.from_bytes(blake2b(schema.encode(), digest_size=4).digest(), "big", signed=True)


EVENT_TABLES = TableSet(
    ("shimmie_events", "shimmie_snapshots"),
    (
        "CREATE TABLE IF NOT EXISTS {schema}.shimmie_events ("
        " sequence_num bigint PRIMARY KEY,"
        " stream_id text NOT NULL,"
        " stream_version int NOT NULL,"
        " event_id text NOT NULL UNIQUE,"
        " event_name text NOT NULL,"
        " data text NOT NULL,"
        " meta text NOT NULL,"
        " recorded_at timestamptz NOT NULL,"
        " schema_version int NOT NULL,"
        " pii_fields text NULL,"
        " UNIQUE (stream_id, stream_version))",
        "CREATE TABLE IF NOT EXISTS {schema}.shimmie_snapshots ("
        " model text PRIMARY KEY,"
        " position bigint NOT NULL,"
        " version int NOT NULL,"
        " state text NOT NULL,"
        " taken_at timestamptz NOT NULL DEFAULT now())",
        APPEND_FUNCTION,
    ),
    functions=("shimmie_append",),
)

_COLUMNS = ", ".join(ROW_COLUMNS)

#: Seconds without a notification after which the listener re-reads the
#: last position anyway (a cheap guard against a silently lost connection).
LISTENER_POLL = 5.0
#: The longest pause between the listener's reconnection attempts.
LISTENER_MAX_BACKOFF = 5.0


def channel_name(schema: str) -> str:
    """The LISTEN/NOTIFY channel of a schema's store (at most 63 bytes)."""
    name = f"shimmie_events_{schema}"
    if len(name.encode()) > 63:
        name = "shimmie_events_" + blake2b(schema.encode(), digest_size=16).hexdigest()
    return name


class _ProcessState:
    """What the store keeps per process besides its pools: the listener, signal and locks."""

    def __init__(self) -> None:
        self.listener: _Listener | None = None
        self.listener_guard = threading.Lock()
        self.signal = PositionSignal()
        #: Signs this process's notifications, so its listener knows them for its own.
        self.token = secrets.token_hex(8)
        self.locks = StreamLocks()
        # Writers are serialised by the advisory lock anyway; queueing this
        # process's threads here instead keeps them from each holding a
        # connection and waking one another in the server's lock queue.
        self.write_mutex = threading.Lock()

    def abandon(self) -> None:
        """A forked child has no listener thread, and its own locks; nothing to release."""


class PostgresEventStore(EventStore):
    """Events in ``<schema>.shimmie_events``; see the module docstring for the design."""

    backend = "postgresql"
    supports_group_commit = True
    needs_follower = True

    def __init__(self, url: str, *, key: str) -> None:
        self.url = url
        self.key = key
        self._db = PostgresDatabase(url, key=key, tables=[EVENT_TABLES, PII_TABLES, SUBSCRIPTION_TABLES])
        self.channel = channel_name(self._db.schema)
        self._pii = PostgresPiiStore(url, key=key, database=self._db)
        self._subscriptions = PostgresSubscriptionStore(self._db)
        self._process: ProcessLocal[_ProcessState] = ProcessLocal(_ProcessState, _ProcessState.abandon)

        events = self._db.table("shimmie_events")
        self._sql_last = sql.SQL("SELECT coalesce(max(sequence_num), 0) FROM {}").format(events)
        # A correlated max() per stream walks the (stream_id, stream_version)
        # index backwards: one probe per stream, however long the stream.
        versions = "(SELECT max(e.stream_version) FROM {events} e WHERE e.stream_id = s.id)"
        self._sql_versions = sql.SQL("SELECT s.id, " + versions + " FROM unnest(%s::text[]) AS s(id)").format(
            events=events
        )
        self._sql_append = sql.SQL(APPEND_CALL).format(self._db.table("shimmie_append"))
        self._writer_lock = (WRITER_LOCK_CLASS, writer_lock_id(self._db.schema))
        self._sql_existing = sql.SQL("SELECT event_id FROM {} WHERE event_id = ANY(%s)").format(events)
        self._sql_counts = sql.SQL(
            "SELECT event_name, count(*) FROM {} GROUP BY event_name ORDER BY min(sequence_num)"
        ).format(events)
        # Every stream has exactly one event at version 1.
        self._sql_streams = sql.SQL("SELECT count(*) FROM {} WHERE stream_version = 1").format(events)
        snapshots = self._db.table("shimmie_snapshots")
        self._sql_save_snapshots = sql.SQL(
            "INSERT INTO {} (model, position, version, state)"
            " SELECT * FROM unnest(%s::text[], %s::bigint[], %s::int[], %s::text[])"
            " ON CONFLICT (model) DO UPDATE SET position = EXCLUDED.position,"
            " version = EXCLUDED.version, state = EXCLUDED.state, taken_at = EXCLUDED.taken_at"
        ).format(snapshots)
        self._sql_load_snapshots = sql.SQL(
            "SELECT model, position, version, state FROM {} ORDER BY model"
        ).format(snapshots)
        self._sql_delete_snapshots = sql.SQL("DELETE FROM {}").format(snapshots)
        self._read_sql: dict[tuple[bool, bool], sql.Composed] = {}
        for by_stream in (False, True):
            for by_name in (False, True):
                where: sql.Composable = sql.SQL("sequence_num > %s")
                if by_stream:
                    where += sql.SQL(" AND stream_id = ANY(%s)")
                if by_name:
                    where += sql.SQL(" AND event_name = ANY(%s)")
                self._read_sql[by_stream, by_name] = sql.SQL(
                    "SELECT " + _COLUMNS + " FROM {} WHERE {} ORDER BY sequence_num LIMIT %s"
                ).format(events, where)

    # -- lifecycle ---------------------------------------------------------

    def open(self) -> None:
        """Open the pool and create the missing tables (events and PII)."""
        self._db.open()

    def close(self) -> None:
        """Stop the listener, release the subscriptions' leases, close the pools; :meth:`open` may follow."""
        self._subscriptions.close()
        state = self._process.get()
        with state.listener_guard:
            listener, state.listener = state.listener, None
        if listener is not None:
            listener.stop(self._db)
        self._db.close()

    def describe(self) -> str:
        return self._db.describe()

    def ping(self) -> None:
        self._db.run(lambda conn: conn.execute("SELECT 1"))

    def colocated_pii_store(self) -> PostgresPiiStore:
        return self._pii

    def subscription_store(self) -> PostgresSubscriptionStore:
        return self._subscriptions

    # -- writing -----------------------------------------------------------

    def append_batches(
        self, batches: Sequence[AppendBatch], *, write_pii: bool = False
    ) -> list[AppendResult | ShimmieError]:
        if not batches:
            return []
        state = self._process.get()
        with state.write_mutex:
            outcomes, last = self._db.run(lambda conn: self._append(conn, batches, write_pii, state.token))
        if last:
            state.signal.advance(last, local=True)
        return outcomes

    def _append(
        self, conn: PooledConnection, batches: Sequence[AppendBatch], write_pii: bool, token: str
    ) -> tuple[list[AppendResult | ShimmieError], int]:
        # One statement on an autocommit connection: its own transaction, committed before
        # the answer comes back. Once it is sent, a lost connection leaves the outcome unknown,
        # so a connection the server has already closed is found out before sending.
        ensure_open(conn)
        params = append_params(
            batches, write_pii=write_pii, lock=self._writer_lock, channel=self.channel, token=token
        )
        try:
            rows = conn.execute(self._sql_append, params).fetchall()
        except (psycopg.OperationalError, psycopg.InterfaceError) as error:
            if conn.broken:
                raise CommitUnknown(error) from error
            raise
        outcomes, written, last = answer(rows, batches)
        return outcomes, last if written else 0

    # -- reading -----------------------------------------------------------

    def read_rows(
        self,
        after: int = 0,
        limit: int | None = None,
        *,
        stream_ids: Collection[str] | None = None,
        event_names: Collection[str] | None = None,
    ) -> list[Any]:
        if limit is not None and limit <= 0:
            return []
        params: list[Any] = [max(after, 0)]
        if stream_ids is not None:
            if not stream_ids:
                return []
            params.append(list(set(stream_ids)))
        if event_names is not None:
            if not event_names:
                return []
            params.append(list(set(event_names)))
        params.append(limit)
        query = self._read_sql[stream_ids is not None, event_names is not None]
        # Binary results: timestamps and integers decode faster than from text.
        rows: list[Any] = self._db.run(
            lambda conn: conn.cursor(binary=True).execute(query, params).fetchall()
        )
        return rows

    def last_sequence_num(self) -> int:
        return self._scalar(self._sql_last)

    def stream_versions(self, stream_ids: Collection[str]) -> dict[str, int]:
        ids = list(set(stream_ids))
        if not ids:
            return {}
        rows = self._db.run(lambda conn: conn.execute(self._sql_versions, [ids]).fetchall())
        return {stream_id: version or 0 for stream_id, version in rows}

    def existing_event_ids(self, event_ids: Collection[str]) -> set[str]:
        ids = list(set(event_ids))
        if not ids:
            return set()
        rows = self._db.run(lambda conn: conn.execute(self._sql_existing, [ids]).fetchall())
        return {row[0] for row in rows}

    def count_by_event_name(self) -> dict[str, int]:
        rows = self._db.run(lambda conn: conn.execute(self._sql_counts).fetchall())
        return {name: count for name, count in rows}

    def count_streams(self) -> int:
        return self._scalar(self._sql_streams)

    def _scalar(self, query: sql.Composed) -> int:
        row = self._db.run(lambda conn: conn.execute(query).fetchone())
        return int(row[0]) if row else 0

    # -- snapshots ---------------------------------------------------------

    def save_snapshots(self, snapshots: Sequence[Snapshot]) -> None:
        # ON CONFLICT DO UPDATE refuses to touch one row twice in a statement.
        latest = list({snapshot.model: snapshot for snapshot in snapshots}.values())
        if not latest:
            return
        params = [
            [s.model for s in latest],
            [s.position for s in latest],
            [s.version for s in latest],
            [s.state_json for s in latest],
        ]
        self._db.run(lambda conn: conn.execute(self._sql_save_snapshots, params))

    def load_snapshots(self) -> list[Snapshot]:
        rows = self._db.run(lambda conn: conn.execute(self._sql_load_snapshots).fetchall())
        return [Snapshot(*row) for row in rows]

    def delete_snapshots(self) -> int:
        # A rerun after a lost answer would count 0 rows.
        return self._db.run(lambda conn: conn.execute(self._sql_delete_snapshots).rowcount, retry=False)

    def purge_residue(self, *, vacuum: bool = False) -> None:
        """VACUUM FULL ``shimmie_snapshots``, whatever ``vacuum`` says.

        Erasing deletes every snapshot, and a plain VACUUM leaves the bytes of
        pages it empties; rewriting a table of one row per model costs next to
        nothing. The colocated PII table is its PII store's to purge.
        """
        self._db.vacuum("shimmie_snapshots", full=True)

    # -- locks and notifications -------------------------------------------

    def lock_stream(self, stream_id: str, timeout: float) -> AbstractContextManager[None]:
        return self._hold(stream_id, timeout)

    @contextmanager
    def _hold(self, stream_id: str, timeout: float) -> Iterator[None]:
        deadline = time.monotonic() + timeout
        # Threads of this process wait here, without holding a connection.
        with self._process.get().locks.hold(stream_id, timeout):
            key = advisory_key(self._db.schema, stream_id)
            pool = self._db.lock_pool()
            conn = self._lock_on_connection(pool, key, stream_id, timeout, deadline)
            try:
                yield
            finally:
                try:
                    conn.execute("SELECT pg_advisory_unlock(%s)", [key])
                except psycopg.Error:
                    # Ending the session is what releases its locks for sure.
                    conn.close()
                pool.putconn(conn)

    def _lock_on_connection(
        self,
        pool: ConnectionPool[PooledConnection],
        key: int,
        stream_id: str,
        timeout: float,
        deadline: float,
    ) -> PooledConnection:
        """A connection of ``pool`` holding the advisory lock ``key``."""
        for attempt in (1, 2):
            conn = self._lock_connection(pool, stream_id, timeout, deadline)
            try:
                self._acquire(conn, key, stream_id, timeout, deadline - time.monotonic())
            except (psycopg.OperationalError, psycopg.InterfaceError) as error:
                pool.putconn(conn)
                if not conn.broken:
                    raise self._db.unavailable(error) from error
                self._db.heal(pool)
                if attempt == 2:
                    raise self._db.unavailable(error) from error
            except BaseException:
                pool.putconn(conn)
                raise
            else:
                return conn
        raise AssertionError("unreachable")

    def _lock_connection(
        self, pool: ConnectionPool[PooledConnection], stream_id: str, timeout: float, deadline: float
    ) -> PooledConnection:
        # A pool that has no connection at all must be allowed to open one.
        wait = max(deadline - time.monotonic(), 1.0)
        try:
            return self._db.getconn(pool, wait)
        except PoolTimeout as error:
            stats = pool.get_stats()
            if stats.get("pool_size", 0) >= pool.max_size and not stats.get("pool_available", 0):
                # Every lock connection holds a lock: as good as locked.
                raise ObjectLockedError(stream_id, timeout) from None
            raise self._db.unavailable(error) from error
        except (psycopg.OperationalError, psycopg.InterfaceError) as error:
            raise self._db.unavailable(error) from error

    @staticmethod
    def _acquire(conn: PooledConnection, key: int, stream_id: str, timeout: float, remaining: float) -> None:
        if remaining < 0.001:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", [key]).fetchone()
            if not (row and row[0]):
                raise ObjectLockedError(stream_id, timeout)
            return
        try:
            # A session lock outlives this transaction; SET LOCAL keeps the
            # timeout from outliving it.
            with conn.transaction():
                conn.execute(
                    "SELECT set_config('lock_timeout', %s, true)",
                    [f"{max(1, math.ceil(remaining * 1000))}ms"],
                )
                conn.execute("SELECT pg_advisory_lock(%s)", [key])
        except pg_errors.LockNotAvailable:
            raise ObjectLockedError(stream_id, timeout) from None

    def wait_for_events(self, after: int, timeout: float, *, others_only: bool = False) -> int:
        state = self._process.get()
        if state.listener is None:
            self._start_listener(state)
        return state.signal.wait_past(after, timeout, others_only=others_only)

    def _start_listener(self, state: _ProcessState) -> None:
        with state.listener_guard:
            if state.listener is not None:
                return
            try:
                state.signal.advance(self.last_sequence_num())
            except ShimmieError as error:
                # The listener keeps retrying; a waiter just times out meanwhile.
                logger.warning("%s", error)
            state.listener = _Listener(self._db, self.channel, state.signal, self._sql_last, state.token)


class _Listener:
    """A thread that LISTENs on the store's channel and advances a signal."""

    def __init__(
        self, db: PostgresDatabase, channel: str, signal: PositionSignal, last_sql: sql.Composed, token: str
    ) -> None:
        self._db = db
        self._token = token
        self._channel = channel
        self._signal = signal
        self._last_sql = last_sql
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"shimmie-listener:{channel}", daemon=True)
        self._thread.start()

    def stop(self, db: PostgresDatabase) -> None:
        """Stop the thread, waking it with a notification rather than waiting for its poll."""
        self._stopping.set()
        if db.is_open():
            # "0" advances no one, in this process or any other.
            with suppress(ShimmieError):
                db.run(lambda conn: conn.execute("SELECT pg_notify(%s, '0')", [self._channel]))
        self._thread.join(timeout=LISTENER_POLL + 1)

    def _run(self) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            try:
                with self._db.connect() as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                    # Listening first, then reading, so nothing falls in between.
                    self._catch_up(conn)
                    backoff = 0.1
                    self._follow(conn)
            except psycopg.Error as error:
                if self._stopping.is_set():
                    return
                logger.warning(
                    "%s = %s: event listener lost its connection (%s); retrying in %.1fs",
                    self._db.key,
                    self._db.safe_url,
                    error_summary(error),
                    backoff,
                )
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, LISTENER_MAX_BACKOFF)

    def _follow(self, conn: psycopg.Connection[Any]) -> None:
        while not self._stopping.is_set():
            heard = False
            for note in conn.notifies(timeout=LISTENER_POLL):
                heard = True
                # "<position> <token of the writing store object>"
                position, _, token = note.payload.partition(" ")
                try:
                    self._signal.advance(int(position), local=token == self._token)
                except ValueError:
                    pass
                if self._stopping.is_set():
                    return
            if not heard:
                self._catch_up(conn)

    def _catch_up(self, conn: psycopg.Connection[Any]) -> None:
        row = conn.execute(self._last_sql).fetchone()
        self._signal.advance(int(row[0]) if row else 0)

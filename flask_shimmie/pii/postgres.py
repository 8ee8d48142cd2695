"""The PostgreSQL PII store, and the connection handling both PostgreSQL stores share.

:class:`PostgresDatabase` turns a store URL into a libpq connection string and
a lazily opened :class:`psycopg_pool.ConnectionPool`, creates the tables a
store needs, and maps connection failures to
:class:`~flask_shimmie.errors.StoreUnavailableError`. The event store
(:mod:`flask_shimmie.stores.postgres`) and :class:`PostgresPiiStore` both use
it; a colocated PII store shares its event store's instance, hence its pool,
so ``append(write_pii=True)`` writes the PII rows in the event transaction.

JSON is kept in ``text`` columns, not ``jsonb``: reading ``jsonb`` makes the
server re-serialise every value (measured: paging through 200k events took
about twice as long as with ``text``), and ``jsonb`` reorders object keys and
normalises numbers, so reads would not give back the dicts the memory store
gives. Nothing queries inside the JSON server-side; an ad-hoc query can still
cast with ``data::jsonb``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Collection, Sequence
from contextlib import suppress
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool, PoolTimeout

from ..errors import ConfigurationError, StoreUnavailableError
from .base import PiiRecord, PiiStore

logger = logging.getLogger("flask_shimmie")

T = TypeVar("T")

#: Seconds ``open()`` waits for the pool's first connections.
OPEN_TIMEOUT = 5.0
#: Seconds a caller waits for a free pooled connection.
POOL_TIMEOUT = 10.0
#: Seconds a caller waits for a busy pool before checking that the server
#: accepts connections at all.
BUSY_WAIT = 0.5
#: Seconds the outcome of that check is trusted by other callers.
PROBE_TTL = 1.0
#: libpq ``connect_timeout`` used when the URL does not give one.
CONNECT_TIMEOUT = 5
#: The schema version this release creates and understands.
SCHEMA_VERSION = 1

_SCHEMES = ("postgres", "postgresql", "postgresql+psycopg")


def advisory_key(*parts: str) -> int:
    """A stable signed 64-bit advisory lock key for ``parts`` (``hash()`` varies per process)."""
    digest = blake2b("\x00".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


#: Serialises table creation across processes; concurrent
#: ``CREATE ... IF NOT EXISTS`` statements otherwise fail on catalog conflicts.
_DDL_LOCK_KEY = advisory_key("flask_shimmie", "create tables")


@dataclass(frozen=True)
class TableSet:
    """Relations a store needs, and the statements that create them.

    ``statements`` are SQL templates in which ``{schema}`` stands for the
    quoted schema name; each must be idempotent (``IF NOT EXISTS``).
    """

    relations: tuple[str, ...]
    statements: tuple[str, ...]


VERSION_TABLES = TableSet(
    ("shimmie_schema_version",),
    ("CREATE TABLE IF NOT EXISTS {schema}.shimmie_schema_version (version int NOT NULL)",),
)

PII_TABLES = TableSet(
    ("shimmie_pii", "shimmie_pii_stream_id_idx"),
    (
        "CREATE TABLE IF NOT EXISTS {schema}.shimmie_pii ("
        " event_id text PRIMARY KEY,"
        " stream_id text NOT NULL,"
        " data text NOT NULL,"
        " written_at timestamptz NOT NULL DEFAULT now())",
        "CREATE INDEX IF NOT EXISTS shimmie_pii_stream_id_idx ON {schema}.shimmie_pii (stream_id)",
    ),
)


#: The connections our pools hand out (autocommit, tuple rows).
PooledConnection = psycopg.Connection[TupleRow]


def _configure(conn: PooledConnection) -> None:
    # UTC gives datetimes with ``timezone.utc``, as the memory store stamps
    # them; READ COMMITTED is what the writers' locking relies on, whatever
    # the server's default is.
    conn.execute("SET TIME ZONE 'UTC'")
    # Every query the stores make is an index probe or an index range, but a
    # young table has no statistics (autovacuum analyses it a minute later at
    # the earliest) and the planner then scans it whole, slower with every
    # row: writes to a fresh schema fell from 8k to 2k events/s within
    # seconds. This only makes scans a last resort; a query without a usable
    # index (counting events by name) still scans.
    conn.execute("SET enable_seqscan = off")
    conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED


class CommitUnknown(Exception):
    """Raised by work given to :meth:`PostgresDatabase.run` when a COMMIT got no answer."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def error_summary(error: BaseException) -> str:
    """The lines of a (libpq) error message, on one line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(lines) or type(error).__name__


#: Replaced in a forked child, so the child never waits on a lock that a
#: thread of its parent held at the fork.
_fork_guard = threading.Lock()


def _new_fork_guard() -> None:
    global _fork_guard
    _fork_guard = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_fork_guard)


class PostgresDatabase:
    """One PostgreSQL database (and schema) as configured by a store URL.

    Nothing connects before :meth:`open` (called explicitly, or lazily by the
    first use). Pools belong to the process that opened them: in a forked
    child the inherited pools are left untouched (closing them would close
    the parent's sessions) and fresh ones are opened on first use.
    """

    def __init__(self, url: str, *, key: str, tables: Sequence[TableSet]) -> None:
        self.url = url
        self.key = key
        self.tables = (VERSION_TABLES, *tables)
        parts = urlsplit(url)
        self.safe_url = _without_password(url)
        if parts.scheme.lower() not in _SCHEMES:
            raise ConfigurationError(
                f"{key} = {self.safe_url}: not a PostgreSQL URL; use postgresql://user@host/db."
            )
        params: dict[str, str] = {}
        rest: list[tuple[str, str]] = []
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name in ("schema", "pool_min_size", "pool_max_size"):
                if name in params:
                    raise ConfigurationError(f"{key} = {self.safe_url}: {name} is given twice.")
                params[name] = value
            else:
                rest.append((name, value))
        self.schema = params.get("schema", "public")
        if not self.schema or len(self.schema.encode()) > 63:
            raise ConfigurationError(
                f"{key} = {self.safe_url}: schema={self.schema!r} must be 1 to 63 bytes long."
            )
        self.pool_min_size = self._size(params, "pool_min_size", 1, minimum=0)
        self.pool_max_size = self._size(params, "pool_max_size", 10, minimum=1)
        if self.pool_max_size < self.pool_min_size:
            raise ConfigurationError(
                f"{key} = {self.safe_url}: pool_max_size={self.pool_max_size} is smaller than "
                f"pool_min_size={self.pool_min_size}."
            )
        self.conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(rest), ""))
        try:
            given = psycopg.conninfo.conninfo_to_dict(self.conninfo)
        except psycopg.Error as error:
            raise ConfigurationError(f"{key} = {self.safe_url}: {error_summary(error)}") from None
        self.connect_kwargs: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in given:
            self.connect_kwargs["connect_timeout"] = CONNECT_TIMEOUT
        if "application_name" not in given:
            self.connect_kwargs["application_name"] = "flask_shimmie"

        self._lock = threading.RLock()
        self._pid: int | None = None
        self._pool: ConnectionPool[PooledConnection] | None = None
        self._lock_pool: ConnectionPool[PooledConnection] | None = None
        # Pools inherited through a fork: kept referenced so that garbage
        # collection never runs their finalisers in the child.
        self._inherited: list[ConnectionPool[PooledConnection]] = []
        self._fork_callbacks: list[Callable[[], None]] = []
        self._probe_lock = threading.Lock()
        #: (when, why the server refused a connection or None) of the last check.
        self._probe: tuple[float, str | None] = (-PROBE_TTL, None)

    def _size(self, params: dict[str, str], name: str, default: int, *, minimum: int) -> int:
        value = params.get(name)
        if value is None:
            return default
        try:
            size = int(value)
        except ValueError:
            size = minimum - 1
        if size < minimum:
            raise ConfigurationError(
                f"{self.key} = {self.safe_url}: {name}={value!r} must be an integer >= {minimum}."
            )
        return size

    def describe(self) -> str:
        """The URL without the password."""
        return self.safe_url

    def table(self, name: str) -> sql.Identifier:
        """The schema-qualified identifier of one of our tables."""
        return sql.Identifier(self.schema, name)

    def on_fork(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when this object is first used in a forked child."""
        self._fork_callbacks.append(callback)

    def check_process(self) -> None:
        """Forget the pools (and, via :meth:`on_fork`, threads) of a parent process."""
        pid = os.getpid()
        if self._pid is None or self._pid == pid:
            return
        with _fork_guard:
            if self._pid is None or self._pid == pid:
                return
            self._inherited.extend(pool for pool in (self._pool, self._lock_pool) if pool is not None)
            self._pool = self._lock_pool = None
            self._lock = threading.RLock()
            self._probe_lock = threading.Lock()
            self._pid = None
            for callback in self._fork_callbacks:
                callback()

    def open(self) -> None:
        """Open the pool and create the missing tables; idempotent."""
        self.check_process()
        with self._lock:
            if self._pool is not None:
                return
            # One direct connection first: it fails at once (with libpq's
            # reason) where the pool would retry until its timeout, and it
            # creates the tables before any pooled connection exists.
            try:
                conn = self.connect()
            except psycopg.Error as error:
                raise self._cannot_connect(error_summary(error)) from None
            with conn:
                self._create_tables(conn)
            pool = self._new_pool("shimmie", self.pool_min_size, self.pool_max_size)
            try:
                pool.open(wait=True, timeout=OPEN_TIMEOUT)
            except PoolTimeout:
                pool.close()
                raise self._cannot_connect(f"no connection within {OPEN_TIMEOUT:g}s") from None
            self._pool = pool
            self._pid = os.getpid()

    def is_open(self) -> bool:
        """Whether this process has an open pool."""
        self.check_process()
        return self._pool is not None

    def close(self) -> None:
        """Close this process's pools. The database may be opened again."""
        self.check_process()
        with self._lock:
            pools = [pool for pool in (self._lock_pool, self._pool) if pool is not None]
            self._pool = self._lock_pool = None
        for pool in pools:
            pool.close()

    def pool(self) -> ConnectionPool[PooledConnection]:
        """This process's pool, opened on first use."""
        self.check_process()
        pool = self._pool
        if pool is None:
            self.open()
            pool = self._pool
            if pool is None:  # closed by another thread meanwhile
                raise StoreUnavailableError(f"{self.key} = {self.safe_url}: the store was closed.")
        return pool

    def lock_pool(self) -> ConnectionPool[PooledConnection]:
        """A second pool for connections that hold session locks.

        Lock holders keep a connection for as long as they hold the lock and
        usually write meanwhile; taking both from one pool would let as many
        holders as the pool has connections starve each other.
        """
        self.pool()
        with self._lock:
            if self._lock_pool is None:
                pool = self._new_pool("shimmie-locks", 0, self.pool_max_size)
                pool.open()
                self._lock_pool = pool
            return self._lock_pool

    def _new_pool(self, name: str, min_size: int, max_size: int) -> ConnectionPool[PooledConnection]:
        return ConnectionPool(
            self.conninfo,
            kwargs=self.connect_kwargs,
            min_size=min_size,
            max_size=max_size,
            open=False,
            configure=_configure,
            name=f"{name}:{self.schema}",
            timeout=POOL_TIMEOUT,
        )

    def connect(self) -> psycopg.Connection[TupleRow]:
        """A new autocommit connection of its own (e.g. for LISTEN)."""
        return psycopg.connect(self.conninfo, **self.connect_kwargs)

    def _cannot_connect(self, reason: str) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"{self.key} = {self.safe_url}: cannot connect ({reason}). Is PostgreSQL running?"
        )

    def unavailable(self, error: BaseException) -> StoreUnavailableError:
        """The error to raise for a failed database operation."""
        if isinstance(error, PoolTimeout):
            reason = f"no free connection within {POOL_TIMEOUT:g}s"
        else:
            reason = error_summary(error)
        return StoreUnavailableError(f"{self.key} = {self.safe_url}: database unavailable ({reason}).")

    def run(self, work: Callable[[PooledConnection], T], *, retry: bool = True) -> T:
        """Run ``work`` on a pooled autocommit connection; failures become
        :class:`StoreUnavailableError`.

        A connection that turns out broken (the server restarted, or ended the
        session) makes the pool check its other idle connections, and with
        ``retry`` the work runs once more on a fresh one: give ``retry=False``
        for work whose second run would answer differently. Work that has
        sent a COMMIT it got no answer to raises :class:`CommitUnknown` and is
        never rerun.
        """
        pool = self.pool()
        suspect = False
        while True:
            try:
                conn = self.getconn(pool, suspect=suspect)
                try:
                    return work(conn)
                except (psycopg.OperationalError, psycopg.InterfaceError):
                    if not conn.broken:
                        raise
                    if suspect or not retry:
                        self.heal(pool)
                        raise
                finally:
                    pool.putconn(conn)
            except CommitUnknown as unknown:
                self.heal(pool)
                raise StoreUnavailableError(
                    f"{self.key} = {self.safe_url}: the connection was lost while committing "
                    f"({error_summary(unknown.error)}); the write may or may not be stored, "
                    "and retrying it with the same event ids is safe."
                ) from unknown.error
            except (psycopg.OperationalError, psycopg.InterfaceError) as error:
                raise self.unavailable(error) from error
            suspect = True
            self.heal(pool)

    def getconn(
        self, pool: ConnectionPool[PooledConnection], timeout: float = POOL_TIMEOUT, *, suspect: bool = False
    ) -> PooledConnection:
        """A connection from ``pool``, failing fast when the server is unreachable.

        psycopg_pool alone would keep a caller waiting for the whole
        ``timeout`` while its reconnection attempts fail. So a caller that
        finds no idle connection, and still has none after a short wait (at
        once when ``suspect``), makes sure that the server accepts
        connections at all; the answer is shared for :data:`PROBE_TTL` seconds.
        Raise :class:`StoreUnavailableError` when it does not, and
        :class:`~psycopg_pool.PoolTimeout` when ``timeout`` passes.
        """
        with suppress(PoolTimeout):
            return pool.getconn(timeout=0.001)
        probed_at, reason = self._probe
        if reason is not None and time.monotonic() - probed_at < PROBE_TTL:
            raise self._cannot_connect(reason)
        started = time.monotonic()
        if not suspect:
            with suppress(PoolTimeout):
                return pool.getconn(timeout=min(BUSY_WAIT, timeout))
        reason = self._probe_server()
        if reason is not None:
            raise self._cannot_connect(reason)
        return pool.getconn(timeout=max(timeout - (time.monotonic() - started), 0.001))

    def _probe_server(self) -> str | None:
        """Why the server refuses connections (``None`` if it accepts them)."""
        with self._probe_lock:
            probed_at, reason = self._probe
            if time.monotonic() - probed_at >= PROBE_TTL:
                try:
                    self.connect().close()
                except psycopg.Error as error:
                    reason = error_summary(error)
                else:
                    reason = None
                self._probe = (time.monotonic(), reason)
            return reason

    def heal(self, pool: ConnectionPool[PooledConnection]) -> None:
        """Check ``pool``'s idle connections, replacing the broken ones.

        One broken connection usually means they all are (the server
        restarted): replacing them now beats failing one request for each.
        """
        with suppress(psycopg.Error):
            pool.check()

    def _create_tables(self, conn: psycopg.Connection[TupleRow]) -> None:
        relations = [name for tables in self.tables for name in tables.relations]
        schema = sql.Identifier(self.schema)
        exists = sql.SQL(
            "SELECT count(*) FROM pg_catalog.pg_class c"
            " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relname = ANY(%s)"
        )
        version_sql = sql.SQL("SELECT max(version) FROM {}").format(self.table("shimmie_schema_version"))
        try:
            row = conn.execute(exists, [self.schema, relations]).fetchone()
            if row is None or row[0] < len(relations):
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", [_DDL_LOCK_KEY])
                    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
                    for tables in self.tables:
                        for statement in tables.statements:
                            conn.execute(sql.SQL(statement).format(schema=schema))
                    conn.execute(
                        sql.SQL(
                            "INSERT INTO {0} (version) SELECT %s WHERE NOT EXISTS (SELECT 1 FROM {0})"
                        ).format(self.table("shimmie_schema_version")),
                        [SCHEMA_VERSION],
                    )
            version_row = conn.execute(version_sql).fetchone()
        except (psycopg.OperationalError, psycopg.InterfaceError) as error:
            raise self.unavailable(error) from error
        except psycopg.Error as error:
            raise StoreUnavailableError(
                f"{self.key} = {self.safe_url}: cannot create the tables in schema "
                f"{self.schema!r} ({error_summary(error)})."
            ) from error
        version = version_row[0] if version_row else None
        if version is not None and version > SCHEMA_VERSION:
            raise ConfigurationError(
                f"{self.key} = {self.safe_url}: the tables in schema {self.schema!r} are at schema "
                f"version {version}; this release of flask_shimmie knows up to {SCHEMA_VERSION}. "
                "Upgrade flask_shimmie."
            )


def _without_password(url: str) -> str:
    """``url`` with the password removed from the user info and the query."""
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    netloc = f"{userinfo.partition(':')[0]}@{hostport}" if at else hostport
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "password"]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query), parts.fragment))


PII_UPSERT = (
    "INSERT INTO {pii} (event_id, stream_id, data)"
    " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[])"
    " ON CONFLICT (event_id) DO UPDATE SET stream_id = EXCLUDED.stream_id,"
    " data = EXCLUDED.data, written_at = EXCLUDED.written_at"
)


def pii_upsert_params(records: Sequence[PiiRecord]) -> list[list[str]]:
    """The parameters of :data:`PII_UPSERT` for ``records``; the last of equal event ids wins."""
    # ON CONFLICT DO UPDATE refuses to touch one row twice in a statement.
    records = list({r.event_id: r for r in records}.values())
    return [
        [r.event_id for r in records],
        [r.stream_id for r in records],
        [r.values_json for r in records],
    ]


class PostgresPiiStore(PiiStore):
    """PII rows in ``shimmie_pii``, in a database and schema of their own.

    As the colocated store of a :class:`~flask_shimmie.stores.postgres.PostgresEventStore`
    it shares the event store's :class:`PostgresDatabase` (pass ``database``);
    the event store then owns the connections, and :meth:`close` leaves them open.
    """

    backend = "postgresql"

    def __init__(self, url: str, *, key: str, database: PostgresDatabase | None = None) -> None:
        self._owner = database is None
        self._db = database or PostgresDatabase(url, key=key, tables=[PII_TABLES])
        pii = self._db.table("shimmie_pii")
        self._sql_put = sql.SQL(PII_UPSERT).format(pii=pii)
        self._sql_get = sql.SQL("SELECT event_id, data FROM {} WHERE event_id = ANY(%s)").format(pii)
        self._sql_erase = sql.SQL("DELETE FROM {} WHERE stream_id = %s").format(pii)
        self._sql_older = sql.SQL(
            "SELECT event_id FROM {} WHERE written_at <= now() - %s * interval '1 second'"
            " ORDER BY written_at, event_id"
        ).format(pii)
        self._sql_delete = sql.SQL("DELETE FROM {} WHERE event_id = ANY(%s)").format(pii)

    def open(self) -> None:
        """Connect (or share the event store's pool) and create missing tables."""
        self._db.open()

    def close(self) -> None:
        """Close the pool, unless it belongs to the event store."""
        if self._owner:
            self._db.close()

    def describe(self) -> str:
        return self._db.describe()

    def ping(self) -> None:
        self._db.run(lambda conn: conn.execute("SELECT 1"))

    def put(self, records: Sequence[PiiRecord]) -> None:
        if records:
            params = pii_upsert_params(records)
            self._db.run(lambda conn: conn.execute(self._sql_put, params))

    def get_json(self, event_ids: Collection[str]) -> dict[str, str]:
        ids = list(set(event_ids))
        if not ids:
            return {}
        rows = self._db.run(lambda conn: conn.execute(self._sql_get, [ids]).fetchall())
        return {event_id: data for event_id, data in rows}

    def erase_stream(self, stream_id: str) -> int:
        # A rerun after a lost answer would count 0 rows.
        return self._db.run(lambda conn: conn.execute(self._sql_erase, [stream_id]).rowcount, retry=False)

    def event_ids_older_than(self, seconds: float) -> list[str]:
        rows = self._db.run(lambda conn: conn.execute(self._sql_older, [seconds]).fetchall())
        return [row[0] for row in rows]

    def delete(self, event_ids: Collection[str]) -> None:
        ids = list(set(event_ids))
        if ids:
            self._db.run(lambda conn: conn.execute(self._sql_delete, [ids]))

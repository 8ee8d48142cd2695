"""The PostgreSQL engine's database object: URL, pools, fork safety, error mapping, schema.

:class:`PostgresDatabase` turns a store URL into a libpq connection string and
a lazily opened :class:`psycopg_pool.ConnectionPool`, creates the tables (and
functions) its stores need, upgrading a schema that an older release made
(its version is kept in ``shimmie_schema_version``), and maps connection failures to
:class:`~flask_shimmie.errors.StoreUnavailableError`. A colocated PII store
shares its event store's instance, hence its pool, so
``append(write_pii=True)`` writes the PII rows in the event transaction.

JSON is kept in ``text`` columns, not ``jsonb``: reading ``jsonb`` makes the
server re-serialise every value (reads take markedly longer; see
benchmarks/RESULTS.md), and ``jsonb`` reorders object keys and
normalises numbers, so reads would not give back the dicts the memory store
gives. Nothing queries inside the JSON server-side; an ad-hoc query can still
cast with ``data::jsonb``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool, PoolTimeout

from ...errors import ConfigurationError, StoreUnavailableError
from ..process import ProcessLocal

T = TypeVar("T")

logger = logging.getLogger(__name__)

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


#: The schema version this release creates and understands: 1 had the tables;
#: 2 adds the ``shimmie_append`` function, which opening a version 1 schema creates.
SCHEMA_VERSION = 2


#: Seconds ``VACUUM FULL`` waits for its exclusive lock: while it waits, every
#: other use of the table queues behind it, so it gives up instead.
VACUUM_LOCK_TIMEOUT = 5.0


#: Seconds :meth:`PostgresDatabase.vacuum` waits for the transactions that may
#: still see rows deleted before it began (no VACUUM can remove those rows).
HORIZON_TIMEOUT = 10.0


#: Seconds between two looks at those transactions.
HORIZON_POLL = 0.05


# The next transaction id, as an ``xid`` (its low 32 bits): every transaction
# that began before it may still see the rows deleted so far.
_NEXT_XID = "SELECT (pg_snapshot_xmax(pg_current_snapshot())::text::bigint % 4294967296)::text"


# What holds a snapshot or an id older than %(xid)s, as VACUUM's horizon counts
# them: transactions of this database (autovacuum workers excepted: VACUUM
# ignores their snapshots), standbys' feedback through walsenders, prepared
# transactions and replication slots. ``age`` compares ids across wraparound.
_OLDER_THAN = """
SELECT 'process ' || pid || coalesce(' (' || state || ' since ' || xact_start || ')', '')
FROM pg_stat_activity
WHERE pid <> pg_backend_pid()
  AND (datname = current_database() OR backend_type = 'walsender')
  AND backend_type <> 'autovacuum worker'
  AND age(coalesce(backend_xmin, backend_xid)) > age(%(xid)s::xid)
UNION ALL
SELECT 'prepared transaction ' || gid FROM pg_prepared_xacts
WHERE database = current_database() AND age(transaction) > age(%(xid)s::xid)
UNION ALL
SELECT 'replication slot ' || slot_name FROM pg_replication_slots
WHERE age(xmin) > age(%(xid)s::xid)
"""


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
    """Relations and functions a store needs, and the statements that create them.

    ``statements`` are SQL templates in which ``{schema}`` stands for the
    quoted schema name; each must be idempotent (``IF NOT EXISTS``,
    ``CREATE OR REPLACE``), since opening a schema of an older version runs
    them all again.
    """

    relations: tuple[str, ...]
    statements: tuple[str, ...]
    functions: tuple[str, ...] = ()


VERSION_TABLES = TableSet(
    ("shimmie_schema_version",),
    ("CREATE TABLE IF NOT EXISTS {schema}.shimmie_schema_version (version int NOT NULL)",),
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
    # row, so writes to a fresh schema slow down within seconds. This only
    # makes scans a last resort; a query without a usable index (counting
    # events by name) still scans.
    conn.execute("SET enable_seqscan = off")
    conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
    # The same for the implicit transaction of an autocommit statement (an append is one):
    # under a stricter level its snapshot would predate the writers' lock it waits for.
    conn.execute("SET default_transaction_isolation TO 'read committed'")


def ensure_open(conn: PooledConnection) -> None:
    """Raise :class:`psycopg.OperationalError` (``conn.broken`` then true) if the server has
    already closed ``conn``; no round trip.

    A session the server ended (a restart, ``pg_terminate_backend``, a cut
    connection) leaves its last message and the end of the stream in the
    socket of the idle connection: reading what is there, twice (the message,
    then the end), finds it out before a statement is sent whose fate would
    otherwise be unknown.
    """
    for _ in range(2):
        conn.pgconn.consume_input()


class CommitUnknown(Exception):
    """Raised by work given to :meth:`PostgresDatabase.run` when a COMMIT got no answer."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def error_summary(error: BaseException) -> str:
    """The lines of a (libpq) error message, on one line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(lines) or type(error).__name__


#: Pools inherited through a fork: kept referenced so that garbage collection
#: never runs their finalisers (which would close the parent's sessions) in the child.
_INHERITED: list[ConnectionPool[PooledConnection]] = []


class _Pools:
    """One process's pools of a database, and its last look at the server."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.pool: ConnectionPool[PooledConnection] | None = None
        self.lock_pool: ConnectionPool[PooledConnection] | None = None
        self.probe_lock = threading.Lock()
        #: (when, why the server refused a connection or None) of the last check.
        self.probe: tuple[float, str | None] = (-PROBE_TTL, None)

    def abandon(self) -> None:
        _INHERITED.extend(pool for pool in (self.pool, self.lock_pool) if pool is not None)


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
        for name, value in _query_pairs(parts.query):
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
        self.conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, _query_string(rest), ""))
        try:
            given = psycopg.conninfo.conninfo_to_dict(self.conninfo)
        except psycopg.Error as error:
            raise ConfigurationError(f"{key} = {self.safe_url}: {error_summary(error)}") from None
        self.connect_kwargs: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in given:
            self.connect_kwargs["connect_timeout"] = CONNECT_TIMEOUT
        if "application_name" not in given:
            self.connect_kwargs["application_name"] = "flask_shimmie"

        self._process: ProcessLocal[_Pools] = ProcessLocal(_Pools, _Pools.abandon)

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

    def open(self) -> None:
        """Open the pool and create the missing tables; idempotent."""
        pools = self._process.get()
        with pools.lock:
            if pools.pool is not None:
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
            pools.pool = pool

    def is_open(self) -> bool:
        """Whether this process has an open pool."""
        return self._process.get().pool is not None

    def close(self) -> None:
        """Close this process's pools. The database may be opened again."""
        pools = self._process.get()
        with pools.lock:
            doomed = [pool for pool in (pools.lock_pool, pools.pool) if pool is not None]
            pools.pool = pools.lock_pool = None
        for pool in doomed:
            pool.close()

    def pool(self) -> ConnectionPool[PooledConnection]:
        """This process's pool, opened on first use."""
        pools = self._process.get()
        pool = pools.pool
        if pool is None:
            self.open()
            pool = pools.pool
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
        pools = self._process.get()
        with pools.lock:
            if pools.lock_pool is None:
                pool = self._new_pool("shimmie-locks", 0, self.pool_max_size)
                pool.open()
                pools.lock_pool = pool
            return pools.lock_pool

    def _new_pool(self, name: str, min_size: int, max_size: int) -> ConnectionPool[PooledConnection]:
        return ConnectionPool(
            self.conninfo,
            kwargs=self.connect_kwargs,
            min_size=min_size,
            max_size=max_size,
            open=False,
            configure=self._configure,
            name=f"{name}:{self.schema}",
            timeout=POOL_TIMEOUT,
        )

    def _configure(self, conn: PooledConnection) -> None:
        _configure(conn)
        # The stores name their tables with the schema; this is for everything else a pooled
        # connection runs (a projection's tables), which then lives beside them, not in public.
        conn.execute(sql.SQL("SET search_path TO {}, public").format(sql.Identifier(self.schema)))

    def connect(self, **options: Any) -> psycopg.Connection[TupleRow]:
        """A new autocommit connection of its own (e.g. for LISTEN); ``options`` add libpq parameters."""
        return psycopg.connect(self.conninfo, **{**self.connect_kwargs, **options})

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
        probed_at, reason = self._process.get().probe
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
        pools = self._process.get()
        with pools.probe_lock:
            probed_at, reason = pools.probe
            if time.monotonic() - probed_at >= PROBE_TTL:
                try:
                    self.connect().close()
                except psycopg.Error as error:
                    reason = error_summary(error)
                else:
                    reason = None
                pools.probe = (time.monotonic(), reason)
            return reason

    def vacuum(self, name: str, *, full: bool = False) -> None:
        """``VACUUM`` one of our tables (its TOAST table too), or ``VACUUM FULL`` it.

        Rows deleted before the call are removed: a row that an older
        transaction may still see is kept by every kind of VACUUM (VACUUM
        FULL copies it), so this first waits up to :data:`HORIZON_TIMEOUT`
        seconds for such transactions to end. A plain VACUUM takes no lock
        that readers or writers wait for. ``full`` rewrites the table into new
        files under an ACCESS EXCLUSIVE lock, which it waits for at most
        :data:`VACUUM_LOCK_TIMEOUT` seconds. Raises
        :class:`StoreUnavailableError` when a transaction outlives the wait,
        when the lock is not obtained, and when PostgreSQL skips the table
        (the role does not own it), which it only warns about.
        """
        self._wait_for_older_transactions(name)
        statement = sql.SQL("VACUUM FULL {}" if full else "VACUUM {}").format(self.table(name))
        lock_timeout = f"{int(VACUUM_LOCK_TIMEOUT * 1000)}ms"

        def work(conn: PooledConnection) -> list[str]:
            warnings: list[str] = []

            def note(diagnostic: psycopg.errors.Diagnostic) -> None:
                if diagnostic.severity_nonlocalized == "WARNING":
                    warnings.append(diagnostic.message_primary or "")

            conn.add_notice_handler(note)
            try:
                if full:
                    conn.execute("SELECT set_config('lock_timeout', %s, false)", [lock_timeout])
                try:
                    conn.execute(statement)
                except psycopg.errors.LockNotAvailable:
                    raise StoreUnavailableError(
                        f"{self.key} = {self.safe_url}: VACUUM FULL of {self.schema}.{name} did not "
                        f"get its exclusive lock within {VACUUM_LOCK_TIMEOUT:g}s (a transaction is "
                        "using the table); deleted rows stay deleted, but their bytes stay in its "
                        "files until a VACUUM FULL completes."
                    ) from None
                finally:
                    if full:
                        conn.execute("RESET lock_timeout")
            finally:
                conn.remove_notice_handler(note)
            return warnings

        warnings = self.run(work)
        if warnings:
            raise StoreUnavailableError(
                f"{self.key} = {self.safe_url}: VACUUM of {self.schema}.{name} did not run "
                f"({'; '.join(warnings)}); deleted rows stay deleted, but their bytes stay in its "
                "files. Vacuum the table as its owner."
            )

    def _wait_for_older_transactions(self, name: str) -> None:
        row = self.run(lambda conn: conn.execute(_NEXT_XID).fetchone())
        params = {"xid": row[0] if row else "0"}
        deadline = time.monotonic() + HORIZON_TIMEOUT
        while True:
            older = [
                str(found) for (found,) in self.run(lambda conn: conn.execute(_OLDER_THAN, params).fetchall())
            ]
            if not older:
                return
            if time.monotonic() >= deadline:
                raise StoreUnavailableError(
                    f"{self.key} = {self.safe_url}: VACUUM of {self.schema}.{name} cannot remove the "
                    f"deleted rows yet: {', '.join(older[:5])} began before they were deleted and "
                    f"was still running after {HORIZON_TIMEOUT:g}s. They stay deleted, but their "
                    "bytes stay in the table's files until a VACUUM after it ends."
                )
            time.sleep(HORIZON_POLL)

    def heal(self, pool: ConnectionPool[PooledConnection]) -> None:
        """Check ``pool``'s idle connections, replacing the broken ones.

        One broken connection usually means they all are (the server
        restarted): replacing them now beats failing one request for each.
        """
        with suppress(psycopg.Error):
            pool.check()

    def _create_tables(self, conn: psycopg.Connection[TupleRow]) -> None:
        """Create what is missing, upgrade a schema of an older version, refuse a newer one."""
        relations = [name for tables in self.tables for name in tables.relations]
        functions = [name for tables in self.tables for name in tables.functions]
        schema = sql.Identifier(self.schema)
        versions = self.table("shimmie_schema_version")
        present = sql.SQL(
            "SELECT (SELECT count(*) FROM pg_catalog.pg_class c"
            " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %(schema)s AND c.relname = ANY(%(relations)s)),"
            " (SELECT count(DISTINCT p.proname) FROM pg_catalog.pg_proc p"
            " JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace"
            " WHERE n.nspname = %(schema)s AND p.proname = ANY(%(functions)s))"
        )
        names = {"schema": self.schema, "relations": relations, "functions": functions}
        version_sql = sql.SQL("SELECT max(version) FROM {}").format(versions)
        try:
            row = conn.execute(present, names).fetchone()
            complete = row is not None and row[0] == len(relations) and row[1] == len(functions)
            version_row = conn.execute(version_sql).fetchone() if complete else None
            if not complete or version_row is None or (version_row[0] or 0) < SCHEMA_VERSION:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", [_DDL_LOCK_KEY])
                    self._create_or_upgrade(conn, schema, versions)
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

    def _create_or_upgrade(
        self, conn: psycopg.Connection[TupleRow], schema: sql.Identifier, versions: sql.Identifier
    ) -> None:
        """Under the DDL lock: run every (idempotent) statement unless the schema is newer, and
        record :data:`SCHEMA_VERSION`."""
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
        for statement in VERSION_TABLES.statements:
            conn.execute(sql.SQL(statement).format(schema=schema))
        row = conn.execute(sql.SQL("SELECT max(version) FROM {}").format(versions)).fetchone()
        found = row[0] if row else None
        if found is not None and found > SCHEMA_VERSION:
            return  # refused by the caller; a newer release's objects are left alone
        for tables in self.tables:
            for statement in tables.statements:
                conn.execute(sql.SQL(statement).format(schema=schema))
        if found is None:
            conn.execute(sql.SQL("INSERT INTO {} (version) VALUES (%s)").format(versions), [SCHEMA_VERSION])
        elif found < SCHEMA_VERSION:
            conn.execute(sql.SQL("UPDATE {} SET version = %s").format(versions), [SCHEMA_VERSION])
            logger.info(
                "%s = %s: upgraded schema %r from version %s to %s",
                self.key,
                self.safe_url,
                self.schema,
                found,
                SCHEMA_VERSION,
            )


def _without_password(url: str) -> str:
    """``url`` with the password removed from the user info and the query."""
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    netloc = f"{userinfo.partition(':')[0]}@{hostport}" if at else hostport
    query = [(k, v) for k, v in _query_pairs(parts.query) if k != "password"]
    return urlunsplit((parts.scheme, netloc, parts.path, _query_string(query), parts.fragment))


def _query_pairs(query: str) -> list[tuple[str, str]]:
    """A PostgreSQL URL's parameters, decoded as libpq does: ``%20`` is a space, ``+`` is a plus."""
    return parse_qsl(query.replace("+", "%2B"), keep_blank_values=True)


def _query_string(pairs: list[tuple[str, str]]) -> str:
    """``pairs`` as a URL query libpq reads back the same: spaces as ``%20`` (it keeps ``+`` as is)."""
    return urlencode(pairs, quote_via=quote)

"""The SQLite engine's database object: connections, fork safety, error mapping, schema.

:class:`SqliteDatabase` is how every SQLite store uses a database file: one
writer connection per process (writers take turns under a lock, and across
processes under ``BEGIN IMMEDIATE``), and a small pool of reader connections
that WAL lets read while the writer writes. The event store keeps its
colocated PII table in its own database, through the same object, so an event
and its PII commit together. Deleted rows are zeroed (``secure_delete``), and
:meth:`SqliteDatabase.truncate_wal` empties the WAL after an erasure, so no
copy of erased PII stays in the files.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager, suppress

from ...errors import ShimmieError, StoreUnavailableError
from ..process import ProcessLocal

logger = logging.getLogger(__name__)

#: The version of the tables this release creates, kept in ``shimmie_schema_version``
#: so a later release can tell which migrations to run.
SCHEMA_VERSION = 1


#: Seconds a connection waits for another process's lock before giving up.
BUSY_TIMEOUT = 30.0


#: Idle reader connections kept per database and process; more are opened on demand.
MAX_IDLE_READERS = 16


#: Seconds :meth:`SqliteDatabase.truncate_wal` keeps trying while readers hold old snapshots
#: (well within a web worker's timeout: an erasure may come from an admin request).
CHECKPOINT_TIMEOUT = 10.0


#: Seconds one checkpoint attempt waits for readers. Writers wait meanwhile, so it is short.
CHECKPOINT_ATTEMPT = 0.2


#: Seconds between two checkpoint attempts, in which writers get their turn.
CHECKPOINT_PAUSE = 0.05


#: The one-row table that records :data:`SCHEMA_VERSION` in every file the stores create.
SCHEMA_VERSION_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS shimmie_schema_version (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        version INTEGER NOT NULL
    )""",
)


# Primary result codes that mean the file cannot be reached or used right now
# (as opposed to a bug in a statement): SQLITE_PERM, SQLITE_BUSY, SQLITE_LOCKED,
# SQLITE_READONLY, SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_PROTOCOL,
# SQLITE_NOTADB.
_UNAVAILABLE_CODES = frozenset({3, 5, 6, 8, 10, 13, 14, 15, 26})


_UNAVAILABLE_MESSAGES = ("unable to open", "database is locked", "disk i/o error", "not a database")


# Connections inherited over fork(). SQLite forbids using them in the child,
# and closing them there could checkpoint or delete the parent's WAL file, so
# the child keeps them referenced (never closed, never collected) instead.
_ABANDONED: list[sqlite3.Connection] = []


def json_list(values: Collection[str]) -> str:
    """A JSON array of ``values``, for ``IN (SELECT value FROM json_each(?))``."""
    return json.dumps(list(values), ensure_ascii=False)


class _Connections:
    """One process's connections to a database file."""

    def __init__(self, database: SqliteDatabase) -> None:
        self.database = database
        self.write_lock = threading.Lock()
        self.writer: sqlite3.Connection | None = None
        self.pool_lock = threading.Lock()
        self.idle: list[sqlite3.Connection] = []
        # Every open connection, busy or idle, so close() and abandon() miss none.
        self.every: set[sqlite3.Connection] = set()
        self.closed = False

    def connect(self) -> sqlite3.Connection:
        # Readers move between threads of the pool, and close() may run in
        # another thread than the one that connected: hence check_same_thread.
        connection = sqlite3.connect(
            self.database.path,
            timeout=BUSY_TIMEOUT,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            # FULL syncs the WAL at every commit: a commit that returned
            # survives a power loss (NORMAL would only protect the file).
            connection.execute("PRAGMA synchronous=FULL")
            # Every file the stores create may hold PII (the PII table, model
            # snapshots): a delete must zero the row's bytes, not just unlink
            # them. Builds differ in their default (Debian's is ON, SQLite's OFF).
            connection.execute("PRAGMA secure_delete=ON")
        except BaseException:
            connection.close()
            raise
        with self.pool_lock:
            self.every.add(connection)
        return connection

    def check_open(self) -> None:
        # A thread that fetched this object just before close() must not
        # reconnect through it: nothing would ever close that connection.
        if self.closed:
            raise StoreUnavailableError(f"The SQLite store {self.database.path} was closed.")

    def writer_connection(self) -> sqlite3.Connection:
        """The writer; the caller holds :attr:`write_lock`."""
        self.check_open()
        if self.writer is None:
            self.writer = self.connect()
        return self.writer

    def take_reader(self) -> sqlite3.Connection:
        with self.pool_lock:
            self.check_open()
            if self.idle:
                return self.idle.pop()
        return self.connect()

    def give_back(self, connection: sqlite3.Connection) -> None:
        if connection.in_transaction:
            # A reader left inside a transaction would pin its snapshot (and the WAL) for good.
            with suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
        with self.pool_lock:
            if not self.closed and len(self.idle) < MAX_IDLE_READERS:
                self.idle.append(connection)
                return
            self.every.discard(connection)
        connection.close()

    def close(self) -> None:
        """Close the writer (after the write in flight) and idle readers; busy ones close when given back."""
        with self.write_lock, self.pool_lock:
            self.closed = True
            doomed = list(self.idle)
            if self.writer is not None:
                doomed.append(self.writer)
            self.writer = None
            self.idle.clear()
            self.every.difference_update(doomed)
        for connection in doomed:
            with suppress(sqlite3.Error):
                connection.close()

    def abandon(self) -> None:
        _ABANDONED.extend(self.every)
        self.every.clear()
        self.idle.clear()
        self.writer = None


class SqliteDatabase:
    """A SQLite file as the stores use it: schema, writer, readers, errors.

    ``schema`` lists the ``CREATE ... IF NOT EXISTS`` statements that
    :meth:`open` runs. Nothing connects before :meth:`open`; a process forked
    after it reconnects on first use.
    """

    def __init__(self, path: str, url: str, schema: Sequence[str]) -> None:
        self.path = path
        self.url = url
        self.schema = tuple(SCHEMA_VERSION_SCHEMA) + tuple(schema)
        self._state_lock = threading.Lock()
        self._open = False
        self._connections: ProcessLocal[_Connections] = ProcessLocal(
            lambda: _Connections(self), _Connections.abandon
        )

    def open(self) -> None:
        """Connect, switch the file to WAL, and create the missing tables (idempotent)."""
        with self._state_lock:
            if self._open:
                return
            self._open = True
            try:
                self._prepare()
            except BaseException:
                self._open = False
                self._close_connections()
                raise

    def _prepare(self) -> None:
        connections = self._connections.get()
        # WAL cannot be entered inside a transaction; the mode is kept in the
        # file, so only the first opener of a new file changes anything.
        # While another process switches it, SQLite answers "database is
        # locked" at once instead of calling the busy handler: hence the retries.
        deadline = time.monotonic() + BUSY_TIMEOUT
        with connections.write_lock, self._errors():
            while True:
                try:
                    (mode,) = connections.writer_connection().execute("PRAGMA journal_mode=WAL").fetchone()
                    break
                except sqlite3.OperationalError as error:
                    if not _is_busy(error) or time.monotonic() > deadline:
                        raise
                time.sleep(0.01)
        if str(mode).lower() != "wal":
            logger.warning(
                "%s cannot use WAL (journal mode %s): readers will wait for writers.", self.path, mode
            )
        with self.writing() as connection:
            self._create_schema(connection)

    def _create_schema(self, connection: sqlite3.Connection) -> None:
        # Runs under BEGIN IMMEDIATE, so processes starting together on an
        # empty file create the tables one after the other.
        for statement in self.schema:
            connection.execute(statement)
        connection.execute(
            "INSERT INTO shimmie_schema_version (id, version) VALUES (1, ?) ON CONFLICT (id) DO NOTHING",
            (SCHEMA_VERSION,),
        )
        (version,) = connection.execute("SELECT version FROM shimmie_schema_version WHERE id = 1").fetchone()
        if version > SCHEMA_VERSION:
            raise ShimmieError(
                f"{self.path} holds flask_shimmie schema version {version}, newer than this release "
                f"understands ({SCHEMA_VERSION}); upgrade flask_shimmie."
            )

    def close(self) -> None:
        """Close every connection of this process; :meth:`open` may be called again."""
        with self._state_lock:
            self._open = False
            self._close_connections()

    def _close_connections(self) -> None:
        connections = self._connections.pop()
        if connections is not None:
            connections.close()

    def describe(self) -> str:
        """The database's URL (SQLite URLs hold no credentials)."""
        return self.url

    def ping(self) -> None:
        """Raise :class:`StoreUnavailableError` if the file cannot be read."""
        with self.reading() as connection:
            connection.execute("SELECT version FROM shimmie_schema_version").fetchall()

    def require_open(self) -> None:
        """Raise :class:`StoreUnavailableError` unless :meth:`open` was called (and not :meth:`close`)."""
        if not self._open:
            raise StoreUnavailableError(f"The SQLite store {self.path} is not open; call open() first.")

    def _live_connections(self) -> _Connections:
        self.require_open()
        return self._connections.get()

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A reader connection in autocommit mode: each statement reads one snapshot.

        Fetch results completely inside the block: an unfinished statement
        would keep its snapshot, and the WAL could not be checkpointed.
        """
        connections = self._live_connections()
        with self._errors():
            connection = connections.take_reader()
        try:
            with self._errors():
                yield connection
        finally:
            connections.give_back(connection)

    @contextmanager
    def writing(self) -> Iterator[sqlite3.Connection]:
        """The writer inside ``BEGIN IMMEDIATE``, committed at the end of the block.

        Any exception rolls the transaction back, so nothing of it is written;
        sqlite3 errors that mean the file is out of reach are raised as
        :class:`StoreUnavailableError`.
        """
        connections = self._live_connections()
        with connections.write_lock, self._errors():
            connection = connections.writer_connection()
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    with suppress(sqlite3.Error):
                        connection.execute("ROLLBACK")
                raise

    def truncate_wal(self) -> None:
        """Copy every WAL frame into the file and truncate the WAL to zero bytes.

        The WAL keeps every version of a page that was written, deleted rows
        included, until new frames overwrite it; ``secure_delete`` only zeroes
        the latest version. A reader whose snapshot still reads from the WAL
        keeps it from being emptied: each attempt waits for readers
        :data:`CHECKPOINT_ATTEMPT` seconds (writers wait meanwhile, in other
        processes too), then gives writers a turn and tries again, for up to
        :data:`CHECKPOINT_TIMEOUT` seconds. Raises :class:`StoreUnavailableError`
        when the WAL could not be emptied by then; a file not in WAL mode has
        nothing to empty.
        """
        connections = self._live_connections()
        deadline = time.monotonic() + CHECKPOINT_TIMEOUT
        while True:
            with connections.write_lock, self._errors():
                connection = connections.writer_connection()
                connection.execute(f"PRAGMA busy_timeout={int(CHECKPOINT_ATTEMPT * 1000)}")
                try:
                    busy, frames, copied = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                finally:
                    connection.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")
            if not busy:
                return
            if time.monotonic() >= deadline:
                raise StoreUnavailableError(
                    f"The WAL of the SQLite database {self.path} could not be emptied within "
                    f"{CHECKPOINT_TIMEOUT:g}s ({copied} of {frames} frames copied): a reader or "
                    "writer held the database all along. Rows deleted before stay deleted, but "
                    f"their old bytes remain in {self.path}-wal until a checkpoint completes."
                )
            time.sleep(CHECKPOINT_PAUSE)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as error:
            if _is_unavailable(error):
                raise StoreUnavailableError(
                    f"The SQLite database {self.path} cannot be used: {error}"
                ) from error
            raise


def _is_busy(error: sqlite3.Error) -> bool:
    code = getattr(error, "sqlite_errorcode", None)  # Python >= 3.11
    if isinstance(code, int):
        return code & 0xFF == 5  # SQLITE_BUSY
    return "database is locked" in str(error).lower()


def _is_unavailable(error: sqlite3.Error) -> bool:
    code = getattr(error, "sqlite_errorcode", None)  # Python >= 3.11
    if isinstance(code, int):
        return code & 0xFF in _UNAVAILABLE_CODES
    message = str(error).lower()
    return isinstance(error, sqlite3.OperationalError) and any(m in message for m in _UNAVAILABLE_MESSAGES)

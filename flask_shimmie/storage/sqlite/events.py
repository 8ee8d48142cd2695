"""The SQLite event store (``sqlite:///events.db``): one file, shared by the processes of one host.

Writers take turns: threads under a lock around the process's one writer
connection, processes under ``BEGIN IMMEDIATE``. Inside that transaction the
store reads what :class:`~flask_shimmie.storage.planner.AppendPlanner` needs and
inserts its rows, so positions are gap-free and the checks see every commit.
The file runs in WAL mode, so readers (a pool of connections) never wait for
the writer, and with ``synchronous=FULL``, so a commit that returned survives
a power loss. Another process's events are noticed by polling the last
position; stream locks are byte-range locks on a ``<file>-locks`` sidecar.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from datetime import datetime, timezone
from typing import Any

from ...errors import ObjectLockedError, ShimmieError, StoreUnavailableError
from ..codec import ROW_COLUMNS, decode_rows, encode_pii_fields
from ..interface import AppendBatch, AppendResult, EventStore, PiiRecord, Snapshot
from ..planner import AppendPlanner, batch_event_ids, batch_stream_ids, utc_now
from ..process import ProcessLocal
from ..threads import PositionSignal
from .database import SqliteDatabase, json_list
from .locks import HoldsLockFile, lock_offset, writer_gate
from .pii import PII_SCHEMA, SqlitePiiStore
from .subscriptions import SUBSCRIPTIONS_SCHEMA, SqliteSubscriptionStore

#: The events table; the event store also creates :data:`~flask_shimmie.storage.sqlite.pii.PII_SCHEMA`
#: and :data:`~flask_shimmie.storage.sqlite.subscriptions.SUBSCRIPTIONS_SCHEMA`.
EVENTS_SCHEMA = (
    # recorded_at is ISO 8601 text in UTC with microseconds: exact, sortable,
    # and readable in the sqlite3 shell.
    """CREATE TABLE IF NOT EXISTS shimmie_events (
        sequence_num INTEGER PRIMARY KEY,
        stream_id TEXT NOT NULL,
        stream_version INTEGER NOT NULL,
        event_id TEXT NOT NULL UNIQUE,
        event_name TEXT NOT NULL,
        data TEXT NOT NULL,
        meta TEXT NOT NULL,
        recorded_at TEXT NOT NULL,
        schema_version INTEGER NOT NULL,
        pii_fields TEXT NULL,
        UNIQUE (stream_id, stream_version)
    )""",
    """CREATE TABLE IF NOT EXISTS shimmie_snapshots (
        model TEXT PRIMARY KEY,
        position INTEGER NOT NULL,
        version INTEGER NOT NULL,
        state TEXT NOT NULL,
        taken_at TEXT NOT NULL
    )""",
)

#: Seconds between two looks at the file for other processes' events.
POLL_INTERVAL = 0.05

#: Seconds between two tries at another process's stream lock.
LOCK_POLL_INTERVAL = 0.005

_COLUMNS = ", ".join(ROW_COLUMNS)
_INSERT = f"INSERT INTO shimmie_events ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_IN_LIST = "IN (SELECT value FROM json_each(?))"


class _ProcessState(HoldsLockFile):
    """What the store keeps per process besides connections."""

    def __init__(self) -> None:
        super().__init__()
        self.signal = PositionSignal()
        self.polled_at = float("-inf")
        #: The last position this process's own commits reach, set just before
        #: each COMMIT: a poll that reads a position up to it has learnt of
        #: nothing another process wrote that this process's writers do not
        #: apply themselves (they catch up to their own events).
        self.local_upto = 0


def _forget(state: _ProcessState) -> None:
    # The inherited lock file belongs to the inherited registry, which the
    # child drops on its own.
    state.lock_file = None


def _encode_time(moment: datetime) -> str:
    # A naive time (only an import can bring one) is taken as UTC, as stored
    # times are, rather than as this host's local time.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


class SqliteEventStore(EventStore):
    """Events in a SQLite file (``sqlite:///path.db``), safe for several processes on one host.

    ``path`` is the database file; ``url`` is what :meth:`describe` shows.
    The colocated PII store keeps its table in the same file.
    """

    backend = "sqlite"
    supports_group_commit = True
    needs_follower = True

    def __init__(self, path: str, *, url: str) -> None:
        self.path = path
        self.url = url
        self.lock_path = f"{os.path.realpath(path)}-locks"
        self._db = SqliteDatabase(path, url, EVENTS_SCHEMA + PII_SCHEMA + SUBSCRIPTIONS_SCHEMA)
        self._pii = SqlitePiiStore(path, url=url, database=self._db)
        self._subscriptions = SqliteSubscriptionStore(self._db, self.lock_path)
        self._process: ProcessLocal[_ProcessState] = ProcessLocal(_ProcessState, _forget)

    def open(self) -> None:
        """Connect, and create the missing tables, the PII table included (idempotent)."""
        self._db.open()

    def close(self) -> None:
        """Close the connections and the lock file (and the subscriptions' leases); it may be reopened."""
        self._subscriptions.close()
        state = self._process.pop()
        if state is not None:
            state.release()
        self._db.close()

    def describe(self) -> str:
        return self._db.describe()

    def ping(self) -> None:
        self._db.ping()

    def append_batches(
        self, batches: Sequence[AppendBatch], *, write_pii: bool = False
    ) -> list[AppendResult | ShimmieError]:
        if not batches:
            return []
        stream_ids = batch_stream_ids(batches)
        event_ids = batch_event_ids(batches)
        self._db.require_open()
        state = self._process.get()
        with writer_gate(state.lock_file_for(self.lock_path)):
            # This process's writers take turns here, so local_upto is theirs alone to move.
            local_before = state.local_upto
            try:
                with self._db.writing() as connection:
                    outcomes, last_planned = self._append_in(
                        connection, batches, stream_ids, event_ids, write_pii
                    )
                    # Before the COMMIT: a poll may read the new position as soon as it is committed.
                    state.local_upto = max(local_before, last_planned)
            except BaseException:
                state.local_upto = local_before
                raise
        state.signal.advance(last_planned, local=True)
        return outcomes

    def _append_in(
        self,
        connection: sqlite3.Connection,
        batches: Sequence[AppendBatch],
        stream_ids: Collection[str],
        event_ids: Collection[str],
        write_pii: bool,
    ) -> tuple[list[AppendResult | ShimmieError], int]:
        """Plan and insert ``batches`` in the open write transaction; return outcomes, last position."""
        last, versions, any_known = self._write_state(connection, stream_ids, event_ids)
        known = []
        if any_known:
            known = connection.execute(
                f"SELECT {_COLUMNS} FROM shimmie_events WHERE event_id {_IN_LIST}",
                (json_list(event_ids),),
            ).fetchall()
        planner = AppendPlanner(last, versions, decode_rows(known, self.parse_time))
        outcomes = [planner.plan(batch) for batch in batches]
        if planner.rows:
            connection.executemany(
                _INSERT,
                [
                    (
                        row.sequence_num,
                        row.pending.stream_id,
                        row.stream_version,
                        row.pending.event_id,
                        row.pending.event_name,
                        row.pending.data_json,
                        row.pending.meta_json,
                        _encode_time(row.recorded_at),
                        row.pending.schema_version,
                        encode_pii_fields(row.pending.pii_fields),
                    )
                    for row in planner.rows
                ],
            )
        if write_pii:
            pii = [
                PiiRecord(row.pending.event_id, row.pending.stream_id, row.pending.pii_json)
                for row in planner.rows
                if row.pending.pii_json is not None
            ]
            if pii:
                SqlitePiiStore.put_in(connection, pii)
        return outcomes, planner.last_sequence_num

    @staticmethod
    def _write_state(
        connection: sqlite3.Connection, stream_ids: Collection[str], event_ids: Collection[str]
    ) -> tuple[int, dict[str, int], bool]:
        """In one statement: the last position, the streams' versions, whether any id is stored.

        Every statement costs a round through sqlite3, and a write holds the
        lock meanwhile; one stream and one event (the usual write) take the
        plain indexed form.
        """
        if len(stream_ids) == 1 and len(event_ids) == 1:
            (stream_id,) = stream_ids
            last, version, known = connection.execute(
                "SELECT (SELECT coalesce(max(sequence_num), 0) FROM shimmie_events),"
                " (SELECT max(stream_version) FROM shimmie_events WHERE stream_id = ?),"
                " EXISTS (SELECT 1 FROM shimmie_events WHERE event_id = ?)",
                (stream_id, next(iter(event_ids))),
            ).fetchone()
            return last, ({stream_id: version} if version else {}), bool(known)
        last, versions, known = connection.execute(
            "SELECT (SELECT coalesce(max(sequence_num), 0) FROM shimmie_events),"
            " (SELECT json_group_object(stream_id, version) FROM (SELECT stream_id,"
            f"  max(stream_version) AS version FROM shimmie_events WHERE stream_id {_IN_LIST}"
            "  GROUP BY stream_id)),"
            f" EXISTS (SELECT 1 FROM shimmie_events WHERE event_id {_IN_LIST})",
            (json_list(stream_ids), json_list(event_ids)),
        ).fetchone()
        return last, json.loads(versions) if versions else {}, bool(known)

    @staticmethod
    def _versions(connection: sqlite3.Connection, stream_ids: Collection[str]) -> dict[str, int]:
        if not stream_ids:
            return {}
        rows = connection.execute(
            "SELECT stream_id, max(stream_version) FROM shimmie_events "
            f"WHERE stream_id {_IN_LIST} GROUP BY stream_id",
            (json_list(stream_ids),),
        ).fetchall()
        return {stream_id: version for stream_id, version in rows}

    parse_time = staticmethod(datetime.fromisoformat)

    def read_rows(
        self,
        after: int = 0,
        limit: int | None = None,
        *,
        stream_ids: Collection[str] | None = None,
        event_names: Collection[str] | None = None,
    ) -> list[Any]:
        if (
            (limit is not None and limit <= 0)
            or (stream_ids is not None and not stream_ids)
            or (event_names is not None and not event_names)
        ):
            return []
        clauses = ["sequence_num > ?"]
        params: list[object] = [max(after, 0)]
        if stream_ids is not None:
            clauses.append(f"stream_id {_IN_LIST}")
            params.append(json_list(set(stream_ids)))
        if event_names is not None:
            clauses.append(f"event_name {_IN_LIST}")
            params.append(json_list(set(event_names)))
        params.append(-1 if limit is None else limit)
        query = (
            f"SELECT {_COLUMNS} FROM shimmie_events WHERE {' AND '.join(clauses)} "
            "ORDER BY sequence_num LIMIT ?"
        )
        with self._db.reading() as connection:
            return connection.execute(query, params).fetchall()

    def last_sequence_num(self) -> int:
        with self._db.reading() as connection:
            (last,) = connection.execute(
                "SELECT coalesce(max(sequence_num), 0) FROM shimmie_events"
            ).fetchone()
        state = self._process.get()
        state.signal.advance(last, local=last <= state.local_upto)
        return int(last)

    def stream_versions(self, stream_ids: Collection[str]) -> dict[str, int]:
        if not stream_ids:
            return {}
        with self._db.reading() as connection:
            versions = self._versions(connection, set(stream_ids))
        return {stream_id: versions.get(stream_id, 0) for stream_id in stream_ids}

    def existing_event_ids(self, event_ids: Collection[str]) -> set[str]:
        if not event_ids:
            return set()
        with self._db.reading() as connection:
            rows = connection.execute(
                f"SELECT event_id FROM shimmie_events WHERE event_id {_IN_LIST}",
                (json_list(set(event_ids)),),
            ).fetchall()
        return {event_id for (event_id,) in rows}

    def count_by_event_name(self) -> dict[str, int]:
        with self._db.reading() as connection:
            rows = connection.execute(
                "SELECT event_name, count(*) FROM shimmie_events GROUP BY event_name"
            ).fetchall()
        return {name: count for name, count in rows}

    def count_streams(self) -> int:
        with self._db.reading() as connection:
            (count,) = connection.execute("SELECT count(DISTINCT stream_id) FROM shimmie_events").fetchone()
        return int(count)

    def lock_stream(self, stream_id: str, timeout: float) -> AbstractContextManager[None]:
        """Hold ``stream_id`` against the other threads and processes using this file.

        Raises :class:`ObjectLockedError` after ``timeout`` seconds, and
        :class:`StoreUnavailableError` when the store is not open.
        """
        return self._hold(stream_id, timeout)

    @contextmanager
    def _hold(self, stream_id: str, timeout: float) -> Iterator[None]:
        deadline = time.monotonic() + max(timeout, 0)
        self._db.require_open()
        lock_file = self._process.get().lock_file_for(self.lock_path)
        offset = lock_offset(stream_id)
        with lock_file.threads.hold(stream_id, timeout):
            while True:
                try:
                    fcntl.lockf(lock_file.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
                    break
                except OSError as error:
                    if error.errno not in (errno.EACCES, errno.EAGAIN):
                        raise StoreUnavailableError(
                            f"Cannot lock {stream_id!r} in {lock_file.path}: {error}"
                        ) from error
                if time.monotonic() >= deadline:
                    raise ObjectLockedError(stream_id, timeout)
                time.sleep(LOCK_POLL_INTERVAL)
            try:
                yield
            finally:
                # Fails only when close() already closed the file, which dropped the lock.
                with suppress(OSError):
                    fcntl.lockf(lock_file.fd, fcntl.LOCK_UN, 1, offset)

    def wait_for_events(self, after: int, timeout: float, *, others_only: bool = False) -> int:
        deadline = time.monotonic() + max(timeout, 0)
        state = self._process.get()
        signal = state.signal
        while True:
            self._poll(state)
            if (signal.others_position if others_only else signal.position) > after:
                return signal.position
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return signal.position
            # This process's commits wake the wait at once (unless others_only);
            # other processes' are seen at the next poll.
            signal.wait_past(after, min(POLL_INTERVAL, remaining), others_only=others_only)

    def _poll(self, state: _ProcessState) -> None:
        # However many threads wait, the file is read at most once per interval;
        # reading it advances the signal.
        now = time.monotonic()
        with state.guard:
            stale = now - state.polled_at >= POLL_INTERVAL
            if stale:
                state.polled_at = now
        if stale:
            self.last_sequence_num()

    def save_snapshots(self, snapshots: Sequence[Snapshot]) -> None:
        taken_at = utc_now().isoformat()
        with self._db.writing() as connection:
            connection.executemany(
                "INSERT OR REPLACE INTO shimmie_snapshots (model, position, version, state, taken_at) "
                "VALUES (?, ?, ?, ?, ?)",
                [(s.model, s.position, s.version, s.state_json, taken_at) for s in snapshots],
            )

    def load_snapshots(self) -> list[Snapshot]:
        with self._db.reading() as connection:
            rows = connection.execute(
                "SELECT model, position, version, state FROM shimmie_snapshots"
            ).fetchall()
        return [Snapshot(*row) for row in rows]

    def delete_snapshots(self) -> int:
        with self._db.writing() as connection:
            return connection.execute("DELETE FROM shimmie_snapshots").rowcount

    def purge_residue(self, *, vacuum: bool = False) -> None:
        """Empty the WAL, which still holds deleted snapshots and colocated PII rows."""
        self._db.truncate_wal()

    def colocated_pii_store(self) -> SqlitePiiStore:
        return self._pii

    def subscription_store(self) -> SqliteSubscriptionStore:
        return self._subscriptions

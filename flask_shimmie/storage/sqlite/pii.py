"""The SQLite PII store: the ``shimmie_pii`` table, in a file of its own or beside the events."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Collection, Sequence

from ..interface import PiiRecord, PiiStore
from .database import SqliteDatabase, json_list

#: The PII table, in a PII store's own file or beside the events (colocated).
PII_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS shimmie_pii (
        event_id TEXT PRIMARY KEY,
        stream_id TEXT NOT NULL,
        data TEXT NOT NULL,
        written_at REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS shimmie_pii_stream_id ON shimmie_pii (stream_id)",
)


class SqlitePiiStore(PiiStore):
    """PII rows in a SQLite file, in the ``shimmie_pii`` table.

    Built from a URL on its own, it owns its database. The SQLite event store
    builds one on its own database (``database=``) as its colocated PII store;
    that one leaves opening and closing the connections to the event store.
    """

    backend = "sqlite"

    def __init__(self, path: str, *, url: str, database: SqliteDatabase | None = None) -> None:
        self.path = path
        self.url = url
        self._owns_database = database is None
        self._db = database if database is not None else SqliteDatabase(path, url, PII_SCHEMA)

    def open(self) -> None:
        """Connect, and create the missing tables (idempotent)."""
        self._db.open()

    def close(self) -> None:
        """Release the connections (a colocated store leaves that to its event store)."""
        if self._owns_database:
            self._db.close()

    def describe(self) -> str:
        return self._db.describe()

    def ping(self) -> None:
        self._db.ping()

    def put(self, records: Sequence[PiiRecord]) -> None:
        if not records:
            return
        with self._db.writing() as connection:
            self.put_in(connection, records)

    @staticmethod
    def put_in(connection: sqlite3.Connection, records: Sequence[PiiRecord]) -> None:
        """Write ``records`` in the caller's transaction on ``connection``."""
        now = time.time()
        connection.executemany(
            "INSERT INTO shimmie_pii (event_id, stream_id, data, written_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (event_id) DO UPDATE SET "
            "stream_id = excluded.stream_id, data = excluded.data, written_at = excluded.written_at",
            [(record.event_id, record.stream_id, record.values_json, now) for record in records],
        )

    def get_json(self, event_ids: Collection[str]) -> dict[str, str]:
        if not event_ids:
            return {}
        with self._db.reading() as connection:
            rows = connection.execute(
                "SELECT event_id, data FROM shimmie_pii WHERE event_id IN (SELECT value FROM json_each(?))",
                (json_list(set(event_ids)),),
            ).fetchall()
        return {event_id: data for event_id, data in rows}

    def erase_stream(self, stream_id: str) -> int:
        with self._db.writing() as connection:
            return connection.execute("DELETE FROM shimmie_pii WHERE stream_id = ?", (stream_id,)).rowcount

    def purge_residue(self, *, vacuum: bool = False) -> None:
        """Empty the WAL, the last place that holds deleted PII (``secure_delete`` zeroed the rest)."""
        self._db.truncate_wal()

    def event_ids_older_than(self, seconds: float) -> list[str]:
        with self._db.reading() as connection:
            rows = connection.execute(
                "SELECT event_id FROM shimmie_pii WHERE written_at <= ?", (time.time() - seconds,)
            ).fetchall()
        return [event_id for (event_id,) in rows]

    def delete(self, event_ids: Collection[str]) -> None:
        if not event_ids:
            return
        with self._db.writing() as connection:
            connection.execute(
                "DELETE FROM shimmie_pii WHERE event_id IN (SELECT value FROM json_each(?))",
                (json_list(set(event_ids)),),
            )

"""The PostgreSQL PII store: ``shimmie_pii``, in a database of its own or beside the events."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from psycopg import sql

from ..interface import PiiRecord, PiiStore
from .database import PostgresDatabase, TableSet

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

    def purge_residue(self, *, vacuum: bool = False) -> None:
        """VACUUM ``shimmie_pii``; with ``vacuum``, VACUUM FULL (see :meth:`Backend.purge_residue`).

        A plain VACUUM compacts each page it prunes, which overwrites a
        deleted row with the rows stored after it on the page; the bytes of a
        row stored last on its page, or of rows that filled whole pages,
        stay in the free space until new rows overwrite them. VACUUM FULL
        copies the live rows into new files and drops the old ones.
        """
        self._db.vacuum("shimmie_pii", full=vacuum)

    def event_ids_older_than(self, seconds: float) -> list[str]:
        rows = self._db.run(lambda conn: conn.execute(self._sql_older, [seconds]).fetchall())
        return [row[0] for row in rows]

    def delete(self, event_ids: Collection[str]) -> None:
        ids = list(set(event_ids))
        if ids:
            self._db.run(lambda conn: conn.execute(self._sql_delete, [ids]))

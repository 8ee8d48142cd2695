"""Floors: what the bare database driver does alone, the ceiling of a scenario's ratio.

Scenario 1 on SQLite and PostgreSQL pays one synced commit per append on both
sides. :func:`sqlite_commits` and :func:`postgres_commits` do nothing else: one
``INSERT`` of an event-sized row and one ``COMMIT`` per call, through the plain
driver, with the durability both libraries run with. Their rate over
eventsourcing's is the highest ratio that *any* library could reach in
scenario 1 on this machine.

Scenario 4 reads every stored row; :func:`fetch_rate` only fetches them (the
same columns and pages as our replay), so its rate over eventsourcing's replay
is the ceiling of the replay ratio.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from flask_shimmie.storage.codec import ROW_COLUMNS

from .backends import check_sqlite_durability
from .harness import Operation, Worker

FLOOR_SCENARIO = "1f floor: bare driver commit"

_TABLE = (
    "CREATE TABLE IF NOT EXISTS floor_events (sequence_num {serial} PRIMARY KEY, stream_id TEXT NOT NULL, "
    "stream_version INTEGER NOT NULL, event_id TEXT NOT NULL UNIQUE, data TEXT NOT NULL, "
    "UNIQUE (stream_id, stream_version))"
)
_DATA = '{"name":"bench","n":1}'
_INSERT = "INSERT INTO floor_events (stream_id, stream_version, event_id, data) VALUES ({0}, 1, {0}, {0})"


def sqlite_commits(path: str) -> Worker:
    """One ``BEGIN IMMEDIATE; INSERT; COMMIT`` per call (WAL, ``synchronous=FULL``)."""

    @contextmanager
    def worker() -> Iterator[Operation]:
        connection = sqlite3.connect(path, isolation_level=None, timeout=30)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
            check_sqlite_durability(connection, "the bare driver")
            connection.execute(_TABLE.format(serial="INTEGER"))

            def operation() -> int:
                connection.execute("BEGIN IMMEDIATE")
                connection.execute(_INSERT.format("?"), (str(uuid.uuid4()), str(uuid.uuid4()), _DATA))
                connection.execute("COMMIT")
                return 1

            yield operation
        finally:
            connection.close()

    return worker


def postgres_commits(url: str, schema: str) -> Worker:
    """One ``INSERT`` in its own transaction per call (the server's ``synchronous_commit``)."""

    @contextmanager
    def worker() -> Iterator[Operation]:
        import psycopg
        from psycopg import sql

        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
            connection.execute(_TABLE.format(serial="BIGSERIAL"))
            insert = _INSERT.format("%s")

            def operation() -> int:
                # autocommit: the statement is its own transaction, committed (and synced) on return.
                connection.execute(insert, (str(uuid.uuid4()), str(uuid.uuid4()), _DATA))
                return 1

            yield operation

    return worker


REPLAY_FLOOR_SCENARIO = "4f floor: bare driver fetch"

#: A page of every column a replay reads, in the stores' order.
_PAGE_QUERY = (
    f"SELECT {', '.join(ROW_COLUMNS)} FROM shimmie_events WHERE sequence_num > {{0}} "
    "ORDER BY sequence_num LIMIT {0}"
)


def fetch_rate(store_url: str, total: int, page: int = 1000) -> float:
    """Rows per second the bare driver fetches from our store at ``store_url``: replay without Python work.

    Every column a replay reads, in pages of ``page`` rows as our replay reads
    them, and nothing else: no JSON decoding, no event objects, no model.
    """
    start = time.perf_counter()
    if store_url.startswith("sqlite:///"):
        connection = sqlite3.connect(store_url[len("sqlite:///") :])
        query = _PAGE_QUERY.format("?")
        try:
            fetched = _fetch_pages(lambda after: connection.execute(query, (after, page)).fetchall())
        finally:
            connection.close()
    else:
        import psycopg
        from psycopg import sql

        parts = urlsplit(store_url)
        schema = parse_qs(parts.query)["schema"][0]
        url = urlunsplit(parts._replace(query=""))
        with psycopg.connect(url, autocommit=True) as pg:
            pg.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
            cursor = pg.cursor(binary=True)
            query = _PAGE_QUERY.format("%s")
            fetched = _fetch_pages(lambda after: cursor.execute(query, (after, page)).fetchall())
    seconds = time.perf_counter() - start
    if fetched != total:
        raise RuntimeError(f"the bare driver fetched {fetched} rows, expected {total}")
    return total / seconds


def _fetch_pages(fetch: Callable[[int], list[Any]]) -> int:
    count = after = 0
    while True:
        rows = fetch(after)
        if not rows:
            return count
        count += len(rows)
        after = rows[-1][0]

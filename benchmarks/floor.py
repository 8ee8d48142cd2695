"""The floor of a durable single append: the bare driver committing one row per call.

Scenario 1 on SQLite and PostgreSQL pays one synced commit per append on both
sides. This worker does nothing else: one ``INSERT`` of an event-sized row and
one ``COMMIT`` per call, through the plain driver, with the durability both
libraries run with. Its rate over eventsourcing's is the highest ratio that
*any* library could reach in scenario 1 on this machine: the ceiling the
1.5× target is measured against.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

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

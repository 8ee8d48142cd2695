"""Backends for the PII, schema, upcasting and bad-input tests: fresh databases, read raw.

:class:`Backend` is one backend of :data:`tests.backends.BACKENDS` for one test. It hands out
store URLs (a file under ``tmp_path`` for SQLite, a schema of its own for PostgreSQL, dropped
after the test) and reads what the stores really hold, behind the stack's back: the raw rows of
``shimmie_events`` and of every ``shimmie_pii`` table (for memory, the stores' internal rows).

The fixtures that hand these out live in ``tests/conftest.py``: ``pii_backend`` (every backend),
``durable_pii_backend`` (SQLite and PostgreSQL), ``made_apps`` and ``make_pii_app``, which builds
Flask apps on a stack and shuts every one down after the test, before the PostgreSQL schemas are
dropped (:func:`fresh_backend`).
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_shimmie import ShimmieStack
from flask_shimmie.state import AppState
from flask_shimmie.storage.memory import MemoryEventStore, MemoryPiiStore
from tests.backends import FreshDatabases, postgres_base_url, require_backend

#: Where the PII goes: beside the events (``SHIMMIE_PII_STORE=None``) or in a store of its own.
PLACEMENTS = [pytest.param("colocated", id="colocated"), pytest.param("separate", id="separate")]

#: The columns a PII row may have: nothing but the event's id, its stream, the values, a timestamp.
PII_COLUMNS = {"event_id", "stream_id", "data", "written_at"}


@dataclass
class Backend:
    """One backend for one test: its store URLs and raw access to what they hold."""

    name: str
    tmp_path: Path
    databases: FreshDatabases = field(init=False)
    event_url: str = ""
    pii_url: str = ""

    def __post_init__(self) -> None:
        self.databases = FreshDatabases(self.name, self.tmp_path)
        self.event_url = self.fresh_url("events")
        self.pii_url = self.fresh_url("pii")

    @property
    def durable(self) -> bool:
        return self.name != "memory"

    def fresh_url(self, label: str) -> str:
        """A URL naming a new, empty database of this backend (dropped after the test)."""
        return self.databases.url(f"{label}-{uuid.uuid4().hex[:8]}")

    def config(self, placement: str = "colocated") -> dict[str, Any]:
        """``SHIMMIE_*`` config for ``placement``: ``colocated``, ``separate`` or ``off``."""
        pii: str | bool | None = {"colocated": None, "separate": self.pii_url, "off": False}[placement]
        return {"SHIMMIE_EVENT_STORE": self.event_url, "SHIMMIE_PII_STORE": pii}

    # -- raw reads ------------------------------------------------------------------------------

    def _sqlite_rows(self, url: str, table: str) -> list[dict[str, Any]]:
        path = url.split("://", 1)[1][1:]
        if not Path(path).exists():
            return []
        connection = sqlite3.connect(path)
        try:
            connection.row_factory = sqlite3.Row
            found = connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
            ).fetchone()
            if found is None:
                return []
            return [dict(row) for row in connection.execute(f"SELECT * FROM {table}")]
        finally:
            connection.close()

    def _postgres_rows(self, url: str, table: str) -> list[dict[str, Any]]:
        import psycopg
        from psycopg import sql
        from psycopg.rows import dict_row

        schema = url.rsplit("schema=", 1)[1]
        with psycopg.connect(postgres_base_url(), connect_timeout=5, row_factory=dict_row) as conn:
            exists = conn.execute(
                "SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = %s",
                (schema, table),
            ).fetchone()
            if exists is None:
                return []
            query = sql.SQL("SELECT * FROM {}").format(sql.Identifier(schema, table))
            return [dict(row) for row in conn.execute(query)]

    def _rows(self, url: str, table: str) -> list[dict[str, Any]]:
        if self.name == "sqlite":
            return self._sqlite_rows(url, table)
        return self._postgres_rows(url, table)

    def raw_event_rows(self, app: Flask) -> list[dict[str, Any]]:
        """Every row of the event store, every column, as stored."""
        if self.name == "memory":
            store = _state(app).event_store
            assert isinstance(store, MemoryEventStore)
            names = ("sequence_num", "stream_id", "stream_version", "event_id", "event_name", "data", "meta")
            names += ("recorded_at", "schema_version", "pii_fields")
            return [dict(zip(names, row, strict=True)) for row in store._rows]
        return self._rows(self.event_url, "shimmie_events")

    def raw_pii_rows(self, app: Flask) -> list[dict[str, Any]]:
        """Every PII row of every table the app could have written PII to (both databases)."""
        if self.name == "memory":
            state = _state(app)
            stores = [state.event_store.colocated_pii_store()]
            if state.pii_store is not None and state.pii_store is not stores[0]:
                stores.append(state.pii_store)
            rows = []
            for store in stores:
                assert isinstance(store, MemoryPiiStore)
                for event_id, (stream_id, data, written_at) in store.rows.items():
                    rows.append(
                        {"event_id": event_id, "stream_id": stream_id, "data": data, "written_at": written_at}
                    )
            return rows
        return self._rows(self.event_url, "shimmie_pii") + self._rows(self.pii_url, "shimmie_pii")

    def pii_rows_in_event_database(self, app: Flask) -> list[dict[str, Any]]:
        """The PII rows kept beside the events."""
        if self.name == "memory":
            store = _state(app).event_store.colocated_pii_store()
            assert isinstance(store, MemoryPiiStore)
            return [{"event_id": key} for key in store.rows]
        return self._rows(self.event_url, "shimmie_pii")

    def pii_columns(self, url: str) -> set[str]:
        """The column names of the PII table in the database at ``url`` (durable backends)."""
        if self.name == "sqlite":
            path = url.split("://", 1)[1][1:]
            connection = sqlite3.connect(path)
            try:
                return {row[1] for row in connection.execute("PRAGMA table_info(shimmie_pii)")}
            finally:
                connection.close()
        import psycopg

        schema = url.rsplit("schema=", 1)[1]
        with psycopg.connect(postgres_base_url(), connect_timeout=5) as conn:
            rows = conn.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = 'shimmie_pii'",
                (schema,),
            ).fetchall()
        return {str(row[0]) for row in rows}

    def backdate_pii_rows(self, app: Flask, seconds: float) -> None:
        """Make every PII row of the app's PII store look ``seconds`` older."""
        if self.name == "memory":
            store = _state(app).pii_store
            assert isinstance(store, MemoryPiiStore)
            with store.lock:
                for key, (stream_id, data, written_at) in list(store.rows.items()):
                    store.rows[key] = (stream_id, data, written_at - seconds)
            return
        url = self.pii_url
        if self.name == "sqlite":
            connection = sqlite3.connect(url.split("://", 1)[1][1:])
            try:
                with connection:
                    connection.execute("UPDATE shimmie_pii SET written_at = written_at - ?", (seconds,))
            finally:
                connection.close()
            return
        import psycopg
        from psycopg import sql

        schema = url.rsplit("schema=", 1)[1]
        with psycopg.connect(postgres_base_url(), connect_timeout=5) as conn:
            conn.execute(
                sql.SQL("UPDATE {} SET written_at = written_at - make_interval(secs => %s)").format(
                    sql.Identifier(schema, "shimmie_pii")
                ),
                (seconds,),
            )


def _state(app: Flask) -> AppState:
    state: AppState = app.extensions["shimmie"]
    return state


def raw_text(rows: list[dict[str, Any]]) -> str:
    """Every value of ``rows`` as one string, to search for values that must not be there."""
    return json.dumps(rows, default=str, ensure_ascii=False)


def assert_absent(rows: list[dict[str, Any]], *secrets: str) -> None:
    """Fail if any of ``secrets`` appears anywhere in ``rows``."""
    text = raw_text(rows)
    leaked = [secret for secret in secrets if secret in text]
    assert not leaked, f"{leaked} found in the raw rows: {text}"


#: The apps a test built, with their stacks: shut down before the backend's databases are dropped.
MadeApps = list[tuple[ShimmieStack, Flask]]

#: ``make_pii_app(stack, **config)``: a testing app with ``stack`` on it.
AppFactory = Callable[..., Flask]


def shut_down(made: MadeApps) -> None:
    """Shut down every app in ``made``, the last built first, and empty it."""
    while made:
        stack, app = made.pop()
        stack.shutdown(app)


def fresh_backend(name: str, tmp_path: Path, made: MadeApps) -> Iterator[Backend]:
    """Skip (or in CI fail) unless ``name`` is there; then a :class:`Backend` with fresh, empty
    databases. Afterwards the apps in ``made`` are shut down, then the databases dropped."""
    require_backend(name)
    found = Backend(name, tmp_path)
    try:
        yield found
    finally:
        shut_down(made)
        found.databases.drop()

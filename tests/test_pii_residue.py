"""Erased PII leaves the database files: the raw bytes on disk, not just the rows a query sees.

Each test records an event whose PII is a marker string found nowhere else, checks that the
marker is in the database's files (so no test can pass vacuously), erases it, and searches the
files again. SQLite: every file of the database (``x.db``, ``x.db-wal``, ``x.db-shm``), for the PII
beside the events and in a store of its own, with SQLite's ``secure_delete`` default turned off
as in SQLite's own builds (Debian's default is on, which would hide a missing pragma).
PostgreSQL: the heap and TOAST files of ``shimmie_pii`` and ``shimmie_snapshots``, read with
``pg_read_binary_file`` after a CHECKPOINT (the tests connect as the superuser).

A model that keeps the PII in its snapshots is registered too, so the snapshots the erasure
deletes are searched as well.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest
from flask import Flask

from flask_shimmie import Event, Model, ShimmieStack, StoreUnavailableError, subscribe
from flask_shimmie.storage.postgres import database as postgres_database
from flask_shimmie.storage.sqlite import database as sqlite_database
from tests.backends import postgres_base_url, require_backend
from tests.pii_backends import PLACEMENTS, AppFactory, Backend, MadeApps, fresh_backend, shut_down


class Contacts(Model):
    """Keeps each stream's email, in memory and in its snapshots; forgets it when erased."""

    def __init__(self) -> None:
        self.emails: dict[str, str] = {}

    @subscribe("CONTACT_ADDED")
    def added(self, event: Event) -> None:
        self.emails[event.stream_id] = event.data["email"]

    @subscribe("shimmie.pii_erased")
    def erased(self, event: Event) -> None:
        self.emails.pop(event.stream_id, None)

    def snapshot(self) -> Any:
        return self.emails

    def restore(self, state: Any) -> None:
        self.emails = dict(state)


def new_marker() -> str:
    return f"residue-{uuid.uuid4().hex}@example.com"


def new_stack() -> ShimmieStack:
    stack = ShimmieStack()
    stack.register_model(Contacts)
    return stack


def add_contact(stack: ShimmieStack, stream_id: str, email: str, **more_pii: str) -> None:
    data = {"email": email, **more_pii}
    stack.record_unchecked_event(stream_id, "CONTACT_ADDED", data, pii_fields=list(data))


def add_others(stack: ShimmieStack, count: int) -> None:
    """Other streams' contacts, stored after the marker's row (on its page, for PostgreSQL)."""
    for index in range(count):
        add_contact(stack, f"other-{index}", f"other-{index}-{uuid.uuid4().hex}@example.com")


def start_app(make_app: AppFactory, backend: Backend, placement: str) -> tuple[ShimmieStack, Flask]:
    """A :func:`new_stack` and its app on ``backend``, with a snapshot at every event (so that the
    marker reaches ``shimmie_snapshots`` too)."""
    stack = new_stack()
    return stack, make_app(stack, SHIMMIE_SNAPSHOT_EVERY=1, **backend.config(placement))


@contextmanager
def holding(hold: Callable[[threading.Event, threading.Event], None]) -> Iterator[threading.Event]:
    """Run ``hold(started, release)`` in a thread; once it has ``started``, yield ``release``.

    Afterwards (however the block ends) ``release`` is set and the thread joined.
    """
    started, release = threading.Event(), threading.Event()
    thread = threading.Thread(target=hold, args=(started, release))
    thread.start()
    try:
        assert started.wait(10)
        yield release
    finally:
        release.set()
        thread.join(10)


def assert_erased(app: Flask, stack: ShimmieStack, stream_id: str) -> None:
    """The erasure itself happened: the stream reads anonymised, the model forgot it."""
    with app.app_context():
        created = stack.history(stream_id)["history"][0]
        assert created.pii_erased and created.data["email"] == ""
        assert stream_id not in stack.model(Contacts).emails


# -- SQLite ---------------------------------------------------------------------------------------


@pytest.fixture(name="sqlite_backend")
def sqlite_backend_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Backend:
    """A SQLite backend under ``tmp_path``, on connections whose build default is ``secure_delete=OFF``."""
    require_backend("sqlite")
    real_connect = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        connection = real_connect(*args, **kwargs)
        connection.execute("PRAGMA secure_delete=OFF")
        return connection

    monkeypatch.setattr(sqlite3, "connect", connect)
    return Backend("sqlite", tmp_path)


def sqlite_files(directory: Path) -> dict[str, bytes]:
    """The raw bytes of every database file in ``directory``: main files, WALs, shared memory."""
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir()) if ".db" in path.name}


def sqlite_hits(directory: Path, marker: str) -> dict[str, int]:
    """How often ``marker`` occurs in each database file of ``directory`` (files without it left out)."""
    needle = marker.encode()
    found = {name: data.count(needle) for name, data in sqlite_files(directory).items()}
    return {name: count for name, count in found.items() if count}


def checkpoint_by_hand(url: str) -> None:
    """Copy the WAL into the main file, as SQLite's automatic checkpoints do sooner or later."""
    connection = sqlite3.connect(url.split("://", 1)[1][1:])
    try:
        busy, _, _ = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0
    finally:
        connection.close()


@pytest.mark.parametrize("checkpointed", [False, True], ids=["in-wal", "in-main-file"])
@pytest.mark.parametrize("placement", PLACEMENTS)
def test_sqlite_erasure_leaves_no_copy_in_any_file(
    sqlite_backend: Backend, make_pii_app: AppFactory, tmp_path: Path, placement: str, checkpointed: bool
) -> None:
    marker = new_marker()
    stack, app = start_app(make_pii_app, sqlite_backend, placement)
    with app.app_context():
        add_contact(stack, "victim", marker)
        add_others(stack, 5)
    if checkpointed:
        # The marker's pages now sit in the main files: only secure_delete zeroes them there.
        checkpoint_by_hand(sqlite_backend.event_url)
        if placement == "separate":
            checkpoint_by_hand(sqlite_backend.pii_url)
    before = sqlite_hits(tmp_path, marker)
    assert before, "the marker should be in the database files before the erasure"
    assert any(name.endswith(".db") for name in before) == checkpointed

    with app.app_context():
        assert stack.erase_pii("victim") == 1

    # The stack is still running: its connections are open and the WAL files exist.
    assert any(name.endswith("-wal") for name in sqlite_files(tmp_path))
    assert sqlite_hits(tmp_path, marker) == {}
    assert_erased(app, stack, "victim")


def hold_snapshot(path: str, started: threading.Event, release: threading.Event) -> None:
    """Keep a read transaction open on ``path`` (as a slow reader of another process does)."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("BEGIN")
        connection.execute("SELECT count(*) FROM shimmie_pii").fetchall()
        started.set()
        release.wait(30)
        connection.execute("COMMIT")
    finally:
        connection.close()


def pii_path(backend: Backend, placement: str) -> str:
    url = backend.pii_url if placement == "separate" else backend.event_url
    return url.split("://", 1)[1][1:]


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_sqlite_erasure_waits_for_a_reader_holding_an_old_snapshot(
    sqlite_backend: Backend, make_pii_app: AppFactory, tmp_path: Path, placement: str
) -> None:
    marker = new_marker()
    stack, app = start_app(make_pii_app, sqlite_backend, placement)
    with app.app_context():
        add_contact(stack, "victim", marker)
    assert sqlite_hits(tmp_path, marker)
    with holding(partial(hold_snapshot, pii_path(sqlite_backend, placement))) as release:
        # The reader lets go after two seconds; meanwhile a writer must get through between
        # the checkpoint's attempts instead of waiting for the whole erasure.
        threading.Timer(2.0, release.set).start()
        write_took: list[float] = []

        def write_meanwhile() -> None:
            time.sleep(0.3)
            begun = time.monotonic()
            with app.app_context():
                add_contact(stack, "writer", new_marker())
            write_took.append(time.monotonic() - begun)

        writer = threading.Thread(target=write_meanwhile)
        writer.start()
        begun = time.monotonic()
        with app.app_context():
            assert stack.erase_pii("victim") == 1
        took = time.monotonic() - begun
        writer.join(10)
    assert took >= 1.8, "the erasure should have waited for the reader"
    assert write_took and write_took[0] < 1.0, f"a write waited {write_took} s behind the checkpoint"
    assert sqlite_hits(tmp_path, marker) == {}
    assert_erased(app, stack, "victim")


def test_sqlite_erasure_reports_a_wal_it_cannot_empty(
    sqlite_backend: Backend, make_pii_app: AppFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_database, "CHECKPOINT_TIMEOUT", 0.5)
    marker = new_marker()
    stack, app = start_app(make_pii_app, sqlite_backend, "colocated")
    with app.app_context():
        add_contact(stack, "victim", marker)
    with holding(partial(hold_snapshot, pii_path(sqlite_backend, "colocated"))):
        with app.app_context(), pytest.raises(StoreUnavailableError) as raised:
            stack.erase_pii("victim")
        message = str(raised.value)
        assert "The PII of 1 events on stream 'victim' is erased" in message
        assert "-wal" in message and "Erase the stream again" in message
        # The erasure itself stands; only the old bytes are still in the WAL.
        assert_erased(app, stack, "victim")
        assert sqlite_hits(tmp_path, marker)
    with app.app_context():
        assert stack.erase_pii("victim") == 0
    assert sqlite_hits(tmp_path, marker) == {}


# -- PostgreSQL -----------------------------------------------------------------------------------


@pytest.fixture(name="postgres_backend")
def postgres_backend_fixture(tmp_path: Path, made_apps: MadeApps) -> Iterator[Backend]:
    """A PostgreSQL backend whose schemas are dropped after the test (its apps shut down first)."""
    yield from fresh_backend("postgresql", tmp_path, made_apps)


def schema_of(url: str) -> str:
    return url.rsplit("schema=", 1)[1]


def postgres_hits(backend: Backend, marker: str) -> dict[str, int]:
    """How often ``marker`` occurs in the heap and TOAST files of the PII and snapshot tables."""
    needle = marker.encode()
    found: dict[str, int] = {}
    with psycopg.connect(postgres_base_url(), autocommit=True, connect_timeout=5) as conn:
        conn.execute("CHECKPOINT")  # the pages are written out to the files
        for schema in {schema_of(backend.event_url), schema_of(backend.pii_url)}:
            rows = conn.execute(
                "SELECT c.relname, t.oid::regclass::text FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " JOIN pg_class t ON t.oid = c.reltoastrelid"
                " WHERE n.nspname = %s AND c.relname IN ('shimmie_pii', 'shimmie_snapshots')",
                [schema],
            ).fetchall()
            for table, toast in rows:
                for label, relation in ((table, f'"{schema}"."{table}"'), (f"{table} TOAST", toast)):
                    row = conn.execute(
                        "SELECT pg_read_binary_file(pg_relation_filepath(%s::regclass))", [relation]
                    ).fetchone()
                    count = bytes(row[0]).count(needle) if row else 0
                    if count:
                        found[f"{schema}.{label}"] = found.get(f"{schema}.{label}", 0) + count
    return found


#: Where the marker sits: in the middle of a heap page (rows stored after it), last on its page,
#: out of line in the TOAST table, or in rows of its own that fill whole pages.
LAYOUTS = ["middle", "last", "toast", "pages"]


def record_layout(stack: ShimmieStack, marker: str, layout: str) -> None:
    if layout == "toast":
        # Random hex does not compress, so the value goes to TOAST as it is.
        add_contact(stack, "victim", marker, note=os.urandom(3000).hex())
    elif layout == "pages":
        for _ in range(150):
            add_contact(stack, "victim", marker)
    else:
        add_contact(stack, "victim", marker)
    if layout != "last":
        add_others(stack, 20)


@pytest.mark.postgres
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("placement", PLACEMENTS)
def test_postgres_erasure_with_vacuum_leaves_no_copy_in_the_table_files(
    postgres_backend: Backend, make_pii_app: AppFactory, placement: str, layout: str
) -> None:
    marker = new_marker()
    stack, app = start_app(make_pii_app, postgres_backend, placement)
    with app.app_context():
        add_others(stack, 5)
        record_layout(stack, marker, layout)
    before = postgres_hits(postgres_backend, marker)
    assert any("shimmie_pii" in name for name in before), before
    assert any("shimmie_snapshots" in name for name in before), before

    with app.app_context():
        assert stack.erase_pii("victim", vacuum=True) == (150 if layout == "pages" else 1)

    assert postgres_hits(postgres_backend, marker) == {}
    assert_erased(app, stack, "victim")
    with app.app_context():  # the rewritten tables still serve the other streams
        assert stack.history("other-0")["history"][0].data["email"].startswith("other-0-")


@pytest.mark.postgres
@pytest.mark.parametrize("placement", PLACEMENTS)
def test_postgres_erasure_vacuums_by_default(
    postgres_backend: Backend, make_pii_app: AppFactory, placement: str
) -> None:
    """A plain VACUUM: enough for a row that rows stored after it on its page move over."""
    marker = new_marker()
    stack, app = start_app(make_pii_app, postgres_backend, placement)
    with app.app_context():
        record_layout(stack, marker, "middle")
    assert any("shimmie_pii" in name for name in postgres_hits(postgres_backend, marker))

    with app.app_context():
        assert stack.erase_pii("victim") == 1

    assert postgres_hits(postgres_backend, marker) == {}
    assert_erased(app, stack, "victim")


@pytest.mark.postgres
def test_cli_erase_pii_vacuum_rewrites_the_pii_table(
    postgres_backend: Backend, make_pii_app: AppFactory
) -> None:
    marker = new_marker()
    stack, app = start_app(make_pii_app, postgres_backend, "colocated")
    with app.app_context():
        add_others(stack, 5)
        record_layout(stack, marker, "last")  # a plain VACUUM leaves this one in the page's free space
    assert postgres_hits(postgres_backend, marker)

    result = app.test_cli_runner().invoke(args=["shimmie", "erase-pii", "victim", "--vacuum", "--yes"])

    assert result.exit_code == 0, result.output
    assert "Erased the PII of 1 events" in result.output
    assert postgres_hits(postgres_backend, marker) == {}


@pytest.mark.postgres
def test_postgres_vacuum_full_gives_up_on_a_table_in_use(
    postgres_backend: Backend, make_pii_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_database, "VACUUM_LOCK_TIMEOUT", 0.3)
    marker = new_marker()
    stack, app = start_app(make_pii_app, postgres_backend, "colocated")
    with app.app_context():
        add_contact(stack, "victim", marker)
    table = f'"{schema_of(postgres_backend.event_url)}".shimmie_pii'
    with psycopg.connect(postgres_base_url(), connect_timeout=5) as blocker:
        blocker.execute(f"SELECT count(*) FROM {table}").fetchall()  # holds its lock until commit
        begun = time.monotonic()
        with app.app_context(), pytest.raises(StoreUnavailableError) as raised:
            stack.erase_pii("victim", vacuum=True)
        assert time.monotonic() - begun < 5
        assert "did not get its exclusive lock within 0.3s" in str(raised.value)
        assert "The PII of 1 events on stream 'victim' is erased" in str(raised.value)
        assert_erased(app, stack, "victim")
        blocker.rollback()
    with app.app_context():
        assert stack.erase_pii("victim", vacuum=True) == 0
    assert postgres_hits(postgres_backend, marker) == {}


def hold_transaction(started: threading.Event, release: threading.Event) -> None:
    """Keep a transaction with an id open, as a long report or an idle-in-transaction session does."""
    with psycopg.connect(postgres_base_url(), connect_timeout=5) as conn:
        conn.execute("SELECT pg_current_xact_id()")
        started.set()
        release.wait(30)
        conn.rollback()


@pytest.mark.postgres
@pytest.mark.parametrize("vacuum", [False, True], ids=["vacuum", "vacuum-full"])
def test_postgres_erasure_waits_for_transactions_that_still_see_the_rows(
    postgres_backend: Backend, make_pii_app: AppFactory, vacuum: bool
) -> None:
    marker = new_marker()
    stack, app = start_app(make_pii_app, postgres_backend, "colocated")
    with app.app_context():
        record_layout(stack, marker, "middle")
    with holding(hold_transaction) as release:
        threading.Timer(1.0, release.set).start()
        begun = time.monotonic()
        with app.app_context():
            assert stack.erase_pii("victim", vacuum=vacuum) == 1
        took = time.monotonic() - begun
    assert took >= 0.8, "the VACUUM should have waited for the older transaction"
    assert postgres_hits(postgres_backend, marker) == {}


@pytest.mark.postgres
def test_postgres_erasure_reports_a_transaction_that_outlives_the_wait(
    postgres_backend: Backend, make_pii_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_database, "HORIZON_TIMEOUT", 0.5)
    marker = new_marker()
    stack, app = start_app(make_pii_app, postgres_backend, "colocated")
    with app.app_context():
        record_layout(stack, marker, "middle")
    with holding(hold_transaction):
        with app.app_context(), pytest.raises(StoreUnavailableError) as raised:
            stack.erase_pii("victim")
        message = str(raised.value)
        assert "The PII of 1 events on stream 'victim' is erased" in message
        assert "cannot remove the deleted rows yet: process " in message
        assert_erased(app, stack, "victim")
        assert postgres_hits(postgres_backend, marker)
    with app.app_context():
        assert stack.erase_pii("victim") == 0
    assert postgres_hits(postgres_backend, marker) == {}


@pytest.fixture(name="non_owner")
def non_owner_fixture(made_apps: MadeApps) -> Iterator[str]:
    """A login role that may read and write the tables but owns none of them."""
    role = f"r_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_base_url(), autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        yield role
    finally:
        shut_down(made_apps)  # their sessions use the role
        with psycopg.connect(postgres_base_url(), autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP OWNED BY "{role}"')
            conn.execute(f'DROP ROLE "{role}"')


@pytest.mark.postgres
def test_postgres_erasure_reports_a_vacuum_the_role_may_not_run(
    postgres_backend: Backend, make_pii_app: AppFactory, non_owner: str
) -> None:
    owner_stack, owner_app = start_app(make_pii_app, postgres_backend, "colocated")
    with owner_app.app_context():
        owner_stack.startup()  # the tables, owned by the superuser
    schema = schema_of(postgres_backend.event_url)
    with psycopg.connect(postgres_base_url(), autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO "{non_owner}"')
        conn.execute(
            f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "{schema}" TO "{non_owner}"'
        )
    url = postgres_backend.event_url.replace("://postgres@", f"://{non_owner}@", 1)
    assert url != postgres_backend.event_url
    stack = new_stack()
    app = make_pii_app(stack, SHIMMIE_EVENT_STORE=url, SHIMMIE_PII_STORE=None)
    with app.app_context():
        add_contact(stack, "victim", new_marker())
        with pytest.raises(StoreUnavailableError) as raised:
            stack.erase_pii("victim")
    assert "VACUUM of" in str(raised.value) and "did not run" in str(raised.value)
    assert "Vacuum the table as its owner" in str(raised.value)
    assert_erased(app, stack, "victim")

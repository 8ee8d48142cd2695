"""Fixtures that run the store contract suite once per backend: memory, SQLite, PostgreSQL.

``backend`` is parametrised; ``store_url`` gives a fresh, empty database for the test (a file
under ``tmp_path`` for SQLite, a schema of its own for PostgreSQL, dropped afterwards);
``open_store`` builds and opens another store object on that URL (for restarts and processes);
``store`` is the first such store; ``pii_store`` its colocated PII store; ``standalone_pii_store``
a PII store of its own from ``pii_store_from_url``.

A backend whose module does not import yet is skipped with the import error as reason.
PostgreSQL is tried once per session (2 s timeout) at ``$SHIMMIE_TEST_POSTGRES_URL``; when it
does not answer, its tests are skipped, or fail when ``$CI`` is set.
"""

from __future__ import annotations

import importlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flask_shimmie.storage import event_store_from_url, pii_store_from_url
from flask_shimmie.storage.interface import EventStore, PiiStore

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"

BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]

#: The modules each backend needs (the event store and the PII store).
BACKEND_MODULES = {
    "memory": ("flask_shimmie.storage.memory",),
    "sqlite": ("flask_shimmie.storage.sqlite.events", "flask_shimmie.storage.sqlite.pii"),
    "postgresql": ("flask_shimmie.storage.postgres.events", "flask_shimmie.storage.postgres.pii"),
}

DURABLE = ("sqlite", "postgresql")

_postgres_problem: dict[str, str | None] = {}


def in_ci() -> bool:
    """True when ``$CI`` is set (as CI services do): then nothing may be skipped for lack of a backend."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def skip_or_fail(reason: str) -> None:
    """Skip the test, or fail it in CI."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set, so this fails instead of skipping)", pytrace=False)
    pytest.skip(reason)


def postgres_base_url() -> str:
    """The server the PostgreSQL params use."""
    return os.environ.get("SHIMMIE_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL


def _check_postgres() -> str | None:
    url = postgres_base_url()
    try:
        import psycopg
    except ImportError as error:
        return f"psycopg is not installed ({error}); pip install -e .[test]"
    try:
        with psycopg.connect(url, connect_timeout=2):
            pass
    except Exception as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return (
            f"PostgreSQL does not answer at {url} ({first_line}). Start it (on Debian: "
            "`pg_ctlcluster <version> main start`) or point SHIMMIE_TEST_POSTGRES_URL at a server."
        )
    return None


def require_backend(name: str) -> None:
    """Skip (or in CI fail) unless ``name``'s modules import and, for PostgreSQL, the server answers."""
    for module in BACKEND_MODULES[name]:
        try:
            importlib.import_module(module)
        except ImportError as error:
            skip_or_fail(f"{module} does not import yet: {error}")
    if name == "postgresql":
        if "result" not in _postgres_problem:
            _postgres_problem["result"] = _check_postgres()
        problem = _postgres_problem["result"]
        if problem:
            skip_or_fail(problem)


def require_durable(backend: str) -> None:
    """Skip for the memory backend, whose events live in one store object of one process."""
    if backend not in DURABLE:
        pytest.skip("memory:// lives in one store object in one process; nothing else can open it")


def with_query(url: str, **params: str) -> str:
    """``url`` with ``params`` appended to its query string."""
    query = "&".join(f"{key}={value}" for key, value in params.items())
    return f"{url}{'&' if '?' in url else '?'}{query}"


def drop_postgres_schema(schema: str) -> None:
    """Drop a schema the tests made (and everything in it)."""
    import psycopg

    with psycopg.connect(postgres_base_url(), connect_timeout=5, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '10s'")
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The backend under test."""
    name: str = request.param
    require_backend(name)
    return name


def _fresh_url(backend: str, tmp_path_file: str, schemas: list[str]) -> str:
    if backend == "memory":
        return "memory://"
    if backend == "sqlite":
        return f"sqlite:///{tmp_path_file}"
    schema = f"t_{uuid.uuid4().hex[:16]}"
    schemas.append(schema)
    return with_query(postgres_base_url(), schema=schema)


@pytest.fixture
def _schemas(backend: str) -> Iterator[list[str]]:
    schemas: list[str] = []
    yield schemas
    for schema in schemas:
        drop_postgres_schema(schema)


@pytest.fixture
def store_url(backend: str, tmp_path: Path, _schemas: list[str]) -> str:
    """A URL naming a fresh, empty event database for this test."""
    return _fresh_url(backend, str(tmp_path / "events.db"), _schemas)


@pytest.fixture
def pii_url(backend: str, tmp_path: Path, _schemas: list[str]) -> str:
    """A URL for a PII store of its own: another file, another schema."""
    return _fresh_url(backend, str(tmp_path / "pii.db"), _schemas)


@pytest.fixture
def open_store(store_url: str) -> Iterator[Callable[[], EventStore]]:
    """Build and open another store object on ``store_url``; every one is closed after the test."""
    opened: list[EventStore] = []

    def factory() -> EventStore:
        store = event_store_from_url(store_url)
        store.open()
        opened.append(store)
        return store

    yield factory
    for store in reversed(opened):
        store.close()


@pytest.fixture
def store(open_store: Callable[[], EventStore]) -> EventStore:
    """An opened, empty event store."""
    return open_store()


@pytest.fixture
def pii_store(store: EventStore) -> PiiStore:
    """The PII store colocated with ``store`` (written by ``append(write_pii=True)``)."""
    return store.colocated_pii_store()


@pytest.fixture
def open_pii_store(pii_url: str) -> Iterator[Callable[[], PiiStore]]:
    """Build and open another standalone PII store object on ``pii_url``."""
    opened: list[PiiStore] = []

    def factory() -> PiiStore:
        pii = pii_store_from_url(pii_url)
        pii.open()
        opened.append(pii)
        return pii

    yield factory
    for pii in reversed(opened):
        pii.close()


@pytest.fixture
def standalone_pii_store(open_pii_store: Callable[[], PiiStore]) -> PiiStore:
    """An opened, empty PII store of its own (not colocated with an event store)."""
    return open_pii_store()


@pytest.fixture(params=["colocated", "standalone"])
def any_pii_store(request: pytest.FixtureRequest, backend: str) -> PiiStore:
    """Either kind of PII store of ``backend``: the tests that use it hold for both."""
    fixture = "pii_store" if request.param == "colocated" else "standalone_pii_store"
    pii: PiiStore = request.getfixturevalue(fixture)
    return pii

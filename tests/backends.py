"""The one list of storage backends the tests run on, and how a test gets a fresh database of one.

:data:`BACKEND_MODULES` names every backend (memory, SQLite, PostgreSQL) with the modules it needs;
:data:`BACKENDS` and :data:`DURABLE_BACKENDS` are the ``pytest.param`` lists made from it, the
PostgreSQL one marked ``postgres``. :func:`require_backend` skips a test whose backend's modules do
not import yet, or (for PostgreSQL) whose server does not answer at ``$SHIMMIE_TEST_POSTGRES_URL``:
the server is tried once per session, with a 2 s timeout. When ``$CI`` is set such a test fails
instead of skipping, saying why.

:class:`FreshDatabases` hands out URLs naming new, empty databases of one backend (a file under a
test's ``tmp_path`` for SQLite, a schema of its own for PostgreSQL) and drops the schemas it made;
:func:`fresh_store_url` does the same for one URL, as a context manager.

This is a plain module, imported by the test modules and the conftest files alike; it registers
no fixtures.
"""

from __future__ import annotations

import importlib
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"

#: Every backend, and the modules it needs (the event store and the PII store).
BACKEND_MODULES = {
    "memory": ("flask_shimmie.storage.memory",),
    "sqlite": ("flask_shimmie.storage.sqlite.events", "flask_shimmie.storage.sqlite.pii"),
    "postgresql": ("flask_shimmie.storage.postgres.events", "flask_shimmie.storage.postgres.pii"),
}

#: The backends whose databases outlive the store object (and the process) that wrote them.
DURABLE = ("sqlite", "postgresql")


def backend_param(name: str) -> Any:
    """``name`` as a ``pytest.param`` with its own id, PostgreSQL marked ``postgres``."""
    marks = [pytest.mark.postgres] if name == "postgresql" else []
    return pytest.param(name, id=name, marks=marks)


#: Every backend, for ``params=`` and ``parametrize``.
BACKENDS = [backend_param(name) for name in BACKEND_MODULES]

#: SQLite and PostgreSQL: the backends another store object, a restart or another process can open.
DURABLE_BACKENDS = [backend_param(name) for name in DURABLE]

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


def require_modules(*modules: str) -> None:
    """Skip (or in CI fail) unless every one of ``modules`` imports."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as error:
            skip_or_fail(f"{module} does not import yet: {error}")


def require_backend(name: str) -> None:
    """Skip (or in CI fail) unless ``name``'s modules import and, for PostgreSQL, the server answers."""
    require_modules(*BACKEND_MODULES[name])
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


class FreshDatabases:
    """URLs naming new, empty databases of ``backend``; :meth:`drop` drops the PostgreSQL schemas made."""

    def __init__(self, backend: str, directory: Path | None = None) -> None:
        self.backend = backend
        self.directory = directory
        self.schemas: list[str] = []

    def url(self, name: str) -> str:
        """``memory://``; ``sqlite:///<directory>/<name>.db``; or the server with ``?schema=t_<hex>``."""
        if self.backend == "memory":
            return "memory://"
        if self.backend == "sqlite":
            assert self.directory is not None, "an SQLite database needs a directory to live in"
            return f"sqlite:///{self.directory / f'{name}.db'}"
        schema = f"t_{uuid.uuid4().hex[:16]}"
        self.schemas.append(schema)
        return with_query(postgres_base_url(), schema=schema)

    def drop(self) -> None:
        """Drop every PostgreSQL schema :meth:`url` made."""
        while self.schemas:
            drop_postgres_schema(self.schemas.pop(0))


@contextmanager
def fresh_store_url(backend: str, directory: Path | None = None, name: str = "events") -> Iterator[str]:
    """One URL from :class:`FreshDatabases`, its schema dropped afterwards. The caller checks the
    backend is there (:func:`require_backend`)."""
    databases = FreshDatabases(backend, directory)
    try:
        yield databases.url(name)
    finally:
        databases.drop()

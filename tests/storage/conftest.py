"""Fixtures that run the store contract suite once per backend: memory, SQLite, PostgreSQL.

``backend`` is parametrised over :data:`tests.backends.BACKENDS`; ``store_url`` gives a fresh,
empty database for the test (a file under ``tmp_path`` for SQLite, a schema of its own for
PostgreSQL, dropped afterwards); ``open_store`` builds and opens another store object on that URL
(for restarts and processes); ``store`` is the first such store; ``pii_store`` its colocated PII
store; ``standalone_pii_store`` a PII store of its own from ``pii_store_from_url``.

A backend whose module does not import yet is skipped with the import error as reason.
PostgreSQL is tried once per session (2 s timeout) at ``$SHIMMIE_TEST_POSTGRES_URL``; when it
does not answer, its tests are skipped, or fail when ``$CI`` is set (see :mod:`tests.backends`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol, TypeVar

import pytest

from flask_shimmie.storage import event_store_from_url, pii_store_from_url
from flask_shimmie.storage.interface import EventStore, PiiStore
from tests.backends import BACKENDS, FreshDatabases, require_backend


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The backend under test."""
    name: str = request.param
    require_backend(name)
    return name


@pytest.fixture
def _databases(backend: str, tmp_path: Path) -> Iterator[FreshDatabases]:
    databases = FreshDatabases(backend, tmp_path)
    yield databases
    databases.drop()


@pytest.fixture
def store_url(_databases: FreshDatabases) -> str:
    """A URL naming a fresh, empty event database for this test."""
    return _databases.url("events")


@pytest.fixture
def pii_url(_databases: FreshDatabases) -> str:
    """A URL for a PII store of its own: another file, another schema."""
    return _databases.url("pii")


class _Openable(Protocol):
    def open(self) -> None: ...

    def close(self) -> None: ...


S = TypeVar("S", bound=_Openable)


def _opener(build: Callable[[str], S], url: str) -> Iterator[Callable[[], S]]:
    """A factory that builds and opens another store on ``url``; every one is closed at the end."""
    opened: list[S] = []

    def factory() -> S:
        built = build(url)
        built.open()
        opened.append(built)
        return built

    yield factory
    for built in reversed(opened):
        built.close()


@pytest.fixture
def open_store(store_url: str) -> Iterator[Callable[[], EventStore]]:
    """Build and open another store object on ``store_url``; every one is closed after the test."""
    yield from _opener(event_store_from_url, store_url)


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
    yield from _opener(pii_store_from_url, pii_url)


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

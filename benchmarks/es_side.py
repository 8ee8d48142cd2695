"""eventsourcing's side of the scenarios: an ``Application`` with one small ``Aggregate``.

Everything here is the library's documented API: ``Application.save``, the
recorder's ``select_notifications`` and the mapper's ``to_domain_event``. The
one addition is :class:`BenchApplication`, which sets ``synchronous=FULL`` on
every SQLite connection eventsourcing opens, so both libraries sync the WAL
at every commit (see :mod:`benchmarks.backends`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.sqlite import SQLiteConnection, SQLiteFactory
from eventsourcing.utils import Environment

from .backends import check_sqlite_durability
from .harness import Operation, Worker, chunks

#: Notifications read per ``select_notifications`` call (flask_shimmie reads pages of 1000 too).
PAGE_SIZE = 1000


class Counter(Aggregate):
    """The benchmark's aggregate: created once, then incremented."""

    @event("Created")
    def __init__(self, name: str, n: int) -> None:
        self.name = name
        self.n = n

    @event("Incremented")
    def increment(self, by: int) -> None:
        self.n += by


CREATED: type[Any] = getattr(Counter, "Created")  # noqa: B009
INCREMENTED: type[Any] = getattr(Counter, "Incremented")  # noqa: B009


def make_durable(factory: SQLiteFactory) -> None:
    """Make every connection ``factory``'s pool opens set ``synchronous=FULL``."""
    pool = factory.datastore.pool
    create = pool._create_connection

    def create_durable() -> SQLiteConnection:
        connection = create()
        connection._sqlite_conn.execute("PRAGMA synchronous=FULL")
        return connection

    pool._create_connection = create_durable  # type: ignore[method-assign]


def check_durability(datastore: Any, who: str) -> None:
    """Raise unless ``datastore``'s SQLite connections run WAL with ``synchronous=FULL``; others pass."""
    if datastore is None or not hasattr(datastore, "pool") or not hasattr(datastore.pool, "db_name"):
        return
    with datastore.get_connection(commit=False) as connection:
        check_sqlite_durability(connection._sqlite_conn, who)


class BenchApplication(Application[UUID]):
    """An eventsourcing application whose SQLite connections sync the WAL at every commit."""

    def construct_factory(self, env: Environment) -> InfrastructureFactory[Any]:
        factory = super().construct_factory(env)
        if isinstance(factory, SQLiteFactory):
            make_durable(factory)
        return factory

    def check_durability(self) -> None:
        """Raise unless every SQLite connection runs WAL with ``synchronous=FULL``."""
        check_durability(getattr(self.recorder, "datastore", None), "eventsourcing")


def environment(
    backend: str, *, sqlite_path: str | None = None, postgres: dict[str, str] | None = None
) -> dict[str, str]:
    """eventsourcing's environment for ``backend``."""
    if backend == "memory":
        return {"PERSISTENCE_MODULE": "eventsourcing.popo"}
    if backend == "sqlite":
        assert sqlite_path is not None
        return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": sqlite_path}
    assert postgres is not None
    # One connection per thread at least: 8 writer threads, like ours.
    return {**postgres, "POSTGRES_POOL_SIZE": "10", "POSTGRES_MAX_OVERFLOW": "10"}


def make_app(env: dict[str, str]) -> BenchApplication:
    """A new application on ``env``; its tables are created when missing."""
    app = BenchApplication(env=env)
    app.check_durability()
    return app


def single_appends(app: BenchApplication) -> Worker:
    """Scenario 1/2: ``save`` of a new aggregate (one event) per call."""

    @contextmanager
    def worker() -> Iterator[Operation]:
        def operation() -> int:
            app.save(Counter(name="bench", n=1))
            return 1

        yield operation

    return worker


def batch_appends(app: BenchApplication, size: int) -> Worker:
    """Scenario 3: ``save(*aggregates)`` of ``size`` new aggregates (one event each) per call."""

    @contextmanager
    def worker() -> Iterator[Operation]:
        def operation() -> int:
            app.save(*[Counter(name="bench", n=1) for _ in range(size)])
            return size

        yield operation

    return worker


def fill(app: BenchApplication, total: int, *, stream_length: int = 100, batch: int = 1000) -> None:
    """Store ``total`` events: aggregates of ``stream_length`` events, ``batch`` events per save."""
    for size in chunks(total, batch):
        aggregates = []
        stored = 0
        while stored < size:
            counter = Counter(name="bench", n=0)
            length = min(stream_length, size - stored)
            for _ in range(length - 1):
                counter.increment(1)
            aggregates.append(counter)
            stored += length
        app.save(*aggregates)


class Tally:
    """The counter the notifications are applied to (the equivalent of our model)."""

    def __init__(self) -> None:
        self.count = 0
        self.total = 0

    def apply(self, domain_event: Any) -> None:
        """Count ``domain_event`` and add its amount."""
        self.count += 1
        # The event classes are made by @event at class creation; getattr keeps type checkers calm.
        if isinstance(domain_event, INCREMENTED):
            self.total += domain_event.by
        elif isinstance(domain_event, CREATED):
            self.total += domain_event.n


def read_all(app: BenchApplication) -> Tally:
    """Read every notification in pages, decode each into a domain event, apply it to a tally."""
    recorder = app.recorder
    to_domain_event = app.mapper.to_domain_event
    tally = Tally()
    start = 1
    while True:
        notifications = recorder.select_notifications(start=start, limit=PAGE_SIZE)
        for notification in notifications:
            tally.apply(to_domain_event(notification))
        if len(notifications) < PAGE_SIZE:
            return tally
        start = notifications[-1].id + 1


def replay_function(
    backend: str, env: dict[str, str], app: BenchApplication, total: int
) -> Callable[[], float]:
    """The timed replay: returns events per second.

    On a durable store each repetition builds a fresh application first (its
    connection set-up is timed, as our fresh app's startup is); on POPO the
    events live in ``app`` only, so it is read in place.
    """

    def measure() -> float:
        start = time.perf_counter()
        reader = app if backend == "memory" else BenchApplication(env=env)
        try:
            tally = read_all(reader)
        finally:
            if reader is not app:
                reader.close()
        seconds = time.perf_counter() - start
        if tally.count != total:
            raise RuntimeError(f"eventsourcing read {tally.count} events, expected {total}")
        return total / seconds

    return measure

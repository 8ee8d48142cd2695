"""eventsourcing's side of scenario 7: a ``Projection`` writing a table through a tracking recorder.

The shape is the library's own (``eventsourcing.projection`` and its
tests): a ``Projection`` whose ``process_event`` calls a method of its view,
a ``TrackingRecorder`` subclass that writes the row and the tracking record
in one transaction. The view lives in the events' database (the same SQLite
file, the same PostgreSQL schema; on POPO an in-memory SQLite database, as
our ``memory://`` projections use).

How the events reach the projection:

* PostgreSQL: ``ProjectionRunner``, the library's runner (a new application
  and view, the recorder's LISTEN/NOTIFY subscription, a processing thread).
* SQLite: the library's SQLite recorder has no ``subscribe()`` (it raises
  ``NotImplementedError``), so the runner cannot run there; and on POPO the
  runner's new application would have an empty store. There
  :func:`drive` does what the runner's processing loop does, in the calling
  thread: pages of 500 notifications (the size its subscriptions read),
  ``mapper.to_domain_event``, ``process_event`` with a ``Tracking``.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.persistence import InfrastructureFactory, Tracking, TrackingRecorder
from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from eventsourcing.projection import Projection, ProjectionRunner
from eventsourcing.sqlite import SQLiteDatastore, SQLiteFactory, SQLiteTrackingRecorder
from eventsourcing.utils import Environment
from psycopg.sql import SQL, Identifier

from .es_side import BenchApplication, check_durability, make_durable

#: Notifications per ``select_notifications`` call: what the library's subscriptions read at a time.
SUBSCRIPTION_PAGE = 500

_DDL = "(stream_id TEXT NOT NULL, version INTEGER NOT NULL, PRIMARY KEY (stream_id, version))"


class Finish:
    """The moment the view committed the tracking record of ``target``."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.at = 0.0
        self.reached = threading.Event()

    def tracked(self, notification_id: int) -> None:
        """Called after each commit with its tracking id."""
        if notification_id >= self.target and not self.reached.is_set():
            self.at = time.perf_counter()
            self.reached.set()


class SQLiteRowsView(SQLiteTrackingRecorder):
    """One ``(stream_id, version)`` row per event, committed with its tracking record."""

    table = "es_rows"
    finish: Finish | None = None

    def __init__(self, datastore: SQLiteDatastore, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        self.insert_row_statement = f"INSERT INTO {self.table} (stream_id, version) VALUES (?, ?)"

    def construct_create_table_statements(self) -> list[str]:
        return [
            *super().construct_create_table_statements(),
            f"CREATE TABLE IF NOT EXISTS {self.table} {_DDL}",
        ]

    def insert_row(self, stream_id: str, version: int, tracking: Tracking) -> None:
        """Insert the event's row and its tracking record in one transaction."""
        with self.datastore.transaction(commit=True) as cursor:
            cursor.execute(self.insert_row_statement, (stream_id, version))
            self._insert_tracking(cursor, tracking)
        if self.finish is not None:
            self.finish.tracked(tracking.notification_id)

    def count_rows(self) -> int:
        """The rows in the table."""
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(f"SELECT count(*) FROM {self.table}")
            return int(cursor.fetchone()[0])


class PostgresRowsView(PostgresTrackingRecorder):
    """The PostgreSQL twin of :class:`SQLiteRowsView` (``bigint`` version, the schema's table)."""

    table = "es_rows"
    finish: Finish | None = None

    def __init__(self, datastore: PostgresDatastore, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        schema, table = Identifier(self.datastore.schema), Identifier(self.table)
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {0}.{1} (stream_id text NOT NULL, version bigint NOT NULL,"
                " PRIMARY KEY (stream_id, version))"
            ).format(schema, table)
        )
        self.insert_row_statement = SQL("INSERT INTO {0}.{1} (stream_id, version) VALUES (%s, %s)").format(
            schema, table
        )
        self.count_statement = SQL("SELECT count(*) AS n FROM {0}.{1}").format(schema, table)

    def insert_row(self, stream_id: str, version: int, tracking: Tracking) -> None:
        """Insert the event's row and its tracking record in one transaction."""
        with self.datastore.transaction(commit=True) as cursor:
            cursor.execute(self.insert_row_statement, (stream_id, version), prepare=True)
            self._insert_tracking(cursor, tracking)
        if self.finish is not None:
            self.finish.tracked(tracking.notification_id)

    def count_rows(self) -> int:
        """The rows in the table."""
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(self.count_statement)
            row = cursor.fetchone()
            assert row is not None
            return int(row["n"])


RowsView = SQLiteRowsView | PostgresRowsView


class RowsProjection(Projection[Any]):
    """Every event becomes one row of the view's table."""

    name = "es_rows"

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        self.view.insert_row(str(domain_event.originator_id), domain_event.originator_version, tracking)


def _classes(backend: str, finish: Finish) -> tuple[type[RowsProjection], type[RowsView]]:
    """A projection and view class of their own: a new name, table and tracking table."""
    label = f"es_rows_{uuid.uuid4().hex[:8]}"
    base: type[RowsView] = PostgresRowsView if backend == "postgresql" else SQLiteRowsView
    view = type(f"RowsView_{label}", (base,), {"table": label, "finish": finish})
    projection = type(f"RowsProjection_{label}", (RowsProjection,), {"name": label})
    return projection, view


def view_environment(backend: str, env: dict[str, str], name: str) -> dict[str, str]:
    """The view's environment: the events' database, an in-memory SQLite one on POPO."""
    if backend != "memory":
        return env
    prefix = name.upper()
    return {
        **env,
        f"{prefix}_PERSISTENCE_MODULE": "eventsourcing.sqlite",
        f"{prefix}_SQLITE_DBNAME": ":memory:",
    }


def drive(app: BenchApplication, projection: RowsProjection, view: TrackingRecorder) -> None:
    """Feed every notification after the view's position to ``projection``, as the runner's loop does."""
    recorder = app.recorder
    to_domain_event = app.mapper.to_domain_event
    start = view.max_tracking_id(app.name) or 0
    while True:
        notifications = recorder.select_notifications(
            start=start, limit=SUBSCRIPTION_PAGE, inclusive_of_start=False
        )
        for notification in notifications:
            projection.process_event(to_domain_event(notification), Tracking(app.name, notification.id))
        if len(notifications) < SUBSCRIPTION_PAGE:
            return
        start = notifications[-1].id


def forget_position(backend: str, env: dict[str, str], app_name: str) -> None:
    """Let a new SQLite view start at position 0.

    The library's SQLite views share one ``tracking`` table, keyed by the
    application's name, so a new view would start where the last one ended.
    (PostgreSQL views get a tracking table named after the projection.)
    """
    if backend != "sqlite":
        return
    connection = sqlite3.connect(env["SQLITE_DBNAME"])
    try:
        with connection:
            connection.execute("DELETE FROM tracking WHERE application_name = ?", (app_name,))
    except sqlite3.OperationalError:  # no view yet: no tracking table
        pass
    finally:
        connection.close()


def catch_up_function(
    backend: str, env: dict[str, str], app: BenchApplication, total: int, timeout: float = 3600.0
) -> Callable[[], float]:
    """Scenario 7: a new projection on the store of ``total`` events, run to the end; events per second.

    The clock runs from building the view (and, on PostgreSQL, the runner)
    to the commit of the last event's tracking record.
    """
    last = app.recorder.max_notification_id()
    if last is None or last < total:
        raise RuntimeError(f"eventsourcing's store holds {last} events, expected {total}")

    def measure() -> float:
        finish = Finish(last)
        projection_class, view_class = _classes(backend, finish)
        view_env = view_environment(backend, env, projection_class.name)
        forget_position(backend, env, app.name)
        start = time.perf_counter()
        if backend == "postgresql":
            with ProjectionRunner(
                application_class=BenchApplication,
                projection_class=projection_class,
                view_class=view_class,
                env=view_env,
            ) as runner:
                while not finish.reached.wait(0.05):
                    runner.run_forever(timeout=0)  # raises the processing thread's error, if any
                    if time.perf_counter() - start > timeout:
                        raise RuntimeError(f"eventsourcing's projection did not finish in {timeout:g} s")
                runner.wait(last)
                view: RowsView = runner.projection.view
                rows = view.count_rows()
        else:
            factory = InfrastructureFactory[Any].construct(env=Environment(projection_class.name, view_env))
            if isinstance(factory, SQLiteFactory):
                make_durable(factory)
            view = factory.tracking_recorder(view_class)
            if backend == "sqlite":
                check_durability(view.datastore, "eventsourcing's view")
            drive(app, projection_class(view=view), view)
            rows = view.count_rows()
            factory.close()
        seconds = finish.at - start
        if not finish.reached.is_set() or rows != total:
            raise RuntimeError(f"eventsourcing projected {rows} rows, expected {total}")
        return total / seconds

    return measure

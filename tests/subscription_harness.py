"""Helpers of the subscription tests: apps on a fresh store of one backend, a projection that counts.

:class:`SubsHarness` builds testing apps (no background thread; tests drive the runner with
``stack.run_subscriptions()``) on one store URL of one backend, and shuts every app down before the
PostgreSQL schema is dropped. :class:`Tally` is a projection that writes one row per event into a
table without a unique key, so a duplicate shows as a second row. :func:`sql` picks the placeholders.

This is a plain module: the gunicorn and CLI processes of the process tests import it too, so it
must not import pytest.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from flask import Flask

from flask_shimmie import Event, Projection, ShimmieStack, subscribe


def sql(db: Any, text: str) -> str:
    """``text`` with ``db``'s placeholders (``?`` for SQLite, ``%s`` for psycopg)."""
    return text if isinstance(db, sqlite3.Connection) else text.replace("?", "%s")


class Tally(Projection):
    """One ``tally`` row per event it receives (every event): event id, position, name."""

    name = "tally"
    version = 1

    def setup(self, db: Any) -> None:
        db.execute(
            "CREATE TABLE IF NOT EXISTS tally (event_id TEXT NOT NULL, position BIGINT NOT NULL, "
            "event_name TEXT NOT NULL, detail TEXT)"
        )

    def reset(self, db: Any) -> None:
        db.execute("DELETE FROM tally")

    @subscribe("*")
    def count(self, event: Event, db: Any) -> None:
        db.execute(
            sql(db, "INSERT INTO tally VALUES (?, ?, ?, ?)"),
            (event.event_id, event.sequence_num, event.event_name, str(event.data.get("detail", ""))),
        )


def tally_rows(db: Any) -> list[tuple[str, int, str, str]]:
    """Every ``tally`` row, by position."""
    return [tuple(row) for row in db.execute("SELECT * FROM tally ORDER BY position").fetchall()]  # type: ignore[misc]


@dataclass
class SubsHarness:
    """Testing apps on one store URL; :meth:`close` shuts them down."""

    url: str
    apps: list[tuple[ShimmieStack, Flask]] = field(default_factory=list)

    def app(self, stack: ShimmieStack, **config: Any) -> Flask:
        """A testing app with ``stack`` on this harness's store."""
        app = Flask(f"subs_app_{len(self.apps)}")
        app.config.update({"TESTING": True, "SHIMMIE_EVENT_STORE": self.url, **config})
        stack.init_app(app)
        self.apps.append((stack, app))
        return app

    def shut(self, app: Flask) -> None:
        """Shut ``app`` down now (as a process exit would)."""
        for stack, known in self.apps:
            if known is app:
                stack.shutdown(app)

    def close(self) -> None:
        for stack, app in self.apps:
            stack.shutdown(app)
        self.apps.clear()


@contextmanager
def projection_db(stack: ShimmieStack, app: Flask) -> Iterator[Any]:
    """``stack.projection_db()`` inside an app context of ``app``."""
    with app.app_context(), stack.projection_db() as db:
        yield db

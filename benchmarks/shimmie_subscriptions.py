"""flask_shimmie's side of the subscription scenarios: projection catch-up and reactor latency.

Only the public API: ``stack.register_projection``, ``stack.run_subscriptions``,
``stack.projection_db``, ``@stack.reactor`` and the background runner that
``stack.startup()`` starts.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from flask import Flask

from flask_shimmie import NO_STREAM, Event, Projection, ShimmieStack, subscribe

from .shimmie_side import CREATED, OurApp

_numbers = itertools.count(1)


def make_quiet_app(url: str) -> OurApp:
    """A started stack on a new testing app (no model, no background runner: tests' mode)."""
    stack = ShimmieStack()
    app = Flask(f"shimmie_bench_subs_{next(_numbers)}")
    app.config["SHIMMIE_EVENT_STORE"] = url
    app.testing = True
    stack.init_app(app)
    stack.startup(app)
    return OurApp(stack, app)


def rows_projection(table: str, placeholder: str) -> type[Projection]:
    """A projection that inserts one ``(stream_id, version)`` row into ``table`` per event."""
    insert = f"INSERT INTO {table} (stream_id, version) VALUES ({placeholder}, {placeholder})"

    class Rows(Projection):
        name = table.replace("_", "-")

        def setup(self, db: Any) -> None:
            db.execute(
                f"CREATE TABLE IF NOT EXISTS {table} (stream_id TEXT NOT NULL, version INTEGER NOT NULL,"
                " PRIMARY KEY (stream_id, version))"
            )

        def reset(self, db: Any) -> None:
            db.execute(f"DELETE FROM {table}")

        @subscribe("*")
        def row(self, event: Event, db: Any) -> None:
            db.execute(insert, (event.stream_id, event.stream_version))

    return Rows


def catch_up_function(ours: OurApp, total: int) -> Callable[[], float]:
    """Scenario 7: register a new projection on the store of ``total`` events, run it to the end.

    Each call registers a projection of its own (a new name, a new table),
    so each starts from position 0; the clock runs from the registration to
    ``run_subscriptions()``'s return, when the position is at the last
    event. Returns events per second; checks the table's row count after.
    """
    store_url: str = ours.app.config["SHIMMIE_EVENT_STORE"]
    placeholder = "%s" if store_url.startswith("postgres") else "?"

    def measure() -> float:
        table = f"bench_rows_{uuid.uuid4().hex[:8]}"
        projection = rows_projection(table, placeholder)
        with ours.app.app_context():
            start = time.perf_counter()
            ours.stack.register_projection(projection)
            handled = ours.stack.run_subscriptions(projection.name)
            seconds = time.perf_counter() - start
            with ours.stack.projection_db() as db:
                (rows,) = db.execute(f"SELECT count(*) FROM {table}").fetchone()
        if handled != {projection.name: total} or rows != total:
            raise RuntimeError(f"flask_shimmie projected {handled} into {rows} rows, expected {total}")
        return total / seconds

    return measure


def reactor_latencies(url: str, count: int, spacing: float, timeout: float = 30.0) -> list[float]:
    """Seconds from each ``record_event`` return to the background runner's call of the reactor.

    A fresh app on ``url`` with one reactor (``start="now"``) and its
    background subscription thread; ``count`` events recorded from this
    thread, ``spacing`` seconds apart. Both instants are read from
    ``time.perf_counter()`` in this process. A handler called before the
    writer's ``record_event`` returned gives a negative delay (kept as is).
    """
    returned: dict[int, float] = {}
    called: dict[int, float] = {}
    everything = threading.Event()
    stack = ShimmieStack()

    @stack.reactor("bench-latency", events=[CREATED])
    def react(event: Event) -> None:
        called[event.data["n"]] = time.perf_counter()
        if len(called) >= count:
            everything.set()

    app = Flask(f"shimmie_bench_latency_{next(_numbers)}")
    app.config["SHIMMIE_EVENT_STORE"] = url
    stack.init_app(app)
    stack.startup(app)
    try:
        runner = app.extensions["shimmie"].runner
        if not runner.running:
            raise RuntimeError("the background subscription runner did not start")
        with app.app_context():
            for n in range(count):
                stack.record_event(
                    str(uuid.uuid4()), CREATED, {"name": "bench", "n": n}, expected_version=NO_STREAM
                )
                returned[n] = time.perf_counter()
                time.sleep(spacing)
        if not everything.wait(timeout):
            raise RuntimeError(f"the reactor saw {len(called)} of {count} events within {timeout:g} s")
    finally:
        stack.shutdown(app)
    return [called[n] - returned[n] for n in range(count)]

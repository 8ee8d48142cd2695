"""flask_shimmie's side of the scenarios, through the public record API only."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from flask import Flask

from flask_shimmie import NO_STREAM, Event, Model, NewEvent, ShimmieStack, subscribe

from .harness import Operation, Worker, chunks

CREATED = "COUNTER_CREATED"
INCREMENTED = "COUNTER_INCREMENTED"

_app_numbers = itertools.count(1)


class Tally(Model):
    """The one subscribed model: counts the events and sums their amounts."""

    def __init__(self) -> None:
        self.count = 0
        self.total = 0

    @subscribe(CREATED)
    def created(self, event: Event) -> None:
        self.count += 1
        self.total += event.data["n"]

    @subscribe(INCREMENTED)
    def incremented(self, event: Event) -> None:
        self.count += 1
        self.total += event.data["by"]


@dataclass
class OurApp:
    """A started stack on its own Flask app."""

    stack: ShimmieStack
    app: Flask

    def tally(self) -> Tally:
        """The app's :class:`Tally` instance."""
        with self.app.app_context():
            return self.stack.model(Tally)

    def close(self) -> None:
        """Shut the stack down (pools, follower thread)."""
        self.stack.shutdown(self.app)


def store_url(backend: str, *, sqlite_path: str | None = None, postgres_url: str | None = None) -> str:
    """``SHIMMIE_EVENT_STORE`` for ``backend``."""
    if backend == "memory":
        return "memory://"
    if backend == "sqlite":
        assert sqlite_path is not None and sqlite_path.startswith("/")
        return f"sqlite:///{sqlite_path}"
    assert postgres_url is not None
    return postgres_url


def make_app(url: str, *, with_model: bool = True, config: dict[str, Any] | None = None) -> OurApp:
    """A new stack (with :class:`Tally` unless told otherwise) on a new app with ``config``, started."""
    stack = ShimmieStack()
    if with_model:
        stack.register_model(Tally)
    app = Flask(f"shimmie_bench_{next(_app_numbers)}")
    app.config.update(config or {})
    app.config["SHIMMIE_EVENT_STORE"] = url
    stack.init_app(app)
    stack.startup(app)
    return OurApp(stack, app)


def single_appends(ours: OurApp) -> Worker:
    """Scenario 1/2: one event on a new stream per call, checked with ``NO_STREAM``."""

    @contextmanager
    def worker() -> Iterator[Operation]:
        stack = ours.stack
        with ours.app.app_context():

            def operation() -> int:
                stack.record_event(
                    str(uuid.uuid4()), CREATED, {"name": "bench", "n": 1}, expected_version=NO_STREAM
                )
                return 1

            yield operation

    return worker


def batch_appends(ours: OurApp, size: int) -> Worker:
    """Scenario 3: ``size`` events on ``size`` new streams, one ``record_unchecked_events`` call."""

    @contextmanager
    def worker() -> Iterator[Operation]:
        stack = ours.stack
        with ours.app.app_context():

            def operation() -> int:
                stack.record_unchecked_events(
                    [NewEvent(str(uuid.uuid4()), CREATED, {"name": "bench", "n": 1}) for _ in range(size)]
                )
                return size

            yield operation

    return worker


def fill(ours: OurApp, total: int, *, stream_length: int = 100, batch: int = 1000) -> None:
    """Store ``total`` events fast: streams of ``stream_length``, ``batch`` events per transaction."""
    with ours.app.app_context():
        for size in chunks(total, batch):
            events: list[NewEvent] = []
            while len(events) < size:
                stream_id = str(uuid.uuid4())
                length = min(stream_length, size - len(events))
                events.append(NewEvent(stream_id, CREATED, {"name": "bench", "n": 0}))
                events += [NewEvent(stream_id, INCREMENTED, {"by": 1}) for _ in range(length - 1)]
            ours.stack.record_unchecked_events(events)


def expected_tally(total: int, *, stream_length: int = 100, batch: int = 1000) -> int:
    """The sum :func:`fill` stores: every event but a stream's first adds 1."""
    streams = 0
    for size in chunks(total, batch):
        streams += -(-size // stream_length)
    return total - streams


def replay_fresh(url: str, total: int) -> tuple[float, dict[str, Any]]:
    """Scenario 4 on a durable store: a fresh app's ``startup()`` replays everything; its seconds."""
    stack = ShimmieStack()
    stack.register_model(Tally)
    app = Flask(f"shimmie_bench_{next(_app_numbers)}")
    app.config["SHIMMIE_EVENT_STORE"] = url
    stack.init_app(app)
    start = time.perf_counter()
    stack.startup(app)
    seconds = time.perf_counter() - start
    try:
        with app.app_context():
            tally = stack.model(Tally)
            found = {"count": tally.count, "total": tally.total}
    finally:
        stack.shutdown(app)
    if found["count"] != total:
        raise RuntimeError(f"flask_shimmie replayed {found['count']} events, expected {total}")
    return seconds, found


def replay_in_place(ours: OurApp, total: int) -> tuple[float, dict[str, Any]]:
    """Scenario 4 on ``memory://`` (a fresh app would have an empty store): ``stack.replay()``."""
    with ours.app.app_context():
        start = time.perf_counter()
        ours.stack.replay()
        seconds = time.perf_counter() - start
        tally = ours.stack.model(Tally)
        found = {"count": tally.count, "total": tally.total}
    if found["count"] != total:
        raise RuntimeError(f"flask_shimmie replayed {found['count']} events, expected {total}")
    return seconds, found


def replay_function(backend: str, url: str, ours: OurApp | None, total: int) -> Callable[[], float]:
    """The timed replay for ``backend``: returns events per second."""

    def measure() -> float:
        if backend == "memory":
            assert ours is not None
            seconds, _ = replay_in_place(ours, total)
        else:
            seconds, _ = replay_fresh(url, total)
        return total / seconds

    return measure


class SnapshotTally(Tally):
    """:class:`Tally` with snapshots, for the restart scenario."""

    def snapshot(self) -> Any:
        return [self.count, self.total]

    def restore(self, state: Any) -> None:
        self.count, self.total = state


def _snapshot_app(url: str) -> tuple[ShimmieStack, Flask]:
    stack = ShimmieStack()
    stack.register_model(SnapshotTally)
    app = Flask(f"shimmie_bench_{next(_app_numbers)}")
    app.config["SHIMMIE_EVENT_STORE"] = url
    stack.init_app(app)
    return stack, app


def _start_and_count(url: str) -> tuple[float, int]:
    stack, app = _snapshot_app(url)
    start = time.perf_counter()
    stack.startup(app)
    seconds = time.perf_counter() - start
    try:
        with app.app_context():
            count = stack.model(SnapshotTally).count
    finally:
        stack.shutdown(app)
    return seconds, count


def restart_function(url: str, total: int) -> Callable[[], float]:
    """Scenario 6: a restart that restores snapshots and replays the tail; returns its seconds.

    The first start replays everything once and takes the snapshots
    (every ``SHIMMIE_SNAPSHOT_EVERY`` events) that the timed restarts use.
    """
    _, count = _start_and_count(url)
    if count != total:
        raise RuntimeError(f"flask_shimmie replayed {count} events, expected {total}")

    def measure() -> float:
        seconds, found = _start_and_count(url)
        if found != total:
            raise RuntimeError(f"flask_shimmie restored {found} events, expected {total}")
        return seconds

    return measure

"""Model snapshots: a restart replays only the events after the last snapshot."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_shimmie import Event, Model, NewEvent, ShimmieStack, subscribe


class Totals(Model):
    """Sums ``n`` per stream; counts the events it was handed."""

    applied = 0

    def __init__(self) -> None:
        self.totals: dict[str, int] = {}

    @subscribe("ADDED")
    def added(self, event: Event) -> None:
        Totals.applied += 1
        self.totals[event.stream_id] = self.totals.get(event.stream_id, 0) + event.data["n"]

    def snapshot(self) -> Any:
        return self.totals

    def restore(self, state: Any) -> None:
        self.totals = dict(state)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/events.db"


@pytest.fixture
def snap_stack() -> ShimmieStack:
    stack = ShimmieStack()
    stack.register_model(Totals)
    return stack


def _app(stack: ShimmieStack, url: str, **config: Any) -> Flask:
    app = Flask(__name__)
    app.config.update({"SHIMMIE_EVENT_STORE": url, "SHIMMIE_SNAPSHOT_EVERY": 100, **config})
    stack.init_app(app)
    return app


def _write(stack: ShimmieStack, app: Flask, count: int) -> None:
    with app.app_context():
        for start in range(0, count, 50):
            stack.record_unchecked_events(
                [NewEvent(f"s{i % 3}", "ADDED", {"n": i}) for i in range(start, start + 50)]
            )


def _restart(stack: ShimmieStack, url: str, **config: Any) -> tuple[Flask, dict[str, int]]:
    Totals.applied = 0
    app = _app(stack, url, **config)
    with app.app_context():
        stack.startup()
        totals = dict(stack.model(Totals).totals)
    stack.shutdown(app)
    return app, totals


def test_restart_replays_only_the_tail(snap_stack: ShimmieStack, url: str) -> None:
    first = _app(snap_stack, url)
    _write(snap_stack, first, 250)
    with first.app_context():
        expected = dict(snap_stack.model(Totals).totals)
        snapshots = first.extensions["shimmie"].event_store.load_snapshots()
    snap_stack.shutdown(first)
    assert [(s.model, s.position) for s in snapshots] == [("Totals", 200)]
    _, totals = _restart(snap_stack, url)
    assert totals == expected
    assert Totals.applied == 50  # events 201..250 only


def test_a_new_snapshot_version_means_a_full_replay(snap_stack: ShimmieStack, url: str) -> None:
    first = _app(snap_stack, url)
    _write(snap_stack, first, 150)
    with first.app_context():
        expected = dict(snap_stack.model(Totals).totals)
    snap_stack.shutdown(first)
    Totals.snapshot_version = 2
    try:
        _, totals = _restart(snap_stack, url)
    finally:
        Totals.snapshot_version = 1
    assert totals == expected and Totals.applied == 150


def test_disabled_snapshots_are_neither_taken_nor_used(snap_stack: ShimmieStack, url: str) -> None:
    first = _app(snap_stack, url, SHIMMIE_SNAPSHOT_EVERY=0)
    _write(snap_stack, first, 150)
    with first.app_context():
        assert first.extensions["shimmie"].event_store.load_snapshots() == []
    snap_stack.shutdown(first)
    _, totals = _restart(snap_stack, url)
    assert Totals.applied == 150 and sum(totals.values()) == sum(range(150))


def test_function_subscribers_force_a_full_replay(snap_stack: ShimmieStack, url: str) -> None:
    seen: list[int] = []
    snap_stack.subscribe("ADDED", lambda event: seen.append(event.sequence_num))
    first = _app(snap_stack, url)
    _write(snap_stack, first, 150)
    snap_stack.shutdown(first)
    seen.clear()
    _restart(snap_stack, url)
    assert seen == list(range(1, 151)) and Totals.applied == 150


def test_a_failing_restore_falls_back_to_a_full_replay(
    snap_stack: ShimmieStack, url: str, caplog: pytest.LogCaptureFixture
) -> None:
    first = _app(snap_stack, url)
    _write(snap_stack, first, 150)
    with first.app_context():
        expected = dict(snap_stack.model(Totals).totals)
        store = first.extensions["shimmie"].event_store
        (snapshot,) = store.load_snapshots()
        store.save_snapshots([type(snapshot)("Totals", snapshot.position, 1, '"not a dict of totals"')])
    snap_stack.shutdown(first)
    _, totals = _restart(snap_stack, url)
    assert totals == expected and Totals.applied == 150
    assert "Restoring model snapshots failed" in caplog.text


def test_erasing_pii_deletes_snapshots(snap_stack: ShimmieStack, url: str) -> None:
    first = _app(snap_stack, url)
    _write(snap_stack, first, 100)
    with first.app_context():
        store = first.extensions["shimmie"].event_store
        assert len(store.load_snapshots()) == 1
        snap_stack.erase_pii("s1")
        assert store.load_snapshots() == []
    snap_stack.shutdown(first)


def test_bad_snapshot_setting_is_refused(make_app: Callable[..., Flask]) -> None:
    from flask_shimmie import ConfigurationError

    with pytest.raises(ConfigurationError, match="SHIMMIE_SNAPSHOT_EVERY"):
        make_app(SHIMMIE_SNAPSHOT_EVERY=-5)


def test_cli_replay_rebuilds_from_scratch_even_with_snapshots(snap_stack: ShimmieStack, url: str) -> None:
    first = _app(snap_stack, url)
    _write(snap_stack, first, 250)
    snap_stack.shutdown(first)
    Totals.applied = 0
    fresh = _app(snap_stack, url)
    result = fresh.test_cli_runner().invoke(args=["shimmie", "replay"])
    assert result.exit_code == 0, result.output
    assert "Replayed 250 events" in result.output
    assert Totals.applied == 50 + 250  # the tail after the snapshot, then every event again
    with fresh.app_context():
        assert sum(snap_stack.model(Totals).totals.values()) == sum(range(250))
    snap_stack.shutdown(fresh)

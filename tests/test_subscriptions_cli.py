"""``flask shimmie subscriptions``: the table, run --once, reset, parked, retry (in-process CLI runner)."""

from __future__ import annotations

import pytest
from flask import Flask

from flask_shimmie import Event, ShimmieStack
from flask_shimmie.state import AppState
from tests.subscription_fixtures import quick as quick
from tests.subscription_fixtures import subs as subs
from tests.subscription_harness import SubsHarness, Tally, projection_db, tally_rows


class Flaky:
    """A reactor handler that fails on ``BAD`` events until fixed."""

    def __init__(self) -> None:
        self.fixed = False
        self.seen: list[int] = []

    def __call__(self, event: Event) -> None:
        if event.event_name == "BAD" and not self.fixed:
            raise RuntimeError(f"cannot send event {event.sequence_num}")
        self.seen.append(event.sequence_num)


@pytest.fixture
def setup(subs: SubsHarness) -> tuple[ShimmieStack, Flask, Flaky]:
    stack = ShimmieStack()
    flaky = Flaky()
    stack.reactor("mailer", start="beginning", max_attempts=2)(flaky)
    stack.register_projection(Tally)
    app = subs.app(stack)
    with app.app_context():
        for name in ("GOOD", "BAD", "GOOD"):
            stack.record_unchecked_event("s", name, {})
    return stack, app, flaky


def _invoke(app: Flask, *args: str) -> tuple[int, str]:
    result = app.test_cli_runner().invoke(args=["shimmie", "subscriptions", *args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def _state(app: Flask) -> AppState:
    state: AppState = app.extensions["shimmie"]
    return state


def test_the_table_lists_every_subscription(setup: tuple[ShimmieStack, Flask, Flaky]) -> None:
    stack, app, _ = setup
    code, out = _invoke(app)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "KIND", "POSITION", "LAG", "STATE", "RUNNER", "PARKED"]
    assert lines[1].split() == ["mailer", "reactor", "0", "3", "active", "-", "0"]
    assert lines[2].split() == ["tally", "projection", "0", "3", "active", "-", "0"]


def test_run_once_catches_up_and_the_table_shows_it(setup: tuple[ShimmieStack, Flask, Flaky]) -> None:
    stack, app, flaky = setup
    code, out = _invoke(app, "run", "--once")
    assert code == 0, out
    assert "mailer: 2 events" in out and "tally: 3 events" in out
    assert flaky.seen == [1, 3]
    code, out = _invoke(app)
    assert out.splitlines()[1].split() == ["mailer", "reactor", "3", "0", "active", "-", "1"]
    with projection_db(stack, app) as db:
        assert len(tally_rows(db)) == 3


def test_run_once_takes_names_and_refuses_an_unknown_one(setup: tuple[ShimmieStack, Flask, Flaky]) -> None:
    stack, app, flaky = setup
    code, out = _invoke(app, "run", "--once", "tally")
    assert code == 0 and "tally: 3 events" in out and "mailer" not in out and flaky.seen == []
    code, out = _invoke(app, "run", "--once", "nope")
    assert code != 0 and "No subscription named 'nope' (registered: mailer, tally)" in out


def test_parked_lists_and_retry_tries_again(setup: tuple[ShimmieStack, Flask, Flaky]) -> None:
    stack, app, flaky = setup
    _invoke(app, "run", "--once")
    code, out = _invoke(app, "parked", "mailer")
    assert code == 0
    first, second = out.splitlines()
    assert first.split()[0] == "2" and "2 tries" in first and "retry asked" not in first
    assert second.strip() == "RuntimeError: cannot send event 2"
    assert "tally has no parked events." in _invoke(app, "parked", "tally")[1]
    flaky.fixed = True
    code, out = _invoke(app, "retry", "mailer")
    assert code == 0 and "1 parked events of mailer will be tried again." in out
    assert "(retry asked)" in _invoke(app, "parked", "mailer")[1]
    _invoke(app, "run", "--once")
    assert flaky.seen == [1, 3, 2]
    assert "mailer has no parked events." in _invoke(app, "parked", "mailer")[1]


def test_retry_one_event_and_unknown_ones(setup: tuple[ShimmieStack, Flask, Flaky]) -> None:
    stack, app, _ = setup
    _invoke(app, "run", "--once")
    with app.app_context():
        (parked,) = _state(app).runner.store.parked("mailer")
    assert _invoke(app, "retry", "mailer", parked.event_id)[0] == 0
    code, out = _invoke(app, "retry", "mailer", "00000000-0000-4000-8000-000000000000")
    assert code != 0 and "has no parked event 00000000-0000-4000-8000-000000000000" in out
    code, out = _invoke(app, "retry", "ghost")
    assert code != 0 and "No subscription named 'ghost'" in out


def test_retry_resumes_a_stopped_subscription(subs: SubsHarness) -> None:
    stack = ShimmieStack()
    flaky = Flaky()
    stack.reactor("strict", start="beginning", max_attempts=1, on_failure="stop")(flaky)
    app = subs.app(stack)
    with app.app_context():
        stack.record_unchecked_event("s", "BAD", {})
    _invoke(app, "run", "--once")
    code, out = _invoke(app)
    assert out.splitlines()[1].split()[4] == "failed"
    assert "strict failed: RuntimeError: cannot send event 1" in out
    flaky.fixed = True
    code, out = _invoke(app, "retry", "strict")
    assert code == 0 and "strict is active again" in out
    _invoke(app, "run", "--once")
    assert flaky.seen == [1]


def test_reset_moves_a_reactor_and_rebuilds_a_projection(setup: tuple[ShimmieStack, Flask, Flaky]) -> None:
    stack, app, flaky = setup
    flaky.fixed = True
    _invoke(app, "run", "--once")
    assert flaky.seen == [1, 2, 3]
    code, out = _invoke(app, "reset", "mailer", "--to", "1")
    assert code == 0 and "mailer is at position 1" in out
    code, out = _invoke(app, "reset", "tally")
    assert code == 0 and "tally rebuilds from the first event (its rows are emptied now)." in out
    with projection_db(stack, app) as db:
        assert tally_rows(db) == []
    _invoke(app, "run", "--once")
    assert flaky.seen == [1, 2, 3, 2, 3]
    with projection_db(stack, app) as db:
        assert [row[1] for row in tally_rows(db)] == [1, 2, 3]


def test_reset_refuses_what_would_corrupt_or_overshoot(setup: tuple[ShimmieStack, Flask, Flaky]) -> None:
    stack, app, _ = setup
    _invoke(app, "run", "--once")
    code, out = _invoke(app, "reset", "tally", "--to", "1")
    assert code != 0 and "Cannot move projection 'tally' back from 3 to 1" in out
    code, out = _invoke(app, "reset", "mailer", "--to", "9")
    assert code != 0 and "the store's last position is 3" in out
    code, out = _invoke(app, "reset", "tally", "--to", "3")  # skipping forward (here: nowhere) is fine
    assert code == 0
    assert _invoke(app, "reset", "mailer", "--to", "-1")[0] == 2  # click refuses it


def test_no_subscriptions(subs: SubsHarness) -> None:
    app = subs.app(ShimmieStack())
    assert _invoke(app) == (0, "No subscriptions are registered.\n")

"""Durable subscriptions (reactors and projections) in one process, on every backend.

The apps are testing apps: no background thread runs, the tests drive the runner with
``stack.run_subscriptions()`` (what the pytest plugin's ``shimmie.run_subscriptions()`` calls).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest
from flask import Flask, current_app
from marshmallow import Schema, fields

from flask_shimmie import Event, NewEvent, Projection, ShimmieStack, subscribe
from flask_shimmie.state import AppState
from tests.subscription_fixtures import durable_subs as durable_subs
from tests.subscription_fixtures import quick as quick
from tests.subscription_fixtures import subs as subs
from tests.subscription_harness import SubsHarness, Tally, projection_db, sql, tally_rows


def _record(stack: ShimmieStack, app: Flask, *names: str, stream: str = "s", **data: Any) -> list[Event]:
    with app.app_context():
        return stack.record_unchecked_events([NewEvent(stream, name, dict(data)) for name in names])


def _run(stack: ShimmieStack, app: Flask, *names: str) -> dict[str, int]:
    with app.app_context():
        return stack.run_subscriptions(list(names) or None)


def _state(app: Flask) -> AppState:
    state: AppState = app.extensions["shimmie"]
    return state


def _row(app: Flask, name: str) -> Any:
    state = _state(app)
    state.open_stores()  # also after a shutdown
    return state.runner.store.get(name)


# -- delivery ---------------------------------------------------------------------------------------


class Submission(Schema):
    title = fields.String(required=True)
    email = fields.String(metadata={"pii": True})


def test_reactor_gets_every_event_in_order_upcast_and_with_pii(subs: SubsHarness) -> None:
    stack = ShimmieStack()
    seen: list[Event] = []
    stack.event_schema("SUBMITTED", Submission)
    stack.reactor("audit", start="beginning")(seen.append)
    app = subs.app(stack)
    with app.app_context():
        stack.record_unchecked_event("s1", "SUBMITTED", {"title": "a", "email": "a@example.com"})
        stack.record_unchecked_events([NewEvent(f"s{n}", "OTHER", {"n": n}) for n in range(1, 1201)])
    stack.upcaster("OTHER", 1, lambda data: {**data, "upcast": True})
    assert _run(stack, app) == {"audit": 1201}
    assert [e.sequence_num for e in seen] == list(range(1, 1202))
    assert seen[0].data == {"title": "a", "email": "a@example.com"}
    assert all(e.data["upcast"] for e in seen[1:]) and not any(e.replay for e in seen)
    assert _row(app, "audit").position == 1201
    assert _run(stack, app) == {"audit": 0}  # a clean second run repeats nothing
    assert len(seen) == 1201


def test_a_filtered_reactor_takes_its_events_and_moves_past_the_rest(subs: SubsHarness) -> None:
    stack = ShimmieStack()
    seen: list[int] = []
    stack.reactor("only-a", events=["A"], start="beginning")(lambda event: seen.append(event.sequence_num))
    app = subs.app(stack)
    _record(stack, app, "A", "B", "A", "B", "B")
    assert _run(stack, app) == {"only-a": 2}
    assert seen == [1, 3]
    # Nothing up to the last stored event matched after 3: a rare-event reactor does not rescan.
    assert _row(app, "only-a").position == 5
    _record(stack, app, "B", "A")
    assert _run(stack, app) == {"only-a": 1}
    assert seen == [1, 3, 7]


def test_start_now_begins_after_the_events_stored_before_it_was_registered(subs: SubsHarness) -> None:
    stack = ShimmieStack()
    now: list[int] = []
    beginning: list[int] = []
    app = subs.app(stack)
    _record(stack, app, "OLD", "OLD")
    stack.reactor("from-now")(lambda event: now.append(event.sequence_num))
    stack.reactor("from-beginning", start="beginning")(lambda event: beginning.append(event.sequence_num))
    _run(stack, app)
    _record(stack, app, "NEW")
    assert _run(stack, app) == {"from-now": 1, "from-beginning": 1}
    assert now == [3] and beginning == [1, 2, 3]


def test_handlers_run_in_an_app_context_and_may_record_events(subs: SubsHarness) -> None:
    stack = ShimmieStack()
    apps: list[Any] = []
    chained: list[str] = []

    @stack.reactor("echo", events=["PING"], start="beginning")
    def echo(event: Event) -> None:
        apps.append(current_app._get_current_object())  # type: ignore[attr-defined]
        stack.record_unchecked_event(event.stream_id, "PONG", {})

    stack.reactor("pongs", events=["PONG"], start="beginning")(lambda e: chained.append(e.event_name))
    app = subs.app(stack)
    _record(stack, app, "PING", "PING")
    # A round handles what the handlers recorded meanwhile, until nothing is left.
    counts = _run(stack, app)
    assert counts == {"echo": 2, "pongs": 2} and chained == ["PONG", "PONG"]
    assert apps == [app, app]


def test_replay_never_calls_subscriptions(subs: SubsHarness) -> None:
    stack = ShimmieStack()
    seen: list[int] = []
    stack.reactor("never-in-replay", start="beginning")(lambda event: seen.append(event.sequence_num))
    app = subs.app(stack)
    _record(stack, app, "A", "B")
    with app.app_context():
        stack.replay()
    code = app.test_cli_runner().invoke(args=["shimmie", "replay"]).exit_code
    assert code == 0 and seen == []
    assert _run(stack, app) == {"never-in-replay": 2}


def test_a_restart_resumes_after_the_stored_position(durable_subs: SubsHarness) -> None:
    seen: list[int] = []

    def build() -> ShimmieStack:
        stack = ShimmieStack()
        stack.reactor("resumes", start="beginning")(lambda event: seen.append(event.sequence_num))
        stack.register_projection(Tally)
        return stack

    first = build()
    app = durable_subs.app(first)
    _record(first, app, "A", "B", "C")
    assert _run(first, app) == {"resumes": 3, "tally": 3}
    durable_subs.shut(app)
    second = build()
    again = durable_subs.app(second)
    _record(second, again, "D", "E")
    assert _run(second, again) == {"resumes": 2, "tally": 2}
    assert seen == [1, 2, 3, 4, 5]
    with projection_db(second, again) as db:
        assert [row[1] for row in tally_rows(db)] == [1, 2, 3, 4, 5]


# -- projections ------------------------------------------------------------------------------------


def test_a_projection_writes_each_event_once_and_views_read_it(subs: SubsHarness) -> None:
    stack = ShimmieStack()
    stack.register_projection(Tally)
    app = subs.app(stack)
    with projection_db(stack, app) as db:  # startup set the table up: a view can read it at once
        assert tally_rows(db) == []
    events = _record(stack, app, *["X"] * 700, detail="d")
    assert _run(stack, app) == {"tally": 700}
    assert _run(stack, app) == {"tally": 0}
    with projection_db(stack, app) as db:
        rows = tally_rows(db)
    assert [(row[0], row[1]) for row in rows] == [(e.event_id, e.sequence_num) for e in events]
    assert _row(app, "tally").position == 700


def test_a_version_bump_rebuilds_the_projection_from_the_first_event(durable_subs: SubsHarness) -> None:
    first = ShimmieStack()
    first.register_projection(Tally)
    app = durable_subs.app(first)
    _record(first, app, "A", "B", detail="old")
    _run(first, app)
    durable_subs.shut(app)

    class TallyV2(Tally):
        version = 2

        @subscribe("*")
        def count(self, event: Event, db: Any) -> None:
            db.execute(
                sql(db, "INSERT INTO tally VALUES (?, ?, ?, ?)"),
                (event.event_id, event.sequence_num, event.event_name, "v2"),
            )

    second = ShimmieStack()
    second.register_projection(TallyV2)
    again = durable_subs.app(second)
    with projection_db(second, again) as db:
        # Startup emptied the rows of version 1: they are not served while version 2 rebuilds.
        assert tally_rows(db) == []
    assert _row(again, "tally").version == 2
    _record(second, again, "C")
    assert _run(second, again) == {"tally": 3}
    with projection_db(second, again) as db:
        assert [(row[1], row[3]) for row in tally_rows(db)] == [(1, "v2"), (2, "v2"), (3, "v2")]


class Picky(Projection):
    """Fails on ``POISON`` events while ``broken`` is set; counts the rest in ``tally``."""

    name = "picky"
    broken = True
    max_attempts = 3

    def setup(self, db: Any) -> None:
        Tally().setup(db)

    def reset(self, db: Any) -> None:
        Tally().reset(db)

    @subscribe("*")
    def apply(self, event: Event, db: Any) -> None:
        Tally().count(event, db)
        if event.event_name == "POISON" and type(self).broken:
            raise ValueError(f"cannot take event {event.sequence_num}")


def test_a_projection_stops_at_a_poison_event_and_resumes_after_a_fix(
    subs: SubsHarness, caplog: pytest.LogCaptureFixture
) -> None:
    stack = ShimmieStack()
    picky = type("PickyCopy", (Picky,), {"broken": True})
    stack.register_projection(picky)
    app = subs.app(stack, SHIMMIE_ADMIN_URL="/admin")
    _record(stack, app, "OK", "OK", "POISON", "OK")
    with caplog.at_level(logging.WARNING, logger="flask_shimmie.runner"):
        assert _run(stack, app) == {"picky": 2}
    row = _row(app, "picky")
    # The events before the poison one committed (the batch was retried event by event).
    assert row.state == "failed" and row.position == 2
    assert "ValueError: cannot take event 3" in row.error and "Traceback" in row.error
    with projection_db(stack, app) as db:
        assert [r[1] for r in tally_rows(db)] == [1, 2]
    retries = [r for r in caplog.records if r.levelno == logging.WARNING]
    tries = [r for r in retries if "failed on event 3" in r.getMessage()]
    assert len(tries) == 2  # tries 1 and 2 log a retry; the third gives up
    assert any(
        "stopped at event 3" in r.getMessage() and "Traceback" in r.getMessage() for r in caplog.records
    )
    health = app.test_client().get("/admin/health").get_json()
    assert health["status"] == "degraded" and health["degraded_subscriptions"] == ["picky"]
    _record(stack, app, "OK")
    assert _run(stack, app) == {"picky": 0}  # a failed projection stays where it stopped

    picky.broken = False  # the fix is deployed; the operator asks for a retry
    with app.app_context():
        from flask_shimmie import subscription_control

        assert subscription_control.retry(_state(app), "picky").resumed
    assert _run(stack, app) == {"picky": 3}
    assert _row(app, "picky").state == "active"
    with projection_db(stack, app) as db:
        assert [r[1] for r in tally_rows(db)] == [1, 2, 3, 4, 5]
    assert app.test_client().get("/admin/health").get_json()["status"] == "ok"


def test_a_projection_whose_setup_fails_stops_until_retried(subs: SubsHarness) -> None:
    stack = ShimmieStack()
    state = {"broken": True}

    class Fussy(Tally):
        name = "fussy"

        def setup(self, db: Any) -> None:
            if state["broken"]:
                raise RuntimeError("no such tablespace")
            super().setup(db)

    stack.register_projection(Fussy)
    app = subs.app(stack, SHIMMIE_ADMIN_URL="/admin")
    _record(stack, app, "A")
    assert _run(stack, app) == {"fussy": 0}
    row = _row(app, "fussy")
    assert row.state == "failed" and row.error.startswith("setup(db): Traceback")
    assert "RuntimeError: no such tablespace" in row.error
    assert app.test_client().get("/admin/health").get_json()["degraded_subscriptions"] == ["fussy"]
    state["broken"] = False
    with app.app_context():
        _state(app).runner.store.set_state("fussy", "active")
    assert _run(stack, app) == {"fussy": 1}
    with projection_db(stack, app) as db:
        assert [r[1] for r in tally_rows(db)] == [1]


def test_a_projection_may_park_instead_of_stopping(subs: SubsHarness) -> None:
    stack = ShimmieStack()
    parking = type("Parking", (Picky,), {"name": "parking", "on_failure": "park", "broken": True})
    stack.register_projection(parking)
    app = subs.app(stack)
    _record(stack, app, "OK", "POISON", "OK")
    assert _run(stack, app) == {"parking": 2}
    with app.app_context():
        (parked,) = _state(app).runner.store.parked("parking")
    assert parked.sequence_num == 2 and parked.attempts == 3
    with projection_db(stack, app) as db:
        assert [r[1] for r in tally_rows(db)] == [1, 3]  # the failed event's write rolled back


# -- reactors' failures ------------------------------------------------------------------------------


def test_a_poison_event_is_parked_after_its_retries_and_later_events_go_on(subs: SubsHarness) -> None:
    stack = ShimmieStack()
    calls: list[int] = []
    state = {"broken": True}

    @stack.reactor("careful", start="beginning", max_attempts=4)
    def careful(event: Event) -> None:
        calls.append(event.sequence_num)
        if event.event_name == "POISON" and state["broken"]:
            raise RuntimeError("the mail server said no")

    app = subs.app(stack)
    events = _record(stack, app, "OK", "POISON", "OK")
    assert _run(stack, app) == {"careful": 2}
    assert calls == [1, 2, 2, 2, 2, 3]
    with app.app_context():
        store = _state(app).runner.store
        (parked,) = store.parked("careful")
        assert (parked.event_id, parked.sequence_num, parked.attempts) == (events[1].event_id, 2, 4)
        assert "RuntimeError: the mail server said no" in parked.error and not parked.retry_requested
        assert store.get("careful").position == 3 and store.get("careful").state == "active"

    # Retried once fixed: handled, then unparked.
    state["broken"] = False
    with app.app_context():
        assert store.request_retry("careful") == 1
    assert _run(stack, app) == {"careful": 0}
    assert calls[-1] == 2
    with app.app_context():
        assert store.parked("careful") == []


def test_a_parked_event_that_fails_again_is_parked_again(subs: SubsHarness) -> None:
    stack = ShimmieStack()

    @stack.reactor("stubborn", start="beginning", max_attempts=2)
    def stubborn(event: Event) -> None:
        raise RuntimeError("still broken")

    app = subs.app(stack)
    _record(stack, app, "A", "B")
    _run(stack, app)
    with app.app_context():
        store = _state(app).runner.store
        assert [p.attempts for p in store.parked("stubborn")] == [2, 2]
        store.request_retry("stubborn", store.parked("stubborn")[0].event_id)
    _run(stack, app)
    with app.app_context():
        first, second = store.parked("stubborn")
        assert (first.attempts, first.retry_requested) == (4, False) and second.attempts == 2
        assert store.get("stubborn").position == 2


def test_a_reactor_may_stop_instead_of_parking(subs: SubsHarness) -> None:
    stack = ShimmieStack()
    seen: list[int] = []

    @stack.reactor("strict", start="beginning", max_attempts=2, on_failure="stop")
    def strict(event: Event) -> None:
        if event.event_name == "POISON":
            raise RuntimeError("no")
        seen.append(event.sequence_num)

    app = subs.app(stack)
    _record(stack, app, "OK", "POISON", "OK")
    assert _run(stack, app) == {"strict": 1}
    row = _row(app, "strict")
    assert (row.state, row.position) == ("failed", 1) and seen == [1]


def test_a_runner_that_loses_its_lease_stops_at_once(
    subs: SubsHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = ShimmieStack()
    seen: list[int] = []
    held = {"alive": True}
    app = subs.app(stack)
    with app.app_context():
        store = _state(app).runner.store
    take = store.try_lease

    def try_lease(name: str, runner: str) -> Any:
        lease = take(name, runner)
        if lease is not None:
            alive = lease.alive
            monkeypatch.setattr(lease, "alive", lambda: held["alive"] and alive())
        return lease

    monkeypatch.setattr(store, "try_lease", try_lease)

    @stack.reactor("fenced", start="beginning", max_attempts=3)
    def fenced(event: Event) -> None:
        seen.append(event.sequence_num)
        if event.sequence_num == 2:
            held["alive"] = False  # another process took it over meanwhile
            raise RuntimeError("fails once the lease is gone")

    _record(stack, app, "A", "B", "C")
    assert _run(stack, app) == {"fenced": 1}
    # No retry ran without the lease and nothing was parked: the next holder tries event 2 again
    # (and event 1 too when the fenced write of its position was refused: at least once).
    assert seen == [1, 2]
    with app.app_context():
        assert store.parked("fenced") == [] and store.get("fenced").position in (0, 1)
        assert not _state(app).runner.holds("fenced")


# -- health -----------------------------------------------------------------------------------------


def test_health_is_degraded_while_a_subscription_lags_too_far(subs: SubsHarness) -> None:
    stack = ShimmieStack()
    stack.reactor("slowpoke", start="beginning")(lambda event: None)
    app = subs.app(stack, SHIMMIE_ADMIN_URL="/admin", SHIMMIE_SUBSCRIPTION_MAX_LAG=2)
    client = app.test_client()
    _record(stack, app, "A", "B")
    assert client.get("/admin/health").get_json()["status"] == "ok"
    _record(stack, app, "C")
    body = client.get("/admin/health").get_json()
    assert (body["status"], body["degraded_subscriptions"]) == ("degraded", ["slowpoke"])
    _run(stack, app)
    assert client.get("/admin/health").get_json()["degraded_subscriptions"] == []


# -- where they run ---------------------------------------------------------------------------------


def test_a_non_testing_app_runs_them_in_a_background_thread_until_shutdown(subs: SubsHarness) -> None:
    import threading
    import time

    stack = ShimmieStack()
    seen: list[int] = []
    got = threading.Event()

    @stack.reactor("live", start="beginning")
    def live(event: Event) -> None:
        seen.append(event.sequence_num)
        got.set()

    app = subs.app(stack, TESTING=False)
    with app.app_context():
        stack.startup()
        runner = _state(app).runner
        assert runner.running
        started = time.monotonic()
        stack.record_unchecked_event("s", "A", {})
        assert got.wait(5)
        latency = time.monotonic() - started
        stack.shutdown()
    assert seen == [1] and latency < 2.0
    assert not runner.running and not runner.holds("live")
    assert _row(app, "live").position == 1 and _row(app, "live").runner is None


def test_no_thread_for_testing_apps_cli_commands_or_when_switched_off(subs: SubsHarness) -> None:
    stack = ShimmieStack()
    stack.reactor("quiet")(lambda event: None)
    testing = subs.app(stack)
    off = subs.app(stack, TESTING=False, SHIMMIE_RUN_SUBSCRIPTIONS=False)
    in_cli = subs.app(stack, TESTING=False)
    for app in (testing, off):
        with app.app_context():
            stack.startup()
        assert not _state(app).runner.running
    result = in_cli.test_cli_runner().invoke(args=["shimmie", "replay"])
    assert result.exit_code == 0, result.output
    assert _state(in_cli).started and not _state(in_cli).runner.running


# -- registration -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start": "later"}, "start must be 'now' or 'beginning'"),
        ({"on_failure": "ignore"}, "on_failure must be 'park' or 'stop'"),
        ({"max_attempts": 0}, "max_attempts must be a whole number >= 1"),
        ({"max_attempts": True}, "max_attempts must be a whole number >= 1"),
        ({"events": "SONG_CREATED"}, "events must be a list of event names"),
        ({"events": []}, "events must list one or more event names"),
    ],
)
def test_a_reactor_with_a_bad_choice_is_refused(kwargs: dict[str, Any], message: str) -> None:
    stack = ShimmieStack()
    with pytest.raises(ValueError, match=message):
        stack.reactor("r", **kwargs)(lambda event: None)
    assert stack.registry.subscriptions == []


@pytest.mark.parametrize("name", ["", "has space", "a/b", "-leading", "x" * 101, None])
def test_a_bad_subscription_name_is_refused(name: Any) -> None:
    with pytest.raises(ValueError, match="A subscription name is 1 to 100 letters"):
        ShimmieStack().reactor(name)


def test_reactors_and_projections_share_one_namespace() -> None:
    stack = ShimmieStack()
    stack.register_projection(Tally)
    with pytest.raises(ValueError, match="A subscription named 'tally' is already registered"):
        stack.reactor("tally")(lambda event: None)
    stack.reactor("other")(lambda event: None)
    with pytest.raises(ValueError, match="'other' is already registered"):
        stack.reactor("other")(lambda event: None)
    assert [s.name for s in stack.registry.subscriptions] == ["tally", "other"]


def test_a_bad_projection_is_refused() -> None:
    stack = ShimmieStack()
    with pytest.raises(TypeError, match="needs a Projection subclass"):
        stack.register_projection(Tally())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs a name"):
        stack.register_projection(type("Nameless", (Tally,), {"name": ""}))
    with pytest.raises(ValueError, match="has no handlers"):
        stack.register_projection(type("Idle", (Projection,), {"name": "idle"}))
    with pytest.raises(ValueError, match="version must be a whole number >= 1"):
        stack.register_projection(type("V0", (Tally,), {"name": "v0", "version": 0}))
    with pytest.raises(ValueError, match="on_failure must be 'park' or 'stop'"):
        stack.register_projection(type("Odd", (Tally,), {"name": "odd", "on_failure": "skip"}))
    assert stack.registry.subscriptions == []


def test_a_name_stored_with_another_kind_fails_startup(durable_subs: SubsHarness) -> None:
    from flask_shimmie import ConfigurationError

    first = ShimmieStack()
    first.register_projection(Tally)
    app = durable_subs.app(first)
    _run(first, app)
    durable_subs.shut(app)
    second = ShimmieStack()
    second.reactor("tally")(lambda event: None)
    again = durable_subs.app(second)
    with again.app_context(), pytest.raises(ConfigurationError):
        second.startup()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("SHIMMIE_RUN_SUBSCRIPTIONS", "yes", "SHIMMIE_RUN_SUBSCRIPTIONS = 'yes' must be True"),
        ("SHIMMIE_SUBSCRIPTION_TAKEOVER", 0, "SHIMMIE_SUBSCRIPTION_TAKEOVER = 0 must be seconds > 0"),
        ("SHIMMIE_SUBSCRIPTION_TAKEOVER", "5", "SHIMMIE_SUBSCRIPTION_TAKEOVER = '5' must be seconds > 0"),
        ("SHIMMIE_SUBSCRIPTION_MAX_LAG", -1, "SHIMMIE_SUBSCRIPTION_MAX_LAG = -1 must be a number of events"),
        (
            "SHIMMIE_SUBSCRIPTION_MAX_LAG",
            1.5,
            "SHIMMIE_SUBSCRIPTION_MAX_LAG = 1.5 must be a number of events",
        ),
    ],
)
def test_bad_subscription_settings_are_refused(key: str, value: Any, message: str) -> None:
    from flask_shimmie import ConfigurationError

    app = Flask("bad_settings")
    app.config[key] = value
    with pytest.raises(ConfigurationError, match=message):
        ShimmieStack(app)


def test_the_settings_have_their_defaults() -> None:
    app = Flask("defaults")
    ShimmieStack(app)
    settings = _state(app).settings
    assert (settings.run_subscriptions, settings.subscription_takeover, settings.subscription_max_lag) == (
        True,
        5.0,
        1000,
    )
    assert dataclasses.is_dataclass(settings)

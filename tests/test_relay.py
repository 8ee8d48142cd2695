"""Relays (``stack.relay``) against a scripted sink, on every backend: batches, positions, outages, refusals.

The sink here is a :class:`~flask_shimmie.sinks.Sink` whose broker is a list: what it "confirms" is
appended, and a test scripts the failures (an outage, a cut part way through a batch, a refused
event). The apps are testing apps, driven by ``stack.run_subscriptions()``; the real brokers are in
``tests/test_relay_brokers.py``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import pytest
from flask import Flask, request

from flask_shimmie import Event, NewEvent, ShimmieStack
from flask_shimmie import relay as relay_module
from flask_shimmie import runner as runner_module
from flask_shimmie.sinks import Sink, SinkError
from flask_shimmie.state import AppState
from tests.subscription_fixtures import subs as subs
from tests.subscription_fixtures import without_waits
from tests.subscription_harness import SubsHarness

ADMIN = {"Authorization": "Bearer admin"}


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries and outage pauses without the production backoff; no follower threads."""
    without_waits(monkeypatch)
    monkeypatch.setattr(runner_module, "OUTAGE_DELAY", 0.001)
    monkeypatch.setattr(runner_module, "OUTAGE_DELAY_MAX", 0.002)


class ScriptedSink(Sink):
    """A broker in a list. ``down``: every publish fails before sending. ``cut_at``: a publish
    reaching that position confirms the events before it, then fails (once per entry).
    ``refuse``: positions refused for good, until taken out of the set."""

    def __init__(self) -> None:
        self.confirmed: list[Event] = []
        self.batches: list[list[int]] = []
        self.down = False
        self.cut_at: list[int] = []
        self.refuse: set[int] = set()
        self.crash: BaseException | None = None
        self.closed = 0

    def publish(self, events: Sequence[Event]) -> None:
        if not events:
            return
        self.batches.append([event.sequence_num for event in events])
        if self.crash is not None:
            raise self.crash
        if self.down:
            raise SinkError("Cannot connect to the broker: connection refused")
        for event in events:
            if event.sequence_num in self.cut_at:
                self.cut_at.remove(event.sequence_num)
                raise SinkError(f"the connection was lost at {event.sequence_num}", event)
            if event.sequence_num in self.refuse:
                raise SinkError(f"event {event.sequence_num} is too large", event, refused=True)
            self.confirmed.append(event)

    def close(self) -> None:
        self.closed += 1

    def positions(self) -> list[int]:
        return [event.sequence_num for event in self.confirmed]


def record(stack: ShimmieStack, app: Flask, count: int, *, name: str = "CREATED") -> list[Event]:
    with app.app_context():
        return stack.record_unchecked_events([NewEvent(f"s{n % 3}", name, {"n": n}) for n in range(count)])


def run(stack: ShimmieStack, app: Flask) -> dict[str, int]:
    with app.app_context():
        return stack.run_subscriptions()


def row(app: Flask, name: str = "out") -> Any:
    state: AppState = app.extensions["shimmie"]
    with app.app_context():
        return state.runner.store.get(name)


def parked(app: Flask, name: str = "out") -> list[Any]:
    state: AppState = app.extensions["shimmie"]
    with app.app_context():
        return state.runner.store.parked(name)


def relay_app(subs: SubsHarness, sink: ScriptedSink, **options: Any) -> tuple[ShimmieStack, Flask]:
    stack = ShimmieStack()
    stack.relay("out", sink, **options)
    return stack, subs.app(stack)


def test_every_event_is_published_once_in_order_in_batches(subs: SubsHarness) -> None:
    sink = ScriptedSink()
    stack, app = relay_app(subs, sink)
    events = record(stack, app, 1200)

    assert run(stack, app) == {"out": 1200}

    assert sink.positions() == list(range(1, 1201))
    assert [event.event_id for event in sink.confirmed] == [event.event_id for event in events]
    assert sink.batches[0] == list(range(1, runner_module.BATCH_SIZE + 1))  # one publish per read
    assert len(sink.batches) == 3
    assert row(app).position == 1200 and row(app).kind == "relay"


def test_a_cut_part_way_saves_the_position_before_the_unconfirmed_event_and_resends_from_it(
    subs: SubsHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner_module, "OUTAGE_DELAY", 60.0)  # no second try within the first run
    sink = ScriptedSink()
    sink.cut_at = [7]
    stack, app = relay_app(subs, sink)
    record(stack, app, 10)

    assert run(stack, app) == {"out": 6}
    assert row(app).position == 6
    assert sink.positions() == [1, 2, 3, 4, 5, 6]

    assert run(stack, app) == {"out": 4}  # a new lease: it tries at once
    assert sink.batches[-1] == [7, 8, 9, 10]
    assert sink.positions() == list(range(1, 11))
    assert row(app).position == 10 and parked(app) == []


def test_an_outage_longer_than_max_attempts_parks_and_skips_nothing(subs: SubsHarness) -> None:
    sink = ScriptedSink()
    sink.down = True
    stack, app = relay_app(subs, sink, max_attempts=2, on_failure="stop")
    record(stack, app, 5)

    for _ in range(10):
        run(stack, app)
        time.sleep(0.003)

    assert len(sink.batches) >= 5  # tried again and again, each time from the first event
    assert all(batch == [1, 2, 3, 4, 5] for batch in sink.batches)
    info = row(app)
    assert (info.position, info.state) == (0, "active")
    assert parked(app) == [] and sink.confirmed == []

    sink.down = False
    time.sleep(0.003)
    assert run(stack, app) == {"out": 5}
    assert sink.positions() == [1, 2, 3, 4, 5]


def test_an_event_the_broker_refuses_is_parked_after_max_attempts_and_the_rest_goes_on(
    subs: SubsHarness,
) -> None:
    sink = ScriptedSink()
    sink.refuse = {3}
    stack, app = relay_app(subs, sink, max_attempts=3)
    events = record(stack, app, 5)

    assert run(stack, app) == {"out": 4}

    assert sink.positions() == [1, 2, 4, 5]
    assert [batch for batch in sink.batches if batch == [3]] == [[3], [3]]  # tries 2 and 3 alone
    (entry,) = parked(app)
    assert (entry.event_id, entry.sequence_num, entry.attempts) == (events[2].event_id, 3, 3)
    assert "too large" in entry.error
    assert row(app).position == 5

    sink.refuse.clear()  # the limit was raised: the operator retries it
    state: AppState = app.extensions["shimmie"]
    state.runner.store.request_retry("out", None)
    run(stack, app)
    assert sink.positions() == [1, 2, 4, 5, 3] and parked(app) == []


def test_with_on_failure_stop_a_refused_event_stops_the_relay_before_it(subs: SubsHarness) -> None:
    sink = ScriptedSink()
    sink.refuse = {3}
    stack, app = relay_app(subs, sink, max_attempts=2, on_failure="stop")
    record(stack, app, 5)

    assert run(stack, app) == {"out": 2}

    info = row(app)
    assert (info.position, info.state) == (2, "failed")
    assert "event 3" in info.error and "too large" in info.error
    assert sink.positions() == [1, 2] and parked(app) == []


def test_a_sink_raising_something_else_counts_nothing_as_published(
    subs: SubsHarness, caplog: pytest.LogCaptureFixture
) -> None:
    sink = ScriptedSink()
    sink.crash = ValueError("a bug in a sink")
    stack, app = relay_app(subs, sink, max_attempts=1)
    record(stack, app, 3)

    with caplog.at_level(logging.WARNING, logger="flask_shimmie.runner"):
        assert run(stack, app) == {"out": 0}

    assert row(app).position == 0 and parked(app) == []
    assert "waiting for the broker" in caplog.text and "a bug in a sink" in caplog.text
    sink.crash = None
    time.sleep(0.01)
    run(stack, app)
    assert sink.positions() == [1, 2, 3]


def test_only_the_named_events_are_relayed_and_start_now_skips_the_past(subs: SubsHarness) -> None:
    sink = ScriptedSink()
    stack = ShimmieStack()
    app = subs.app(stack)
    record(stack, app, 2, name="WANTED")
    stack.relay("out", sink, events=["WANTED"], start="now")
    run(stack, app)  # its first run: it starts after position 2
    record(stack, app, 2, name="OTHER")
    record(stack, app, 2, name="WANTED")

    run(stack, app)

    assert sink.positions() == [5, 6]
    assert row(app).position == 6


def test_pii_goes_out_as_placeholders_unless_asked_for(subs: SubsHarness) -> None:
    plain, full = ScriptedSink(), ScriptedSink()
    stack = ShimmieStack()
    stack.relay("out", plain)
    stack.relay("full", full, with_pii=True)
    app = subs.app(stack)
    with app.app_context():
        stack.record_unchecked_event(
            "s", "SIGNED_UP", {"email": "a@example.org", "n": 1}, pii_fields=["email"]
        )

    run(stack, app)

    assert plain.confirmed[0].data == {"email": "", "n": 1}
    assert full.confirmed[0].data == {"email": "a@example.org", "n": 1}


def test_a_relay_is_listed_and_operated_like_the_other_subscriptions(subs: SubsHarness) -> None:
    sink = ScriptedSink()
    sink.refuse = {2}
    stack = ShimmieStack()

    @stack.authenticator
    def authenticate() -> dict[str, Any] | None:
        return {"admin": True} if request.headers.get("Authorization") == ADMIN["Authorization"] else None

    stack.admin_authorizer(lambda identity: bool(identity["admin"]))
    stack.relay("out", sink, max_attempts=1)
    app = subs.app(stack, SHIMMIE_ADMIN_URL="/admin")
    record(stack, app, 3)
    run(stack, app)

    result = app.test_cli_runner().invoke(args=["shimmie", "subscriptions"])
    assert result.exit_code == 0, result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("out ")]
    assert line.split()[:3] == ["out", "relay", "3"]

    listed = app.test_client().get("/admin/subscriptions", headers=ADMIN).get_json()["subscriptions"]
    assert [(s["name"], s["kind"], s["position"], s["parked"]) for s in listed] == [("out", "relay", 3, 1)]

    sink.refuse.clear()
    assert app.test_client().post("/admin/subscriptions/out/retry", headers=ADMIN).status_code == 200
    run(stack, app)
    assert sink.positions() == [1, 3, 2]

    assert (
        app.test_client().post("/admin/subscriptions/out/reset", headers=ADMIN, json={"to": 1}).status_code
        == 200
    )
    run(stack, app)
    assert sink.positions() == [1, 3, 2, 2, 3]


def test_shutdown_closes_the_sinks(subs: SubsHarness) -> None:
    sink = ScriptedSink()
    stack, app = relay_app(subs, sink)
    with app.app_context():
        stack.startup()

    stack.shutdown(app)

    assert sink.closed == 1


def test_a_relay_waiting_for_its_broker_does_not_hold_up_the_other_subscriptions(subs: SubsHarness) -> None:
    sink = ScriptedSink()
    sink.down = True
    stack = ShimmieStack()
    handled: list[int] = []
    stack.relay("out", sink)
    stack.reactor("count", start="beginning")(lambda event: handled.append(event.sequence_num))
    app = subs.app(stack, TESTING=False, SHIMMIE_RUN_SUBSCRIPTIONS=True)
    record(stack, app, 3)
    state: AppState = app.extensions["shimmie"]
    with app.app_context():
        stack.startup()
        state.runner.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (handled == [1, 2, 3] and len(sink.batches) >= 3):
            time.sleep(0.02)
        assert handled == [1, 2, 3] and len(sink.batches) >= 3
        # The broker is still away; events recorded now reach the reactor all the same.
        record(stack, app, 3)
        while time.monotonic() < deadline and not (
            handled == [1, 2, 3, 4, 5, 6] and sink.batches[-1] == [1, 2, 3, 4, 5, 6]
        ):
            time.sleep(0.02)
        assert handled == [1, 2, 3, 4, 5, 6]
        assert sink.confirmed == [] and sink.batches[-1] == [1, 2, 3, 4, 5, 6]
        sink.down = False
        while time.monotonic() < deadline and sink.positions() != [1, 2, 3, 4, 5, 6]:
            time.sleep(0.02)
        assert sink.positions() == [1, 2, 3, 4, 5, 6]
    finally:
        stack.shutdown(app)


@pytest.mark.parametrize(
    ("arguments", "error", "complaint"),
    [
        (("bad name!", ScriptedSink()), ValueError, "subscription name"),
        (("out", "nats://127.0.0.1:4222"), TypeError, "needs a sink"),
        (("out", ScriptedSink()), ValueError, "start must be"),
    ],
)
def test_bad_arguments_are_refused_when_registered(
    arguments: tuple[Any, ...], error: type[Exception], complaint: str
) -> None:
    stack = ShimmieStack()
    options: dict[str, Any] = {"start": "later"} if complaint == "start must be" else {}
    with pytest.raises(error, match=complaint):
        stack.relay(*arguments, **options)
    with pytest.raises(ValueError, match="with_pii must be"):
        stack.relay("out", ScriptedSink(), with_pii="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_attempts"):
        stack.relay("out", ScriptedSink(), max_attempts=0)
    stack.relay("out", ScriptedSink())
    with pytest.raises(ValueError, match="already registered"):
        stack.relay("out", ScriptedSink())
    assert stack.relay("other", ScriptedSink()) is stack
    assert relay_module.RelaySpec.__name__ in repr(stack.registry.subscription("out"))

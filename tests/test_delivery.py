"""Delivery: ordered, exactly once, read-your-writes, error policy, replay."""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from flask_shimmie import (
    NO_STREAM,
    Event,
    Model,
    NewEvent,
    ReplayError,
    ShimmieStack,
    StreamVersionError,
    event_recorded,
    replay_finished,
    replay_started,
    subscribe,
)
from tests.backends import fresh_store_url, require_backend
from tests.helpers import Journal, append_raw


class Versions(Model):
    """The last version seen per stream, and every position seen."""

    def __init__(self) -> None:
        self.versions: dict[str, int] = {}
        self.positions: list[int] = []

    @subscribe("BUMPED")
    def bumped(self, event: Event) -> None:
        self.versions[event.stream_id] = event.stream_version
        self.positions.append(event.sequence_num)


def test_eight_threads_of_checked_writes_on_one_stream(app: Flask, stack: ShimmieStack) -> None:
    stack.register_model(Versions)
    successes: list[int] = []
    conflicts: list[StreamVersionError] = []
    lock = threading.Lock()
    # Every round, all threads read the version, then all write: one wins, seven lose.
    barrier = threading.Barrier(8)

    def writer() -> None:
        with app.app_context():
            for _ in range(200):
                seen = stack.model(Versions).versions.get("hot", 0)
                barrier.wait(30)
                try:
                    event = stack.record_event("hot", "BUMPED", {}, expected_version=seen or NO_STREAM)
                except StreamVersionError as error:
                    with lock:
                        conflicts.append(error)
                else:
                    # read-your-writes: the model has our event when the call returns
                    assert stack.model(Versions).versions["hot"] >= event.stream_version
                    with lock:
                        successes.append(event.stream_version)
                barrier.wait(30)

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(successes) + len(conflicts) == 1600
    assert sorted(successes) == list(range(1, 201))  # one winner a round; every version used once
    assert len(conflicts) == 1400
    for error in conflicts:
        (conflict,) = error.conflicts
        expected = 0 if conflict["expected"] is NO_STREAM else conflict["expected"]
        assert conflict["stream_id"] == "hot" and conflict["actual"] == expected + 1
    model = stack.model(Versions)
    assert model.positions == list(range(1, 201))
    live = (dict(model.versions), list(model.positions))
    stack.replay()
    rebuilt = stack.model(Versions)
    assert rebuilt is not model
    assert (rebuilt.versions, rebuilt.positions) == live


def test_unchecked_writes_from_threads_are_applied_once_in_order(app: Flask, stack: ShimmieStack) -> None:
    def writer(n: int) -> None:
        with app.app_context():
            for i in range(100):
                stack.record_unchecked_event(f"s{n}", "E", {"i": i})

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    positions = [e.sequence_num for e in stack.model(Journal).events]
    assert positions == list(range(1, 801))
    for n in range(8):
        mine = [e.data["i"] for e in stack.model(Journal).events if e.stream_id == f"s{n}"]
        assert mine == list(range(100))


def test_named_receivers_before_wildcard_in_subscription_order(app: Flask, stack: ShimmieStack) -> None:
    calls: list[str] = []
    stack.subscribe("*", lambda e: calls.append("wild"))
    stack.subscribe("E", lambda e: calls.append("first"))
    stack.subscribe("E", lambda e: calls.append("second"))
    stack.record_unchecked_event("s", "E", {})
    assert calls == ["first", "second", "wild"]


def test_handler_that_records_gets_its_event_after_the_current_one(app: Flask, stack: ShimmieStack) -> None:
    order: list[str] = []

    @stack.subscribe("ORDERED")
    def on_ordered(event: Event) -> None:
        order.append(f"start {event.sequence_num}")
        stack.record_unchecked_event(event.stream_id, "SHIPPED", {})
        order.append(f"end {event.sequence_num}")

    stack.subscribe("SHIPPED", lambda e: order.append(f"shipped {e.sequence_num}"))
    stack.record_unchecked_event("order-1", "ORDERED", {})
    assert order == ["start 1", "end 1", "shipped 2"]
    assert [e.sequence_num for e in stack.model(Journal).events] == [1, 2]


def test_model_error_after_startup_is_logged_and_reported(
    app: Flask, stack: ShimmieStack, caplog: pytest.LogCaptureFixture
) -> None:
    class Fragile(Model):
        @subscribe("E")
        def handle(self, event: Event) -> None:
            if event.data.get("bad"):
                raise ValueError("cannot handle")

    stack.register_model(Fragile)
    stack.record_unchecked_event("s", "E", {})
    event = stack.record_unchecked_event("s", "E", {"bad": True})  # stored, call succeeds
    assert event.sequence_num == 2
    assert [e.sequence_num for e in stack.model(Journal).events] == [1, 2]  # other models unaffected
    assert "Fragile" in app.extensions["shimmie"].dispatcher.degraded
    assert "Fragile.handle failed on event 2" in caplog.text
    assert "cannot handle" in caplog.text


def test_model_error_during_startup_replay_aborts_naming_event_and_model(
    make_app: Callable[..., Flask], stack: ShimmieStack
) -> None:
    class Picky(Model):
        @subscribe("E")
        def handle(self, event: Event) -> None:
            raise KeyError("missing")

    stack.register_model(Picky)
    app = make_app(SHIMMIE_AUTO_STARTUP=False)
    append_raw(app.extensions["shimmie"].event_store, "song-7", "E")
    with app.app_context(), pytest.raises(ReplayError) as caught:
        stack.startup()
    message = str(caught.value)
    assert "event 1" in message and "song-7" in message and "Picky.handle" in message
    assert isinstance(caught.value.__cause__, KeyError)
    assert app.extensions["shimmie"].started is False


def test_failed_replay_keeps_the_previous_models(app: Flask, stack: ShimmieStack) -> None:
    fail = {"on": False}

    class Sometimes(Model):
        def __init__(self) -> None:
            self.count = 0

        @subscribe("E")
        def handle(self, event: Event) -> None:
            if fail["on"] and event.sequence_num == 2:
                raise RuntimeError("bad replay")
            self.count += 1

    stack.register_model(Sometimes)
    for _ in range(3):
        stack.record_unchecked_event("s", "E", {})
    before = stack.model(Sometimes)
    fail["on"] = True
    with pytest.raises(ReplayError, match="event 2"):
        stack.replay()
    assert stack.model(Sometimes) is before and before.count == 3
    fail["on"] = False
    assert stack.replay() == 3
    assert stack.model(Sometimes) is not before and stack.model(Sometimes).count == 3
    stack.record_unchecked_event("s", "E", {})
    assert stack.model(Sometimes).count == 4
    assert before.count == 3  # the old instance is disconnected


def test_replay_delivers_replay_events_and_signals(app: Flask, stack: ShimmieStack) -> None:
    stack.record_unchecked_event("s", "E", {})
    stack.record_unchecked_event("s", "E", {})
    received: list[tuple[str, dict[str, Any]]] = []

    def started(sender: Flask, **kw: Any) -> None:
        received.append(("started", kw))

    def finished(sender: Flask, **kw: Any) -> None:
        received.append(("finished", kw))

    with replay_started.connected_to(started, app), replay_finished.connected_to(finished, app):
        assert stack.replay() == 2
    assert received == [("started", {"from_sequence": 1}), ("finished", {"count": 2, "last_sequence_num": 2})]
    assert [e.replay for e in stack.model(Journal).events] == [True, True]


def test_replay_from_a_position_applies_onto_current_models(app: Flask, stack: ShimmieStack) -> None:
    for _ in range(3):
        stack.record_unchecked_event("s", "E", {})
    journal = stack.model(Journal)
    assert stack.replay(from_sequence=3) == 1
    assert stack.model(Journal) is journal
    assert [e.sequence_num for e in journal.events] == [1, 2, 3, 3]
    with pytest.raises(ValueError, match="from_sequence"):
        stack.replay(from_sequence=0)


def test_an_event_named_star_reaches_wildcard_models_once_live_and_in_replay(
    app: Flask, stack: ShimmieStack
) -> None:
    stack.record_unchecked_event("s", "*", {"n": 1})
    assert [e.event_name for e in stack.model(Journal).events] == ["*"]
    assert stack.replay() == 1
    assert [(e.event_name, e.replay) for e in stack.model(Journal).events] == [("*", True)]


def test_function_subscribers_are_not_called_again_by_replay(app: Flask, stack: ShimmieStack) -> None:
    seen: list[int] = []
    stack.subscribe("E", lambda e: seen.append(e.sequence_num))
    stack.record_unchecked_event("s", "E", {})
    stack.replay()
    assert seen == [1]


def test_event_recorded_signal(app: Flask, stack: ShimmieStack) -> None:
    got: list[int] = []

    def on_recorded(sender: Flask, event: Event) -> None:
        assert sender is app
        got.append(event.sequence_num)

    with event_recorded.connected_to(on_recorded, app):
        stack.record_unchecked_event("s", "E", {})
        stack.record_unchecked_event("s", "E", {})
    assert got == [1, 2]


def test_ensure_handled_applies_events_written_elsewhere(app: Flask, stack: ShimmieStack) -> None:
    stack.startup()
    store = app.extensions["shimmie"].event_store
    append_raw(store, "s", "E")
    append_raw(store, "s", "E")
    assert stack.last_handled_sequence_num == 0
    assert stack.ensure_handled(1) >= 1  # at least that far; the page read may go further
    assert stack.ensure_handled() == 2
    assert [e.replay for e in stack.model(Journal).events] == [False, False]


def test_models_are_kept_alive_by_the_stack(app: Flask, stack: ShimmieStack) -> None:
    class Counter(Model):
        def __init__(self) -> None:
            self.count = 0

        @subscribe("E")
        def handle(self, event: Event) -> None:
            self.count += 1

    stack.register_model(Counter)
    stack.subscribe("E", lambda e: None)  # a lambda, no other reference
    gc.collect()
    stack.record_unchecked_event("s", "E", {})
    assert stack.model(Counter).count == 1
    assert len(app.extensions["shimmie"].dispatcher.receivers("E")) == 3  # Counter, lambda, Journal(*)


@pytest.mark.postgres
def test_the_follower_leaves_this_process_s_own_writes_to_their_writer(
    make_app: Callable[..., Flask], stack: ShimmieStack
) -> None:
    require_backend("postgresql")
    with fresh_store_url("postgresql") as url:
        app = make_app(SHIMMIE_EVENT_STORE=url)
        try:
            with app.app_context():
                stack.startup()
                store = app.extensions["shimmie"].event_store
                reads: list[int] = []
                read = store.read

                def counting_read(*args: Any, **kwargs: Any) -> Any:
                    reads.append(1)
                    return read(*args, **kwargs)

                store.read = counting_read
                for n in range(300):
                    stack.record_unchecked_events([NewEvent(f"s{n}", "E", {"i": i}) for i in range(10)])
                # Every commit notifies the follower; it must not read back what the writer hands over.
                assert len(reads) <= 5, f"the follower read the store back {len(reads)} times in 300 writes"
                assert [e.sequence_num for e in stack.model(Journal).events] == list(range(1, 3001))
        finally:
            stack.shutdown(app)


def test_the_follower_pauses_while_a_local_write_is_handing_over() -> None:
    from flask_shimmie.follower import HANDOVER_PAUSE, Follower

    calls: list[tuple[str, float]] = []

    class Store:
        def wait_for_events(self, after: int, timeout: float, *, others_only: bool = False) -> int:
            calls.append(("woken", time.monotonic()))
            return 1

    class FakeDispatcher:
        store = Store()
        last_handled = 0
        writes_in_flight = 1

        def ensure_handled(self, target: int) -> int:
            calls.append(("caught up", time.monotonic()))
            follower.stop(timeout=0)
            self.last_handled = target
            return target

    follower = Follower(Flask(__name__), FakeDispatcher(), logging.getLogger("test"))  # type: ignore[arg-type]
    follower.start()
    follower._thread.join(5)
    (woken, at), (caught_up, then) = calls[:2]
    assert (woken, caught_up) == ("woken", "caught up")
    assert then - at >= HANDOVER_PAUSE * 0.9

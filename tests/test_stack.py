"""The extension object: init_app, per-app state, registrations, lifecycle."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from flask import Flask

from flask_shimmie import Event, Model, ShimmieError, ShimmieStack, current_stack, subscribe
from tests.helpers import Journal, append_raw


def test_state_lives_in_app_extensions(app: Flask, stack: ShimmieStack) -> None:
    state = app.extensions["shimmie"]
    assert state.stack is stack
    assert current_stack._get_current_object() is stack  # type: ignore[attr-defined]


def test_constructor_with_app_calls_init_app() -> None:
    app = Flask(__name__)
    stack = ShimmieStack(app)
    assert app.extensions["shimmie"].stack is stack


def test_init_app_twice_is_refused(app: Flask, stack: ShimmieStack) -> None:
    with pytest.raises(RuntimeError, match="already initialised"):
        stack.init_app(app)


def test_use_before_init_app_says_what_to_do(stack: ShimmieStack) -> None:
    app = Flask(__name__)
    with app.app_context(), pytest.raises(RuntimeError, match="Did you forget to call init_app"):
        stack.record_unchecked_event("s", "E", {})


def test_use_outside_app_context_says_what_to_do(stack: ShimmieStack) -> None:
    with pytest.raises(RuntimeError, match="app context"):
        stack.record_unchecked_event("s", "E", {})


def test_config_defaults_are_set_once(app: Flask) -> None:
    assert app.config["SHIMMIE_EVENT_STORE"] == "memory://"
    assert app.config["SHIMMIE_PII_STORE"] is None
    assert app.config["SHIMMIE_MAX_REQUEST_SIZE"] == 1024 * 1024
    assert app.config["SHIMMIE_AUTO_STARTUP"] is True
    assert app.config["SHIMMIE_SEQ_WAIT_TIMEOUT"] == 5.0


def test_each_app_has_its_own_store_and_models(make_app: Callable[..., Flask], stack: ShimmieStack) -> None:
    first, second = make_app(), make_app()
    with first.app_context():
        stack.record_unchecked_event("s", "E", {"n": 1})
        stack.record_unchecked_event("s", "E", {"n": 2})
    with second.app_context():
        stack.record_unchecked_event("s", "E", {"n": 3})
        assert [e.data["n"] for e in stack.model(Journal).events] == [3]
        assert stack.last_handled_sequence_num == 1
    with first.app_context():
        assert [e.data["n"] for e in stack.model(Journal).events] == [1, 2]


def test_registrations_after_init_app_apply_to_existing_apps(app: Flask, stack: ShimmieStack) -> None:
    seen: list[str] = []

    class Late(Model):
        def __init__(self) -> None:
            self.names: list[str] = []

        @subscribe("LATE")
        def late(self, event: Event) -> None:
            self.names.append(event.stream_id)

    stack.register_model(Late)
    stack.subscribe("LATE", lambda event: seen.append(event.stream_id))
    stack.record_unchecked_event("x", "LATE", {})
    assert stack.model(Late).names == ["x"]
    assert seen == ["x"]


def test_model_registered_after_startup_is_filled_from_history(app: Flask, stack: ShimmieStack) -> None:
    stack.record_unchecked_event("a", "SEEN", {})
    stack.record_unchecked_event("b", "SEEN", {})

    class Counter(Model):
        def __init__(self) -> None:
            self.count = 0

        @subscribe("SEEN")
        def seen(self, event: Event) -> None:
            self.count += 1

    stack.register_model(Counter)
    assert stack.model(Counter).count == 2
    stack.record_unchecked_event("c", "SEEN", {})
    assert stack.model(Counter).count == 3


def test_model_instances_exist_before_startup(make_app: Callable[..., Flask], stack: ShimmieStack) -> None:
    app = make_app(SHIMMIE_AUTO_STARTUP=False)
    with app.app_context():
        assert isinstance(stack.model(Journal), Journal)
        assert app.extensions["shimmie"].started is False


def test_unknown_model_is_a_clear_error(app: Flask, stack: ShimmieStack) -> None:
    class Unregistered(Model):
        pass

    with pytest.raises(LookupError, match="register_model"):
        stack.model(Unregistered)


def test_register_model_refuses_non_models(stack: ShimmieStack) -> None:
    with pytest.raises(TypeError, match="Model subclass"):
        stack.register_model(dict)  # type: ignore[type-var]
    with pytest.raises(ValueError, match="already registered"):
        stack.register_model(Journal)


def test_startup_order_pre_init_replay_post_init(make_app: Callable[..., Flask], stack: ShimmieStack) -> None:
    calls: list[str] = []
    stack.register_pre_init(lambda: calls.append("pre")).register_post_init(lambda: calls.append("post"))
    stack.subscribe("*", lambda event: calls.append(f"event {event.sequence_num} replay={event.replay}"))
    app = make_app(SHIMMIE_AUTO_STARTUP=False)
    store = app.extensions["shimmie"].event_store
    append_raw(store, "s", "E")
    append_raw(store, "s", "E")
    with app.app_context():
        stack.startup()
        stack.startup()  # idempotent
        assert calls == ["pre", "event 1 replay=True", "event 2 replay=True", "post"]
        stack.record_unchecked_event("s", "E", {})
        assert calls[-1] == "event 3 replay=False"


def test_auto_startup_off_requires_startup(make_app: Callable[..., Flask], stack: ShimmieStack) -> None:
    app = make_app(SHIMMIE_AUTO_STARTUP=False)
    with app.app_context():
        with pytest.raises(ShimmieError, match="startup"):
            stack.record_unchecked_event("s", "E", {})
        stack.startup()
        assert stack.record_unchecked_event("s", "E", {}).sequence_num == 1


def test_first_request_starts_the_stack(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    assert app.extensions["shimmie"].started is False
    response = app.test_client().get("/anything")
    assert response.status_code == 404
    assert app.extensions["shimmie"].started is True


def test_events_recorded_in_pre_init_are_replayed_once(
    make_app: Callable[..., Flask], stack: ShimmieStack
) -> None:
    stack.register_pre_init(lambda: stack.record_unchecked_event("seed", "SEEDED", {}))
    app = make_app()
    with app.app_context():
        stack.startup()
        events = stack.model(Journal).events
        assert [(e.event_name, e.replay) for e in events] == [("SEEDED", True)]


def test_empty_store_starts(app: Flask, stack: ShimmieStack) -> None:
    stack.startup()
    assert stack.last_handled_sequence_num == 0
    assert stack.model(Journal).events == []


def test_shutdown_then_startup_catches_up_without_duplicates(app: Flask, stack: ShimmieStack) -> None:
    stack.record_unchecked_event("s", "E", {})
    stack.shutdown()
    append_raw(app.extensions["shimmie"].event_store, "s", "E")
    stack.startup()
    assert [e.sequence_num for e in stack.model(Journal).events] == [1, 2]


def test_set_logger_routes_model_errors(
    app: Flask, stack: ShimmieStack, caplog: pytest.LogCaptureFixture
) -> None:
    logger = logging.getLogger("my.app")
    stack.set_logger(logger)

    def broken(event: Event) -> None:
        raise ValueError("boom")

    stack.subscribe("BROKEN", broken)
    with caplog.at_level(logging.ERROR, logger="my.app"):
        stack.record_unchecked_event("s", "BROKEN", {})
    assert any(r.name == "my.app" and "boom" in (r.exc_text or "") for r in caplog.records)
    stack.set_logger(logging.getLogger("flask_shimmie"))

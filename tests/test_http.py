"""The stack's HTTP behaviour: JSON errors, X-Seq-Num, catching up, CORS, mounting, config.

Every test builds a small app of its own: a Flask app, a fresh ShimmieStack, and two
processors (a command and a query blueprint) mounted together at ``/things``, whose views
record ``THING_ADDED`` events into a ``ThingList`` model.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import pytest
from flask import Blueprint, Flask, request
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marshmallow import Schema, fields, validate
from werkzeug.test import EnvironBuilder, TestResponse, run_wsgi_app

from flask_shimmie import (
    ANY,
    NO_STREAM,
    ConfigurationError,
    Event,
    Model,
    NewEvent,
    ShimmieStack,
    current_stack,
    subscribe,
)
from flask_shimmie.events import Expected
from flask_shimmie.storage.interface import AppendBatch

LOCALHOST = "http://localhost:3000"


class ThingList(Model):
    """Every thing added, in order."""

    def __init__(self) -> None:
        self.things: list[dict[str, Any]] = []

    @subscribe("THING_ADDED")
    def added(self, event: Event) -> None:
        self.things.append({"id": event.stream_id, "name": event.data["name"], "seq": event.sequence_num})

    def names(self) -> list[str]:
        return [thing["name"] for thing in self.things]


class AddThing(Schema):
    name = fields.String(required=True)
    expected_version = fields.Raw(load_default="NO_STREAM")


class Search(Schema):
    limit = fields.Integer(required=True, validate=validate.Range(min=1))


class ThingChecked(Schema):
    level = fields.Integer(required=True, strict=True)


def _expected(raw: Any) -> Expected:
    if raw == "NO_STREAM":
        return NO_STREAM
    if raw == "ANY":
        return ANY
    assert isinstance(raw, int)
    return raw


def command_blueprint(stack: ShimmieStack) -> Blueprint:
    bp = Blueprint("thing_command", __name__)

    @bp.post("/<thing_id>")
    @stack.arguments(AddThing, location="json")
    def add_thing(body: dict[str, Any], thing_id: str) -> tuple[dict[str, Any], int]:
        seen = stack.model(ThingList).names()
        event = current_stack.record_event(
            thing_id,
            "THING_ADDED",
            {"name": body["name"]},
            expected_version=_expected(body["expected_version"]),
        )
        return {"sequence_num": event.sequence_num, "seen_before": seen}, 201

    @bp.post("/<thing_id>/locked")
    def add_locked(thing_id: str) -> tuple[dict[str, Any], int]:
        with current_stack.lock_stream(thing_id, timeout=0.05):
            event = current_stack.record_unchecked_event(thing_id, "THING_ADDED", {"name": "locked"})
        return {"sequence_num": event.sequence_num}, 201

    @bp.post("/<thing_id>/check")
    def check_thing(thing_id: str) -> tuple[dict[str, Any], int]:
        event = current_stack.record_unchecked_event(thing_id, "THING_CHECKED", request.get_json())
        return {"data": event.data}, 201

    @bp.route("/_peek", methods=["POST", "PUT", "PATCH", "DELETE"])
    def peek() -> dict[str, Any]:
        """A command that records nothing: it shows what the model held when the view ran."""
        return {"names": stack.model(ThingList).names()}

    @bp.post("/_echo")
    def echo() -> dict[str, Any]:
        return {"body": request.get_json(), "content_length": request.content_length}

    return bp


def query_blueprint(stack: ShimmieStack) -> Blueprint:
    bp = Blueprint("thing_query", __name__)

    @bp.get("")
    def list_things() -> dict[str, Any]:
        return {"names": stack.model(ThingList).names()}

    @bp.get("/_search")
    @stack.arguments(Search, location="query")
    def search(args: dict[str, Any]) -> dict[str, Any]:
        return {"limit": args["limit"]}

    @bp.get("/_boom")
    def boom() -> str:
        raise RuntimeError("secret-internal")

    return bp


def ping_blueprint(name: str) -> Blueprint:
    bp = Blueprint(name, __name__)

    @bp.get("/ping")
    def ping() -> dict[str, str]:
        return {"processor": name}

    return bp


def make_app(config: Mapping[str, Any] | None = None) -> tuple[Flask, ShimmieStack]:
    stack = ShimmieStack()
    stack.register_model(ThingList)
    stack.event_schema("THING_CHECKED", ThingChecked)
    stack.mount_processor("Thing Command", "/things", command_blueprint(stack))
    stack.mount_processor("Thing Query", "/things", query_blueprint(stack))
    app = Flask(__name__)
    app.config.update({"TESTING": True, **(config or {})})
    stack.init_app(app)
    return app, stack


def bare_app(config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update({"TESTING": True, **(config or {})})
    return app


@pytest.fixture
def app() -> Flask:
    return make_app()[0]


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def stored(app: Flask) -> list[Event]:
    """Every event in the app's store."""
    with app.app_context():
        return current_stack.read_events()


def json_error(response: TestResponse, code: int) -> dict[str, Any]:
    """Check the stack's JSON error shape and return the body."""
    assert response.status_code == code, response.get_data(as_text=True)
    assert response.mimetype == "application/json", response.get_data(as_text=True)
    body = response.get_json()
    assert isinstance(body, dict)
    assert body["code"] == code
    assert body["status"] == HTTPStatus(code).phrase
    assert isinstance(body["message"], str) and body["message"]
    return body


def seq_num(response: TestResponse) -> int:
    value = response.headers.get("X-Seq-Num")
    assert value is not None, f"no X-Seq-Num on a {response.status_code} response"
    return int(value)


def append_behind_the_dispatchers_back(app: Flask, stream_id: str, name: str) -> int:
    """Store a THING_ADDED event directly, as another process would; return its position."""
    state = app.extensions["shimmie"]
    pending = state.preparer.prepare(NewEvent(stream_id, "THING_ADDED", {"name": name}))
    result = state.event_store.append(AppendBatch((pending,), {}))
    return int(result.events[-1].sequence_num)


# -- JSON errors ----------------------------------------------------------------------------------


def test_malformed_json_is_400_json_saying_why(app: Flask, client: FlaskClient) -> None:
    raw = client.post("/things/_echo", data='{"name": ', content_type="application/json")
    body = json_error(raw, 400)
    assert "line 1 column" in body["message"], body

    validated = client.post("/things/t1", data="{'single': 'quotes'}", content_type="application/json")
    body = json_error(validated, 400)
    assert "line 1 column" in body["message"], body
    assert stored(app) == []


def test_unknown_path_is_404_json_naming_the_path(client: FlaskClient) -> None:
    body = json_error(client.get("/nowhere/at-all"), 404)
    assert "/nowhere/at-all" in body["message"]


def test_wrong_method_is_405_json_keeping_allow(client: FlaskClient) -> None:
    response = client.delete("/things/_search")
    json_error(response, 405)
    allowed = {method.strip() for method in response.headers["Allow"].split(",")}
    assert "GET" in allowed
    assert "DELETE" not in allowed


def test_version_conflict_is_409_with_conflicts_naming_constants(app: Flask, client: FlaskClient) -> None:
    assert client.post("/things/t1", json={"name": "first"}).status_code == 201

    body = json_error(client.post("/things/t1", json={"name": "again"}), 409)
    assert body["conflicts"] == [{"stream_id": "t1", "expected": "NO_STREAM", "actual": 1}]

    body = json_error(client.post("/things/t1", json={"name": "stale", "expected_version": 5}), 409)
    assert body["conflicts"] == [{"stream_id": "t1", "expected": 5, "actual": 1}]

    body = json_error(client.post("/things/t2", json={"name": "new", "expected_version": 1}), 409)
    assert body["conflicts"] == [{"stream_id": "t2", "expected": 1, "actual": 0}]

    assert [e.data["name"] for e in stored(app)] == ["first"]


def test_lock_not_obtained_is_409() -> None:
    app, stack = make_app()
    client = app.test_client()
    held = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with app.app_context(), stack.lock_stream("t1", timeout=1.0):
            held.set()
            release.wait(5)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(5)
        body = json_error(client.post("/things/t1/locked"), 409)
        assert "t1" in body["message"]
        assert stored(app) == []
    finally:
        release.set()
        thread.join(5)
    assert client.post("/things/t1/locked").status_code == 201
    assert [e.stream_id for e in stored(app)] == ["t1"]


def test_body_over_the_limit_is_413_by_content_length() -> None:
    app, _ = make_app({"SHIMMIE_MAX_REQUEST_SIZE": 64})
    client = app.test_client()
    response = client.post("/things/t1", json={"name": "x" * 200})
    json_error(response, 413)
    assert stored(app) == []
    # A body within the limit still goes through.
    assert client.post("/things/t1", json={"name": "small"}).status_code == 201
    assert [e.data["name"] for e in stored(app)] == ["small"]


def post_streamed(client: FlaskClient, path: str, payload: bytes) -> TestResponse:
    """POST ``payload`` as a chunked body: no Content-Length, as a streaming client sends it."""
    return client.post(
        path,
        input_stream=io.BytesIO(payload),
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )


class UnreadableInput(io.BytesIO):
    """A request's input that fails the test when read."""

    def read(self, size: int | None = -1) -> bytes:
        raise AssertionError("the body of a request that has none was read")


def served_without_length(app: Flask, method: str, path: str, body: io.BytesIO, protocol: str) -> int:
    """The status of ``method path`` with ``body`` as a server ending the input passes it
    (``wsgi.input_terminated``, as gunicorn and granian do), with no Content-Length or chunking."""
    builder = EnvironBuilder(path, method=method, input_stream=body, content_type="application/json")
    environ = builder.get_environ()
    environ.pop("CONTENT_LENGTH", None)
    environ.update({"wsgi.input_terminated": True, "SERVER_PROTOCOL": protocol})
    app_iter, status, _ = run_wsgi_app(app, environ)
    b"".join(app_iter)
    return int(status.split()[0])


def test_an_http1_request_without_length_or_chunking_has_no_body_to_read() -> None:
    # Reading it would cost a trip into the server (granian: a tenth of a GET); in HTTP/1 a
    # request with neither header has no body.
    app, _ = make_app({"SHIMMIE_MAX_REQUEST_SIZE": 64})
    assert served_without_length(app, "GET", "/things", UnreadableInput(), "HTTP/1.1") == 200


def test_an_http2_body_without_content_length_over_the_limit_is_413() -> None:
    # HTTP/2 carries a body in frames, with no Content-Length or chunking: it is still measured.
    app, _ = make_app({"SHIMMIE_MAX_REQUEST_SIZE": 64})
    oversized = io.BytesIO(b'{"name": "small"}' + b" " * 500)
    assert served_without_length(app, "POST", "/things/t1", oversized, "HTTP/2") == 413
    assert stored(app) == []


def test_streamed_body_within_the_limit_reaches_the_view_without_content_length() -> None:
    app, _ = make_app({"SHIMMIE_MAX_REQUEST_SIZE": 64})
    client = app.test_client()
    small = post_streamed(client, "/things/_echo", b'{"name": "small"}')
    assert small.status_code == 200, small.get_data(as_text=True)
    assert small.get_json() == {"body": {"name": "small"}, "content_length": None}


def test_streamed_body_over_the_limit_is_413_without_content_length() -> None:
    app, _ = make_app({"SHIMMIE_MAX_REQUEST_SIZE": 64})
    client = app.test_client()
    # 517 bytes: a valid JSON object, then padding well past the 64-byte limit.
    oversized = b'{"name": "small"}' + b" " * 500
    response = post_streamed(client, "/things/t1", oversized)
    json_error(response, 413)
    assert stored(app) == []
    json_error(post_streamed(client, "/things/_echo", b'"' + b"x" * 500 + b'"'), 413)


def test_arguments_from_json_answer_422_nested_under_json(app: Flask, client: FlaskClient) -> None:
    body = json_error(client.post("/things/t1", json={"name": 5}), 422)
    assert set(body["errors"]) == {"json"}
    assert set(body["errors"]["json"]) == {"name"}
    assert isinstance(body["errors"]["json"]["name"], list) and body["errors"]["json"]["name"]

    body = json_error(client.post("/things/t1", json={}), 422)
    assert set(body["errors"]["json"]) == {"name"}

    body = json_error(client.post("/things/t1", json=["name"]), 422)
    assert set(body["errors"]) == {"json"}
    assert stored(app) == []


def test_arguments_from_query_answer_422_nested_under_query(client: FlaskClient) -> None:
    body = json_error(client.get("/things/_search?limit=abc"), 422)
    assert set(body["errors"]) == {"query"}
    assert set(body["errors"]["query"]) == {"limit"}

    body = json_error(client.get("/things/_search"), 422)
    assert set(body["errors"]["query"]) == {"limit"}

    ok = client.get("/things/_search?limit=3")
    assert ok.status_code == 200
    assert ok.get_json() == {"limit": 3}


def test_event_schema_at_record_time_answers_422_under_data(app: Flask, client: FlaskClient) -> None:
    body = json_error(client.post("/things/t1/check", json={"level": "high"}), 422)
    assert set(body["errors"]) == {"data"}
    assert set(body["errors"]["data"]) == {"level"}

    body = json_error(client.post("/things/t1/check", json={}), 422)
    assert set(body["errors"]["data"]) == {"level"}
    assert stored(app) == []

    ok = client.post("/things/t1/check", json={"level": 2})
    assert ok.status_code == 201
    assert [(e.event_name, e.data) for e in stored(app)] == [("THING_CHECKED", {"level": 2})]


def test_unexpected_error_is_500_without_internals_and_is_logged(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        response = client.get("/things/_boom")
    body = json_error(response, 500)
    assert body["message"] == "Something went wrong"
    text = response.get_data(as_text=True)
    assert "secret-internal" not in text
    assert "RuntimeError" not in text
    assert "Traceback" not in text
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info]
    assert logged, "the 500 was not logged with its traceback"
    assert any(str(r.exc_info[1]) == "secret-internal" for r in logged if r.exc_info)
    assert any("/things/_boom" in r.getMessage() for r in logged)


# -- X-Seq-Num and X-Seq-Num-Min ------------------------------------------------------------------


def test_x_seq_num_on_every_response_to_a_matched_route_including_errors(client: FlaskClient) -> None:
    assert seq_num(client.get("/things")) == 0

    first = client.post("/things/t1", json={"name": "one"})
    assert first.status_code == 201
    assert seq_num(first) == first.get_json()["sequence_num"] == 1

    second = client.post("/things/t2", json={"name": "two"})
    assert seq_num(second) == second.get_json()["sequence_num"] == 2

    errors = {
        400: client.post("/things/_echo", data="{", content_type="application/json"),
        409: client.post("/things/t1", json={"name": "dup"}),
        422: client.post("/things/t3", json={}),
        500: client.get("/things/_boom"),
    }
    for code, response in errors.items():
        assert response.status_code == code
        assert seq_num(response) == 2, code
    assert seq_num(client.get("/things")) == 2
    # No route matched: the store's size is not shown (tests/test_http_surface.py has the rest).
    for code, response in {404: client.get("/nowhere"), 405: client.delete("/things/_search")}.items():
        assert response.status_code == code
        assert "X-Seq-Num" not in response.headers, code


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "", " ", "+1", "0x10", "1e3", "1 2"])
def test_malformed_seq_num_min_is_400(client: FlaskClient, value: str) -> None:
    body = json_error(client.get("/things", headers={"X-Seq-Num-Min": value}), 400)
    assert "X-Seq-Num-Min" in body["message"]


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    value=st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12).filter(
        lambda v: not v.strip().isdigit()
    )
)
def test_any_non_number_seq_num_min_is_400(value: str) -> None:
    app, _ = make_app({"SHIMMIE_SEQ_WAIT_TIMEOUT": 0})
    response = app.test_client().get("/things", headers={"X-Seq-Num-Min": value})
    json_error(response, 400)


def test_seq_num_min_already_handled_answers_at_once(client: FlaskClient) -> None:
    client.post("/things/t1", json={"name": "one"})
    client.post("/things/t2", json={"name": "two"})
    for wanted in ("0", "1", "2"):
        started = time.monotonic()
        response = client.get("/things", headers={"X-Seq-Num-Min": wanted})
        assert response.status_code == 200
        assert time.monotonic() - started < 1.0
        assert response.get_json() == {"names": ["one", "two"]}
        assert seq_num(response) == 2


def test_seq_num_min_not_reached_is_503_after_the_timeout() -> None:
    app, _ = make_app({"SHIMMIE_SEQ_WAIT_TIMEOUT": 0.2})
    client = app.test_client()
    client.post("/things/t1", json={"name": "one"})
    started = time.monotonic()
    response = client.get("/things", headers={"X-Seq-Num-Min": "5"})
    elapsed = time.monotonic() - started
    body = json_error(response, 503)
    assert "5" in body["message"]
    assert 0.18 <= elapsed < 2.0, elapsed
    assert seq_num(response) == 1


def test_seq_num_min_reached_by_a_write_from_another_thread() -> None:
    app, stack = make_app({"SHIMMIE_SEQ_WAIT_TIMEOUT": 5.0})
    client = app.test_client()
    client.post("/things/t1", json={"name": "one"})

    def late_writer() -> None:
        time.sleep(0.1)
        with app.app_context():
            stack.record_event("t2", "THING_ADDED", {"name": "late"}, expected_version=NO_STREAM)

    thread = threading.Thread(target=late_writer)
    thread.start()
    try:
        started = time.monotonic()
        response = client.get("/things", headers={"X-Seq-Num-Min": "2"})
        elapsed = time.monotonic() - started
    finally:
        thread.join(5)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json() == {"names": ["one", "late"]}
    assert seq_num(response) == 2
    assert 0.05 <= elapsed < 3.0, elapsed


def test_seq_num_min_applies_an_event_stored_behind_the_dispatchers_back() -> None:
    app, _ = make_app({"SHIMMIE_SEQ_WAIT_TIMEOUT": 5.0})
    client = app.test_client()
    client.post("/things/t1", json={"name": "one"})

    def other_process() -> None:
        time.sleep(0.1)
        append_behind_the_dispatchers_back(app, "t2", "elsewhere")

    thread = threading.Thread(target=other_process)
    thread.start()
    try:
        response = client.get("/things", headers={"X-Seq-Num-Min": "2"})
    finally:
        thread.join(5)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json() == {"names": ["one", "elsewhere"]}
    assert seq_num(response) == 2


# -- commands catch up ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_commands_catch_up_before_the_view_and_queries_do_not(method: str) -> None:
    app, _ = make_app()
    client = app.test_client()
    assert client.post("/things/t1", json={"name": "one"}).status_code == 201
    position = append_behind_the_dispatchers_back(app, "t2", "sneaky")
    assert position == 2

    query = client.get("/things")
    assert query.get_json() == {"names": ["one"]}
    assert seq_num(query) == 1

    command = client.open("/things/_peek", method=method)
    assert command.status_code == 200
    assert command.get_json() == {"names": ["one", "sneaky"]}
    assert seq_num(command) == 2

    assert client.get("/things").get_json() == {"names": ["one", "sneaky"]}


def test_a_recording_command_sees_the_caught_up_model_and_reports_its_own_position() -> None:
    app, _ = make_app()
    client = app.test_client()
    client.get("/things")
    append_behind_the_dispatchers_back(app, "t1", "sneaky")
    response = client.post("/things/t2", json={"name": "mine"})
    assert response.status_code == 201
    assert response.get_json() == {"sequence_num": 2, "seen_before": ["sneaky"]}
    assert seq_num(response) == 2


# -- CORS -----------------------------------------------------------------------------------------


def test_cors_from_config_on_normal_responses_and_preflight() -> None:
    app, _ = make_app({"SHIMMIE_CORS": {"origins": LOCALHOST, "supports_credentials": True}})
    client = app.test_client()

    normal = client.get("/things", headers={"Origin": LOCALHOST})
    assert normal.status_code == 200
    assert normal.headers.get("Access-Control-Allow-Origin") == LOCALHOST
    assert normal.headers.get("Access-Control-Allow-Credentials") == "true"

    preflight = client.options(
        "/things/t1",
        headers={
            "Origin": LOCALHOST,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Content-Type",
        },
    )
    assert preflight.status_code in (200, 204)
    assert preflight.headers.get("Access-Control-Allow-Origin") == LOCALHOST
    assert preflight.headers.get("Access-Control-Allow-Credentials") == "true"
    assert "POST" in preflight.headers.get("Access-Control-Allow-Methods", "")
    assert stored(app) == []

    other = client.get("/things", headers={"Origin": "http://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_no_cors_headers_without_the_config(client: FlaskClient) -> None:
    response = client.get("/things", headers={"Origin": LOCALHOST})
    assert response.status_code == 200
    assert "Access-Control-Allow-Origin" not in response.headers


# -- mounting and the API version -----------------------------------------------------------------


def test_set_api_version_applies_to_later_mounts_only() -> None:
    stack = ShimmieStack()
    stack.mount_processor("Early", "/early", ping_blueprint("early"))
    assert stack.set_api_version("/v2") is stack
    stack.mount_processor("Late", "/late", ping_blueprint("late"))
    app = bare_app()
    stack.init_app(app)
    stack.set_api_version("v3/")
    stack.mount_processor("After Init", "/after", ping_blueprint("after"))
    client = app.test_client()

    assert client.get("/early/ping").get_json() == {"processor": "early"}
    assert client.get("/v2/early/ping").status_code == 404
    assert client.get("/v2/late/ping").get_json() == {"processor": "late"}
    assert client.get("/late/ping").status_code == 404
    assert client.get("/v3/after/ping").get_json() == {"processor": "after"}
    assert client.get("/v2/after/ping").status_code == 404


def test_api_version_is_per_stack() -> None:
    stack_a = ShimmieStack().set_api_version("/va")
    stack_b = ShimmieStack()
    stack_a.mount_processor("A", "/a", ping_blueprint("a"))
    stack_b.mount_processor("B", "/b", ping_blueprint("b"))
    app_a, app_b = bare_app(), bare_app()
    stack_a.init_app(app_a)
    stack_b.init_app(app_b)

    client_a, client_b = app_a.test_client(), app_b.test_client()
    assert client_a.get("/va/a/ping").get_json() == {"processor": "a"}
    assert client_b.get("/b/ping").get_json() == {"processor": "b"}
    assert client_b.get("/va/b/ping").status_code == 404
    # Each app carries only its own stack's processors.
    assert client_a.get("/b/ping").status_code == 404
    assert client_b.get("/va/a/ping").status_code == 404


def test_api_version_config_is_used_when_set_api_version_was_never_called() -> None:
    stack = ShimmieStack()
    stack.mount_processor("Thing", "/thing", ping_blueprint("thing"))
    app = bare_app({"SHIMMIE_API_VERSION": "/v9"})
    stack.init_app(app)
    client = app.test_client()
    assert client.get("/v9/thing/ping").get_json() == {"processor": "thing"}
    assert client.get("/thing/ping").status_code == 404

    explicit = ShimmieStack().set_api_version("/v1")
    explicit.mount_processor("Thing", "/thing", ping_blueprint("thing"))
    other = bare_app({"SHIMMIE_API_VERSION": "/v9"})
    explicit.init_app(other)
    assert other.test_client().get("/v1/thing/ping").status_code == 200
    assert other.test_client().get("/v9/thing/ping").status_code == 404


def test_two_processors_share_one_mount_point(app: Flask, client: FlaskClient) -> None:
    rules = {rule.rule: rule.endpoint for rule in app.url_map.iter_rules()}
    assert rules["/things"] == "thing_query.list_things"
    assert rules["/things/<thing_id>"] == "thing_command.add_thing"
    assert client.post("/things/t1", json={"name": "one"}).status_code == 201
    assert client.get("/things").get_json() == {"names": ["one"]}


def test_mount_processor_after_init_app_registers_on_that_app() -> None:
    stack = ShimmieStack()
    app = bare_app()
    stack.init_app(app)
    assert stack.mount_processor("Late", "/late", ping_blueprint("late")) is stack
    response = app.test_client().get("/late/ping")
    assert response.status_code == 200
    assert response.get_json() == {"processor": "late"}


# -- configuration --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("SHIMMIE_EVENT_STORE", "nope://x"),
        ("SHIMMIE_MAX_REQUEST_SIZE", -1),
        ("SHIMMIE_PII_STORE", True),
    ],
)
def test_bad_config_raises_configuration_error_naming_the_key(key: str, value: Any) -> None:
    app = bare_app({key: value})
    stack = ShimmieStack()
    with pytest.raises(ConfigurationError, match=key):
        stack.init_app(app)
    assert "shimmie" not in app.extensions

"""Bad input (issue 8), through HTTP and the Python API, on memory, SQLite and PostgreSQL.

Every bad input must get a clear 4xx JSON error over HTTP, or a ``ShimmieError`` (mostly
``InvalidEventError``) / marshmallow ``ValidationError`` from the Python API: never a 500, never
another exception type, never a hang. The server keeps serving afterwards and nothing is
recorded: neither what the stack reads back nor the raw rows of ``shimmie_events`` and
``shimmie_pii`` change. Values that are valid (unicode, NUL inside data, SQL fragments in ids,
names and data, 2**70) round-trip exactly through record -> read on every backend, and after
a restart on the durable ones.

The inputs are hand-picked and generated (hypothesis, a bounded number of examples). The HTTP
cases run against a small app built here (a blueprint that passes what the client sent straight
to the stack, so the stack's own validation is what is tested) and against ``example_songs``.
"""

from __future__ import annotations

import functools
import io
import json
import math
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from flask import Blueprint, Flask, request
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marshmallow import Schema, ValidationError, fields, validate
from werkzeug.test import TestResponse

import example_songs
from flask_shimmie import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    Event,
    InvalidEventError,
    Model,
    NewEvent,
    ShimmieError,
    ShimmieStack,
    StreamVersionError,
    subscribe,
)
from flask_shimmie.storage import event_store_from_url
from tests.backends import DURABLE_BACKENDS
from tests.helpers import songs_app
from tests.pii_backends import (
    Backend,
    MadeApps,
)

#: SHIMMIE_MAX_REQUEST_SIZE of the app built here: room for 10 kB stream ids in a JSON body.
LIMIT = 64 * 1024

#: The default limit, which example_songs keeps.
SONGS_LIMIT = 1024 * 1024

SQL_FRAGMENTS = [
    "'; DROP TABLE shimmie_events; --",
    '" OR 1=1',
    "' OR '1'='1",
    "Robert'); DROP TABLE shimmie_pii;--",
    "%",
    "_",
    "\\",
    "%s",
    "$1",
    "?",
    ":name",
    "*/ SELECT 1; /*",
]

#: Settings for the generated cases: bounded, no example database, no deadline (PostgreSQL).
FEW = settings(
    max_examples=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SOME = settings(FEW, max_examples=80)


# -- the app under test -----------------------------------------------------------------------


class Seen(Model):
    """Every event the model received, to check that refused input never reaches a model."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    @subscribe("*")
    def seen(self, event: Event) -> None:
        self.events.append(event)


class Typed(Schema):
    """The payload of ``TYPED`` events (checked at record time); ``email`` is PII."""

    name = fields.String(required=True, validate=validate.Length(min=1, max=50))
    count = fields.Integer(required=True, strict=True)
    email = fields.String(load_default=None, allow_none=True, metadata={"pii": True})


class Rename(Schema):
    """The body of ``PUT /bad/renames/<stream_id>`` (checked by ``@stack.arguments``)."""

    title = fields.String(required=True, validate=validate.Length(min=1, max=100))
    version = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))


EXPECTED_NAMES = {"ANY": ANY, "NO_STREAM": NO_STREAM, "STREAM_EXISTS": STREAM_EXISTS}


def build_stack() -> ShimmieStack:
    """A stack with the blueprint of this module mounted at ``/bad``.

    The views hand what the client sent to the stack unchecked, so the stack's own
    validation decides.
    """
    stack = ShimmieStack()
    stack.register_model(Seen)
    stack.event_schema("TYPED", Typed)
    stack.authenticator(lambda: "tester")
    stack.admin_authorizer(lambda identity: identity == "tester")
    blueprint = Blueprint("bad_input", __name__)

    @blueprint.post("/data/<stream_id>/<event_name>")
    def record_body(stream_id: str, event_name: str) -> tuple[dict[str, Any], int]:
        """The whole JSON body is the event's data."""
        event = stack.record_unchecked_event(stream_id, event_name, request.get_json())
        return {"sequence_num": event.sequence_num}, 201

    @blueprint.post("/events")
    def record_fields() -> tuple[dict[str, Any], int]:
        """``{"stream_id", "event_name", "data", "meta"?, "pii_fields"?, "expected_version"?}``."""
        body = request.get_json()
        given_fields: dict[str, Any] = body if isinstance(body, dict) else {}
        args = (given_fields.get("stream_id"), given_fields.get("event_name"), given_fields.get("data"))
        options: dict[str, Any] = {
            "meta": given_fields.get("meta"),
            "pii_fields": given_fields.get("pii_fields"),
        }
        if "expected_version" in given_fields:
            raw = given_fields["expected_version"]
            expected = EXPECTED_NAMES.get(raw, raw) if isinstance(raw, str) else raw
            event = stack.record_event(*args, expected_version=expected, **options)
        else:
            event = stack.record_unchecked_event(*args, **options)
        return {"sequence_num": event.sequence_num, "stream_version": event.stream_version}, 201

    @blueprint.put("/renames/<stream_id>")
    @stack.arguments(Rename)
    def rename(body: dict[str, Any], stream_id: str) -> dict[str, Any]:
        event = stack.record_event(
            stream_id, "RENAMED", {"title": body["title"]}, expected_version=body["version"]
        )
        return {"sequence_num": event.sequence_num}

    @blueprint.get("/ping")
    def ping() -> dict[str, Any]:
        return {"ok": True}

    stack.mount_processor("Bad Input", "/bad", blueprint)
    return stack


def make(
    backend: Backend, made_apps: MadeApps, *, start: bool = True, **config: Any
) -> tuple[ShimmieStack, Flask]:
    """An app on ``backend`` with this module's blueprint (started unless ``start`` is false)."""
    stack = build_stack()
    app = Flask(f"bad_input_{len(made_apps)}")
    app.config.update(
        TESTING=True,
        SHIMMIE_MAX_REQUEST_SIZE=LIMIT,
        SHIMMIE_SEQ_WAIT_TIMEOUT=0,
        SHIMMIE_ADMIN_URL="/admin",
        **backend.config(),
    )
    app.config.update(config)
    stack.init_app(app)
    made_apps.append((stack, app))
    if start:
        stack.startup(app)
    return stack, app


def make_songs(backend: Backend, made_apps: MadeApps) -> Flask:
    """The songs example on ``backend``."""
    app = songs_app({"TESTING": True, "SHIMMIE_SEQ_WAIT_TIMEOUT": 0, **backend.config()})
    made_apps.append((example_songs.stack, app))
    example_songs.stack.startup(app)
    return app


def restart(
    backend: Backend, made_apps: MadeApps, stack: ShimmieStack, app: Flask, *, start: bool = True
) -> tuple[ShimmieStack, Flask]:
    """Shut ``app`` down and make a new stack and app on the same databases (started unless ``start``
    is false: then its first request starts it)."""
    stack.shutdown(app)
    return make(backend, made_apps, start=start)


# -- helpers ----------------------------------------------------------------------------------


def canonical(value: Any) -> str:
    """``value`` as JSON text: tells ``1`` from ``1.0`` from ``True``, ``-0.0`` from ``0.0``, key order."""
    return json.dumps(value)


def unordered(value: Any) -> str:
    """``canonical`` without key order: Flask's JSON responses sort keys."""
    return json.dumps(value, sort_keys=True)


def read(stack: ShimmieStack, app: Flask) -> list[Event]:
    with app.app_context():
        return stack.read_events()


def summary(events: list[Event]) -> list[tuple[int, str, int, str, str, str, str]]:
    """What must survive a restart unchanged, exactly."""
    return [
        (
            e.sequence_num,
            e.stream_id,
            e.stream_version,
            e.event_id,
            e.event_name,
            canonical(e.data),
            canonical(e.meta),
        )
        for e in events
    ]


def stored_counts(backend: Backend, stack: ShimmieStack, app: Flask) -> tuple[int, int, int, int]:
    """Events read back, raw event rows, raw PII rows, events the model received."""
    with app.app_context():
        seen = stack.model(Seen).events if Seen in app.extensions["shimmie"].models else []
        return (
            len(stack.read_events()),
            len(backend.raw_event_rows(app)),
            len(backend.raw_pii_rows(app)),
            len(seen),
        )


def songs_counts(backend: Backend, app: Flask) -> tuple[int, int, int]:
    with app.app_context():
        return (
            len(example_songs.stack.read_events()),
            len(backend.raw_event_rows(app)),
            len(backend.raw_pii_rows(app)),
        )


def assert_json_error(response: TestResponse, *allowed: int) -> dict[str, Any]:
    """A 4xx answer in the stack's JSON error shape (``allowed``: the acceptable codes)."""
    text = response.get_data(as_text=True)
    assert 400 <= response.status_code < 500, f"{response.status_code}: {text[:300]}"
    if allowed:
        assert response.status_code in allowed, f"{response.status_code}: {text[:300]}"
    assert response.is_json, text[:300]
    body: dict[str, Any] = response.get_json()
    assert body["code"] == response.status_code
    assert isinstance(body["status"], str) and body["status"]
    assert isinstance(body["message"], str) and body["message"]
    assert "Something went wrong" not in body["message"]
    # No route matched (or the caller was refused): the store's size is not shown.
    unrouted = response.status_code == 405 or body["message"].startswith("Nothing here")
    assert ("X-Seq-Num" in response.headers) != (unrouted or response.status_code in (401, 403))
    return body


def post_json(client: FlaskClient, path: str, body: bytes) -> TestResponse:
    return client.post(path, data=body, content_type="application/json")


def post_chunked(client: FlaskClient, path: str, body: bytes, *, terminated: bool = True) -> TestResponse:
    """POST ``body`` without a Content-Length, as a streaming client does (``wsgi.input_terminated``
    as gunicorn and the dev server set it, or only the ``Transfer-Encoding`` header)."""
    return client.post(
        path,
        input_stream=io.BytesIO(body),
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True} if terminated else {},
    )


def good_request_works(client: FlaskClient, stack: ShimmieStack, app: Flask) -> None:
    """The server still records and answers a good request, and the event reads back."""
    before = len(read(stack, app))
    response = client.post("/bad/events", json={"stream_id": "good", "event_name": "GOOD", "data": {"n": 1}})
    assert response.status_code == 201, response.get_data(as_text=True)
    events = read(stack, app)
    assert len(events) == before + 1
    assert (events[-1].stream_id, events[-1].event_name, events[-1].data) == ("good", "GOOD", {"n": 1})


def nested_list(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def refused(call: Callable[[], Any]) -> BaseException | None:
    """Run ``call``; return the exception it raised (None when it returned)."""
    try:
        call()
    except BaseException as error:  # noqa: B036 - whatever it is, the test reports it
        return error
    return None


# Generated JSON: any value JSON can carry. hypothesis' text() leaves out lone surrogates and
# includes NUL and astral characters; integers are unbounded.
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def valid_name(value: Any) -> bool:
    """What a stream id or event name must be: a 1-255 character string without NUL."""
    return isinstance(value, str) and 1 <= len(value) <= 255 and "\x00" not in value


def valid_stream_id(value: Any) -> bool:
    """What a new stream id must be: a valid name that fits in a URL path segment (no "/", no controls)."""
    return valid_name(value) and not re.search(r"[/\x00-\x1f\x7f-\x9f]", value)


def as_stream_id(fragment: str) -> str:
    """A SQL fragment made usable as a stream id: its "/" (which no stream id may hold) becomes "|"."""
    return fragment.replace("/", "|")


# == HTTP: the module's app ===================================================================

BAD_BODIES = [
    pytest.param(b"{", id="unterminated-object"),
    pytest.param(b'{"a": 1,}', id="trailing-comma"),
    pytest.param(b"{'a': 1}", id="single-quotes"),
    pytest.param(b'{"a": 1}{"b": 2}', id="two-documents"),
    pytest.param(b'{"a": undefined}', id="undefined"),
    pytest.param(b'{"a": 01}', id="leading-zero"),
    pytest.param(b'{"a": "\xff"}', id="invalid-utf8"),
    pytest.param(b'{"a": "\\x41"}', id="bad-escape"),
    pytest.param(b'{"a": "\\u12"}', id="short-unicode-escape"),
    pytest.param(b"\x00", id="nul-byte"),
    pytest.param(b"", id="empty"),
    pytest.param(b"   ", id="blank"),
    pytest.param(b"null", id="null"),
    pytest.param(b"[]", id="array"),
    pytest.param(b"[{}]", id="array-of-object"),
    pytest.param(b'"text"', id="string"),
    pytest.param(b"42", id="number"),
    pytest.param(b"true", id="bool"),
    pytest.param(b'{"a": NaN}', id="NaN"),
    pytest.param(b'{"a": Infinity}', id="Infinity"),
    pytest.param(b'{"a": [-Infinity]}', id="minus-Infinity"),
    pytest.param(b'{"a": 1e400}', id="float-overflowing-to-infinity"),
    pytest.param(b'{"a": ' + b"9" * 5000 + b"}", id="int-of-5000-digits"),
    pytest.param(b'{"a": "' + b"x" * LIMIT + b'"}', id="over-the-limit"),
    pytest.param(b" " * (LIMIT + 1), id="blank-over-the-limit"),
]


@pytest.mark.parametrize("body", BAD_BODIES)
def test_bad_json_body_is_a_4xx_and_records_nothing(
    pii_backend: Backend, made_apps: MadeApps, body: bytes
) -> None:
    stack, app = make(pii_backend, made_apps)
    client = app.test_client()
    before = stored_counts(pii_backend, stack, app)
    for response in (
        post_json(client, "/bad/data/s1/BODY", body),
        post_chunked(client, "/bad/data/s1/BODY", body),
        post_chunked(client, "/bad/data/s1/BODY", body, terminated=False),
    ):
        error = assert_json_error(response, 400, 413)
        assert response.status_code == (413 if len(body) > LIMIT else 400), error
    assert stored_counts(pii_backend, stack, app) == before
    good_request_works(client, stack, app)


def test_bodies_without_json_content_get_a_4xx(pii_backend: Backend, made_apps: MadeApps) -> None:
    stack, app = make(pii_backend, made_apps)
    client = app.test_client()
    before = stored_counts(pii_backend, stack, app)
    assert_json_error(client.post("/bad/data/s1/BODY"), 400, 415)
    assert_json_error(client.post("/bad/data/s1/BODY", data=b'{"a": 1}', content_type="text/plain"), 400, 415)
    assert_json_error(client.post("/bad/data/s1/BODY", data={"a": "1"}), 400, 415)  # a form
    assert_json_error(client.post("/bad/events", data=b"", content_type="application/json"), 400)
    # A Content-Length that lies or is garbage: never a 500.
    for length in ("abc", "-1", "999"):
        response = client.post(
            "/bad/data/s1/BODY",
            data=b'{"a": 1}',
            content_type="application/json",
            environ_overrides={"CONTENT_LENGTH": length},
        )
        assert_json_error(response, 400)
    assert stored_counts(pii_backend, stack, app) == before
    good_request_works(client, stack, app)


@SOME
@given(size=st.integers(min_value=8, max_value=400), chunked=st.booleans())
def test_body_size_limit_at_its_boundary(size: int, chunked: bool) -> None:
    """413 exactly when the body is over SHIMMIE_MAX_REQUEST_SIZE, with or without Content-Length."""
    stack, app = _limit_app()
    client = app.test_client()
    before = len(read(stack, app))
    body = b'{"p":"' + b"x" * (size - 8) + b'"}'
    assert len(body) == size
    if chunked:
        response = post_chunked(client, "/bad/data/sized/SIZED", body)
    else:
        response = post_json(client, "/bad/data/sized/SIZED", body)
    events = read(stack, app)
    if size > 200:
        assert_json_error(response, 413)
        assert len(events) == before
    else:
        assert response.status_code == 201, response.get_data(as_text=True)
        assert events[-1].data == {"p": "x" * (size - 8)}


_limit_apps: list[tuple[ShimmieStack, Flask]] = []


def _limit_app() -> tuple[ShimmieStack, Flask]:
    """One memory app with a 200-byte limit, shared by the generated examples."""
    if not _limit_apps:
        stack = build_stack()
        app = Flask("bad_input_limit")
        app.config.update(TESTING=True, SHIMMIE_MAX_REQUEST_SIZE=200)
        stack.init_app(app)
        _limit_apps.append((stack, app))
    return _limit_apps[0]


DEEP_BODIES = [
    pytest.param(b"[" * 100_000 + b"]" * 100_000, id="100000-nested-arrays"),
    pytest.param(b'{"a":' * 50_000 + b"1" + b"}" * 50_000, id="50000-nested-objects"),
    pytest.param(b'{"a":' + b"[" * 2000 + b"]" * 2000 + b"}", id="2000-nested-arrays-in-an-object"),
]


@pytest.mark.parametrize("body", DEEP_BODIES)
def test_deeply_nested_json_body_is_a_400(pii_backend: Backend, made_apps: MadeApps, body: bytes) -> None:
    stack, app = make(pii_backend, made_apps, SHIMMIE_MAX_REQUEST_SIZE=SONGS_LIMIT)
    client = app.test_client()
    before = stored_counts(pii_backend, stack, app)
    for response in (
        post_json(client, "/bad/data/s1/DEEP", body),
        post_chunked(client, "/bad/data/s1/DEEP", body),
    ):
        assert_json_error(response, 400)
    assert stored_counts(pii_backend, stack, app) == before
    good_request_works(client, stack, app)


def _bad_field_bodies() -> list[Any]:
    good = {"stream_id": "s1", "event_name": "E", "data": {}}
    cases: list[tuple[str, dict[str, Any]]] = [
        ("stream-id-empty", {"stream_id": ""}),
        ("stream-id-number", {"stream_id": 5}),
        ("stream-id-null", {"stream_id": None}),
        ("stream-id-list", {"stream_id": ["s1"]}),
        ("stream-id-object", {"stream_id": {"id": "s1"}}),
        ("stream-id-bool", {"stream_id": True}),
        ("stream-id-256", {"stream_id": "a" * 256}),
        ("stream-id-10kB", {"stream_id": "a" * 10_000}),
        ("stream-id-10kB-astral", {"stream_id": "\U0001f3b5" * 2_500}),
        ("stream-id-nul", {"stream_id": "song\x001"}),
        ("stream-id-only-nul", {"stream_id": "\x00"}),
        ("event-name-empty", {"event_name": ""}),
        ("event-name-number", {"event_name": 1}),
        ("event-name-null", {"event_name": None}),
        ("event-name-nul", {"event_name": "SONG\x00CREATED"}),
        ("event-name-256", {"event_name": "E" * 256}),
        ("event-name-sql-10kB", {"event_name": "'; DROP TABLE shimmie_events; --" * 400}),
        ("data-missing", {"data": None}),
        ("data-list", {"data": [1, 2]}),
        ("data-string", {"data": "{}"}),
        ("data-number", {"data": 2**70}),
        ("meta-list", {"meta": ["m"]}),
        ("meta-string", {"meta": "m"}),
        ("pii-fields-string", {"pii_fields": "email", "data": {"email": "a@b.c"}}),
        ("pii-fields-numbers", {"pii_fields": [1], "data": {"email": "a@b.c"}}),
        ("pii-fields-empty-name", {"pii_fields": [""], "data": {"email": "a@b.c"}}),
        ("expected-negative", {"expected_version": -1}),
        ("expected-bool", {"expected_version": True}),
        ("expected-false", {"expected_version": False}),
        ("expected-float", {"expected_version": 1.0}),
        ("expected-fraction", {"expected_version": 0.5}),
        ("expected-string-number", {"expected_version": "0"}),
        ("expected-unknown-name", {"expected_version": "LATEST"}),
        ("expected-null", {"expected_version": None}),
        ("expected-list", {"expected_version": [0]}),
        ("expected-huge-negative", {"expected_version": -(2**70)}),
        ("typed-name-number", {"event_name": "TYPED", "data": {"name": 5, "count": 1}}),
        ("typed-count-string", {"event_name": "TYPED", "data": {"name": "n", "count": "1"}}),
        ("typed-count-float", {"event_name": "TYPED", "data": {"name": "n", "count": 1.5}}),
        ("typed-count-bool", {"event_name": "TYPED", "data": {"name": "n", "count": True}}),
        ("typed-missing", {"event_name": "TYPED", "data": {}}),
        ("typed-unknown-field", {"event_name": "TYPED", "data": {"name": "n", "count": 1, "x": 1}}),
        ("typed-email-number", {"event_name": "TYPED", "data": {"name": "n", "count": 1, "email": 5}}),
        ("typed-name-too-long", {"event_name": "TYPED", "data": {"name": "n" * 51, "count": 1}}),
    ]
    return [pytest.param({**good, **change}, id=name) for name, change in cases]


@pytest.mark.parametrize("body", _bad_field_bodies())
def test_bad_event_fields_over_http_are_a_4xx_and_record_nothing(
    pii_backend: Backend, made_apps: MadeApps, body: dict[str, Any]
) -> None:
    stack, app = make(pii_backend, made_apps)
    client = app.test_client()
    before = stored_counts(pii_backend, stack, app)
    response = client.post("/bad/events", json=body)
    error = assert_json_error(response, 400, 422)
    if body["event_name"] == "TYPED":
        assert response.status_code == 422
        assert set(error["errors"]) == {"data"}
    else:
        assert response.status_code == 400
    assert stored_counts(pii_backend, stack, app) == before
    good_request_works(client, stack, app)


def test_huge_and_stale_expected_versions_over_http_are_409(
    pii_backend: Backend, made_apps: MadeApps
) -> None:
    stack, app = make(pii_backend, made_apps)
    client = app.test_client()
    assert (
        client.post("/bad/events", json={"stream_id": "s1", "event_name": "E", "data": {}}).status_code == 201
    )
    before = stored_counts(pii_backend, stack, app)
    for expected, shown in [(2**70, 2**70), (2**63, 2**63), (2, 2), ("NO_STREAM", "NO_STREAM")]:
        body = {"stream_id": "s1", "event_name": "E", "data": {}, "expected_version": expected}
        error = assert_json_error(client.post("/bad/events", json=body), 409)
        assert error["conflicts"] == [{"stream_id": "s1", "expected": shown, "actual": 1}]
    for version in (2**70, 0, -1, True, 1.0, "1"):
        response = client.put("/bad/renames/s1", json={"title": "t", "version": version})
        assert_json_error(response, 409 if version == 2**70 else 422)
    assert stored_counts(pii_backend, stack, app) == before
    good_request_works(client, stack, app)


@FEW
@given(
    stream_id=st.text(max_size=300) | json_values,
    event_name=st.text(max_size=300) | json_values,
    expected=st.none() | json_values,
)
def test_generated_event_fields_over_http(stream_id: Any, event_name: Any, expected: Any) -> None:
    """201 exactly for a valid stream id, event name and expected version; else a 4xx, nothing kept."""
    stack, app = _memory_app()
    client = app.test_client()
    body: dict[str, Any] = {"stream_id": stream_id, "event_name": event_name, "data": {"v": 1}}
    if expected is not None:
        body["expected_version"] = expected
    before = read(stack, app)
    response = client.post("/bad/events", json=body)
    after = read(stack, app)
    expected_ok = (
        expected is None
        or (type(expected) is int and expected >= 0)
        or (isinstance(expected, str) and expected in EXPECTED_NAMES)
    )
    if valid_stream_id(stream_id) and valid_name(event_name) and expected_ok:
        assert response.status_code in (201, 409, 422), response.get_data(as_text=True)
    else:
        assert_json_error(response, 400)
    if response.status_code == 201:
        assert (after[-1].stream_id, after[-1].event_name) == (stream_id, event_name)
        assert len(after) == len(before) + 1
    else:
        assert_json_error(response)
        assert after == before


_memory_apps: list[tuple[ShimmieStack, Flask]] = []


def _memory_app() -> tuple[ShimmieStack, Flask]:
    """One memory app for generated examples that need no fresh database."""
    if not _memory_apps:
        stack = build_stack()
        app = Flask("bad_input_memory")
        app.config.update(TESTING=True, SHIMMIE_SEQ_WAIT_TIMEOUT=0, SHIMMIE_MAX_REQUEST_SIZE=LIMIT)
        stack.init_app(app)
        _memory_apps.append((stack, app))
    return _memory_apps[0]


@FEW
@given(body=json_values)
def test_generated_bodies_for_a_schema_are_201_or_422(body: Any) -> None:
    """The TYPED schema at record time and ``@stack.arguments``: valid or 422/400, never a 500."""
    stack, app = _memory_app()
    client = app.test_client()
    before = read(stack, app)
    response = client.post(
        "/bad/events", json={"stream_id": f"t-{uuid.uuid4()}", "event_name": "TYPED", "data": body}
    )
    typed_ok = (
        isinstance(body, dict)
        and set(body) <= {"name", "count", "email"}
        and isinstance(body.get("name"), str)
        and 1 <= len(body["name"]) <= 50
        and type(body.get("count")) is int
        and (body.get("email") is None or isinstance(body.get("email"), str))
    )
    if typed_ok:
        assert response.status_code == 201, response.get_data(as_text=True)
        assert read(stack, app)[-1].data == {"email": None, **body}
    else:
        assert_json_error(response, 400, 422)
        assert read(stack, app) == before
    response = client.put("/bad/renames/nothing-here", json=body)
    rename_ok = (
        isinstance(body, dict)
        and set(body) == {"title", "version"}
        and isinstance(body["title"], str)
        and 1 <= len(body["title"]) <= 100
        and type(body["version"]) is int
        and body["version"] >= 1
    )
    # A valid rename of a stream with no events is a version conflict.
    assert_json_error(response, 409 if rename_ok else 422)


SEQ_HEADER_ALPHABET = st.characters(codec="latin-1", exclude_characters="\r\n") | st.sampled_from(
    "0123456789 \t"
)


@SOME
@given(value=st.text(SEQ_HEADER_ALPHABET, max_size=24))
def test_generated_x_seq_num_min_is_400_unless_a_whole_number(value: str) -> None:
    stack, app = _memory_app()
    client = app.test_client()
    handled = len(read(stack, app))
    for response in (
        client.get("/bad/ping", headers={"X-Seq-Num-Min": value}),
        client.post("/bad/data/seq/SEQ", json={"v": 1}, headers={"X-Seq-Num-Min": value}),
    ):
        http_stripped = value.strip(" \t")
        if http_stripped.isascii() and http_stripped.isdigit() and len(http_stripped) <= 18:
            if int(http_stripped) <= handled:
                assert response.status_code in (200, 201), response.get_data(as_text=True)
            else:
                assert response.status_code == 503  # not reached within SHIMMIE_SEQ_WAIT_TIMEOUT = 0
                assert response.is_json and response.get_json()["code"] == 503
        elif value.strip().isascii() and value.strip().isdigit():
            pass  # other whitespace around digits: test_x_seq_num_min_with_non_http_whitespace_is_400
        else:
            body = assert_json_error(response, 400)
            assert "X-Seq-Num-Min" in body["message"]
        handled = len(read(stack, app))


@pytest.mark.parametrize(
    "value",
    [
        "",
        " ",
        "-1",
        "+1",
        "1.0",
        "1e3",
        "0x10",
        "1_000",
        "1 2",
        "\u0661",
        "\u00b2",
        "9" * 19,
        "\x00",
        "1\x00",
    ],
)
def test_x_seq_num_min_hand_picked_bad_values_are_400(value: str) -> None:
    stack, app = _memory_app()
    before = read(stack, app)
    client = app.test_client()
    assert_json_error(client.get("/bad/ping", headers={"X-Seq-Num-Min": value}), 400)
    assert_json_error(client.post("/bad/data/seq/SEQ", json={"v": 1}, headers={"X-Seq-Num-Min": value}), 400)
    assert read(stack, app) == before


@pytest.mark.parametrize("value", ["\xa00", "\x1c0", "\x850", "0\x1f"])
def test_x_seq_num_min_with_non_http_whitespace_is_400(value: str) -> None:
    _, app = _memory_app()
    assert_json_error(app.test_client().get("/bad/ping", headers={"X-Seq-Num-Min": value}), 400)


# -- valid values through HTTP ----------------------------------------------------------------

VALID_ODD_DATA: dict[str, Any] = {
    "astral": "\U0001f3b5 \U00010348 \U0010fffd",
    "escaped-pair": json.loads('"\\ud83c\\udfb5"'),
    "nul": "a\x00b",
    "only-nul": "\x00",
    "key\x00with-nul": 1,
    "sql": SQL_FRAGMENTS,
    "big": 2**70,
    "negative-big": -(2**70),
    "int64-max": 2**63 - 1,
    "past-int64": 2**64,
    "hundred-digits": 10**100,
    "float-max": 1.7976931348623157e308,
    "float-min": 5e-324,
    "minus-zero": -0.0,
    "tenth": 0.1,
    "controls": "".join(chr(c) for c in range(32)) + "\x7f",
    "rtl-bom-zw": "\u202e\ufeff\u200b",
    "nested": {"": [{"\U0001f600": None, "t": True, "f": False}]},
}


def test_valid_odd_values_round_trip_over_http(pii_backend: Backend, made_apps: MadeApps) -> None:
    stack, app = make(pii_backend, made_apps)
    client = app.test_client()
    sent = []
    for name in [*SQL_FRAGMENTS, "\U0001f3b5" * 255, "s" * 255, "é"]:
        stream_id = as_stream_id(name)
        for event_name in (name[:255], "ODD"):
            body = {
                "stream_id": stream_id,
                "event_name": event_name,
                "data": VALID_ODD_DATA,
                "meta": {"m": "\x00"},
            }
            response = client.post("/bad/events", data=json.dumps(body), content_type="application/json")
            assert response.status_code == 201, response.get_data(as_text=True)
            sent.append((stream_id, event_name))
    events = read(stack, app)
    assert [(e.stream_id, e.event_name) for e in events] == sent
    for event in events:
        assert canonical(event.data) == canonical(VALID_ODD_DATA)
        assert event.meta == {"m": "\x00"}
    with app.app_context():
        assert [canonical(e.data) for e in stack.model(Seen).events] == [canonical(VALID_ODD_DATA)] * len(
            sent
        )
    assert len(pii_backend.raw_event_rows(app)) == len(sent)
    if pii_backend.durable:
        before = summary(events)
        stack, app = restart(pii_backend, made_apps, stack, app)
        assert summary(read(stack, app)) == before


@pytest.mark.parametrize("pii_backend", DURABLE_BACKENDS, indirect=True)
@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"stream_id": "s1", "event_name": "E", "data": {"a": "\\ud800"}}', id="data-value"),
        pytest.param(b'{"stream_id": "s1", "event_name": "E", "data": {"\\udfff": 1}}', id="data-key"),
        pytest.param(b'{"stream_id": "\\ud800", "event_name": "E", "data": {}}', id="stream-id"),
        pytest.param(b'{"stream_id": "s1", "event_name": "\\ude00x", "data": {}}', id="event-name"),
        pytest.param(
            b'{"stream_id": "s1", "event_name": "E", "data": {}, "meta": {"m": "\\ud800"}}', id="meta"
        ),
        pytest.param(
            b'{"stream_id": "s1", "event_name": "E", "data": {"a": "\xed\xa0\x80"}}', id="cesu8-bytes"
        ),
    ],
)
def test_lone_surrogates_over_http_on_durable_backends(
    pii_backend: Backend, made_apps: MadeApps, body: bytes
) -> None:
    _check_lone_surrogate_body(pii_backend, made_apps, body)


@pytest.mark.parametrize("pii_backend", ["memory"], indirect=True)
@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"stream_id": "s1", "event_name": "E", "data": {"a": "\\ud800"}}', id="data-value"),
        pytest.param(
            b'{"stream_id": "\\ud800", "event_name": "\\udfff", "data": {"\\udfff": 1}}', id="names"
        ),
    ],
)
def test_lone_surrogates_over_http_on_memory(pii_backend: Backend, made_apps: MadeApps, body: bytes) -> None:
    _check_lone_surrogate_body(pii_backend, made_apps, body)


def _check_lone_surrogate_body(backend: Backend, made_apps: MadeApps, body: bytes) -> None:
    """Refused with a 4xx (nothing stored), or stored and read back exactly (and after a restart)."""
    stack, app = make(backend, made_apps)
    client = app.test_client()
    before = stored_counts(backend, stack, app)
    response = post_json(client, "/bad/events", body)
    sent = json.loads(body)
    if response.status_code == 201:
        (event,) = read(stack, app)
        assert (event.stream_id, event.event_name) == (sent["stream_id"], sent["event_name"])
        assert canonical(event.data) == canonical(sent["data"])
        if backend.durable:
            stack, app = restart(backend, made_apps, stack, app)
            assert summary(read(stack, app)) == summary([event])
    else:
        assert_json_error(response, 400)
        assert stored_counts(backend, stack, app) == before
    good_request_works(client, stack, app)


def test_sql_fragments_in_admin_queries_match_exactly(pii_backend: Backend, made_apps: MadeApps) -> None:
    stack, app = make(pii_backend, made_apps)
    client = app.test_client()
    with app.app_context():
        for fragment in SQL_FRAGMENTS:
            stack.record_unchecked_event(as_stream_id(fragment), fragment, {"f": fragment})
        stack.record_unchecked_event("plain", "PLAIN", {})
    for fragment in SQL_FRAGMENTS:
        stream_id = as_stream_id(fragment)
        for query in ({"stream": stream_id}, {"type": fragment}, {"stream": stream_id, "type": fragment}):
            response = client.get("/admin/events", query_string=query)
            assert response.status_code == 200, response.get_data(as_text=True)
            found = response.get_json()["events"]
            assert [(e["stream_id"], e["event_name"], e["data"]) for e in found] == [
                (stream_id, fragment, {"f": fragment})
            ]
        response = client.get(f"/admin/streams/{quote(stream_id, safe='')}")
        assert response.status_code == 200, response.get_data(as_text=True)
        assert [e["stream_id"] for e in response.get_json()["events"]] == [stream_id]
    for unknown in ("NEVER", "'; DROP TABLE shimmie_events; -- x", "%%", "E%"):
        response = client.get("/admin/events", query_string={"type": unknown})
        assert response.status_code == 200 and response.get_json()["events"] == []
    for query in ("after=-1", "after=x", "limit=0", "limit=1001", "limit=-5", "after=1.5", "limit=%00"):
        assert_json_error(client.get(f"/admin/events?{query}"), 400)
    assert len(pii_backend.raw_event_rows(app)) == len(SQL_FRAGMENTS) + 1


def test_admin_after_past_the_last_position_is_empty(
    pii_backend: Backend, made_apps: MadeApps, request: pytest.FixtureRequest
) -> None:
    stack, app = make(pii_backend, made_apps)
    client = app.test_client()
    with app.app_context():
        stack.record_unchecked_event("s1", "E", {})
    for after in (str(2**63 - 1), str(2**63), "9" * 30):
        response = client.get(f"/admin/events?after={after}")
        if response.status_code != 200:
            assert_json_error(response, 400)
        else:
            assert response.get_json() == {"events": [], "next_after": None}
    good_request_works(client, stack, app)


# == HTTP: example_songs ======================================================================

SONG = {"title": "Hello", "artist": "Adele", "year": "2015"}


def _bad_song_bodies() -> list[Any]:
    cases: list[tuple[str, Any]] = [
        ("null", None),
        ("array", [SONG]),
        ("string", "song"),
        ("number", 2**70),
        ("empty-object", {}),
        ("title-missing", {"artist": "a", "year": "1"}),
        ("title-number", {**SONG, "title": 5}),
        ("title-null", {**SONG, "title": None}),
        ("title-empty", {**SONG, "title": ""}),
        ("title-list", {**SONG, "title": ["Hello"]}),
        ("title-too-long", {**SONG, "title": "x" * 501}),
        ("artist-object", {**SONG, "artist": {"name": "Adele"}}),
        ("year-bool", {**SONG, "year": True}),
        ("year-float", {**SONG, "year": 2015.5}),
        ("year-null", {**SONG, "year": None}),
        ("year-blank", {**SONG, "year": "  "}),
        ("year-list", {**SONG, "year": [2015]}),
        ("submitted-by-string", {**SONG, "submitted_by": "me"}),
        ("submitted-by-bad-email", {**SONG, "submitted_by": {"name": "n", "email": "not-an-email"}}),
        ("submitted-by-email-missing", {**SONG, "submitted_by": {"name": "n"}}),
        ("submitted-by-email-sql", {**SONG, "submitted_by": {"name": "n", "email": "' OR 1=1 --"}}),
        ("unknown-field", {**SONG, "genre": "pop"}),
        ("unknown-sql-field", {**SONG, "'; DROP TABLE shimmie_events; --": 1}),
    ]
    return [pytest.param(body, id=name) for name, body in cases]


def test_songs_bad_bodies_are_a_4xx_and_record_nothing(pii_backend: Backend, made_apps: MadeApps) -> None:
    app = make_songs(pii_backend, made_apps)
    client = app.test_client()
    before = songs_counts(pii_backend, app)
    for param in _bad_song_bodies():
        (body,) = param.values
        response = client.post("/v1/songs", data=json.dumps(body), content_type="application/json")
        assert_json_error(response, 400, 422)
    raw_bodies = [param.values[0] for param in BAD_BODIES if len(param.values[0]) <= LIMIT]
    for raw in [*raw_bodies, b'{"title": "t", "artist": "a", "year": NaN}', b'{"title": Infinity}']:
        assert_json_error(post_json(client, "/v1/songs", raw), 400, 422)
    assert_json_error(client.post("/v1/songs"), 400, 415)
    assert_json_error(client.post("/v1/songs", data=json.dumps(SONG), content_type="text/plain"), 400, 415)
    # Over SHIMMIE_MAX_REQUEST_SIZE, with and without a Content-Length.
    padded = json.dumps(SONG).encode()[:-1] + b"," + b" " * SONGS_LIMIT + b'"x": 1}'
    assert_json_error(post_json(client, "/v1/songs", padded), 413)
    assert_json_error(post_chunked(client, "/v1/songs", padded), 413)
    assert_json_error(post_chunked(client, "/v1/songs", padded, terminated=False), 413)
    assert_json_error(post_json(client, "/v1/songs", b" " * (3 * SONGS_LIMIT)), 413)
    assert songs_counts(pii_backend, app) == before
    # The server still serves: a good song, then bad renames and deletes of it.
    created = client.post("/v1/songs", json=SONG)
    assert created.status_code == 201, created.get_data(as_text=True)
    location = created.headers["Location"]
    after_create = songs_counts(pii_backend, app)
    bad_renames: list[Any] = [
        {"title": "t", "version": v} for v in (True, False, 0.5, 1.5, "1", -1, 0, None, [], {}, -(2**70))
    ]
    bad_renames += [None, [], "t", {}, {"title": 5, "version": 1}, {"title": "", "version": 1}]
    bad_renames += [{"title": "t", "version": 1, "extra": 1}, {"version": 1}]
    for rename in bad_renames:
        response = client.put(location, data=json.dumps(rename), content_type="application/json")
        assert_json_error(response, 400, 422)
    for version in (2**70, 2**63, 2, 2.0):  # 2.0 is 2: JSON does not tell them apart
        assert_json_error(client.put(location, json={"title": "t", "version": version}), 409)
    assert_json_error(post_json(client, location, b'{"title": "t", "version": NaN}'), 405)
    assert_json_error(
        client.put(location, data=b'{"title": "t", "version": NaN}', content_type="application/json"), 422
    )
    for song_id in ("a" * 10_000, "%00", "'%3B%20DROP%20TABLE%20shimmie_events%3B%20--", "%F0%9F%8E%B5"):
        assert_json_error(client.put(f"/v1/songs/{song_id}", json={"title": "t", "version": 1}), 404)
        assert_json_error(client.delete(f"/v1/songs/{song_id}"), 404)
        assert_json_error(client.get(f"/v1/songs/{song_id}"), 404)
    assert songs_counts(pii_backend, app) == after_create
    renamed = client.put(location, json={"title": "Hello again", "version": 1})
    assert renamed.status_code == 200 and renamed.get_json()["title"] == "Hello again"


@pytest.mark.parametrize("body", DEEP_BODIES)
def test_songs_deeply_nested_body_is_a_400(made_apps: MadeApps, tmp_path: Path, body: bytes) -> None:
    backend = Backend("memory", tmp_path)
    app = make_songs(backend, made_apps)
    client = app.test_client()
    created = client.post("/v1/songs", json=SONG)
    assert created.status_code == 201
    before = songs_counts(backend, app)
    assert_json_error(post_json(client, "/v1/songs", body), 400)
    assert_json_error(
        client.put(created.headers["Location"], data=body, content_type="application/json"), 400
    )
    assert songs_counts(backend, app) == before
    assert client.post("/v1/songs", json=SONG).status_code == 201


song_values = json_values | st.text(max_size=12) | st.sampled_from(SQL_FRAGMENTS)
song_bodies = json_values | st.fixed_dictionaries(
    {},
    optional={
        "title": song_values,
        "artist": song_values,
        "year": song_values | st.integers(),
        "submitted_by": song_values
        | st.fixed_dictionaries({}, optional={"name": song_values, "email": song_values | st.emails()}),
        "genre": song_values,
    },
)


def _clearly_valid_song(body: Any) -> bool:
    if not isinstance(body, dict) or set(body) != {"title", "artist", "year"}:
        return False
    year = body["year"]
    return all(isinstance(body[key], str) and 1 <= len(body[key]) <= 500 for key in ("title", "artist")) and (
        (type(year) is int and 1 <= year <= 9999)
        or (isinstance(year, str) and bool(year.strip()) and len(year) <= 20)
    )


def _clearly_invalid_song(body: Any) -> bool:
    if not isinstance(body, dict) or not {"title", "artist", "year"} <= set(body) or "genre" in body:
        return True
    return not all(isinstance(body[key], str) for key in ("title", "artist")) or isinstance(
        body["year"], bool
    )


def test_generated_song_bodies(pii_backend: Backend, made_apps: MadeApps) -> None:
    """201 with the song read back exactly, or a 4xx recording nothing; never a 500."""
    app = make_songs(pii_backend, made_apps)
    client = app.test_client()
    created: list[tuple[str, Any]] = []

    @FEW
    @given(body=song_bodies)
    def check(body: Any) -> None:
        before = songs_counts(pii_backend, app)
        response = client.post("/v1/songs", data=json.dumps(body), content_type="application/json")
        if _clearly_valid_song(body):
            assert response.status_code == 201, response.get_data(as_text=True)
        if _clearly_invalid_song(body):
            assert_json_error(response, 400, 422)
        if response.status_code == 201:
            song = client.get(response.headers["Location"]).get_json()
            assert canonical([song[k] for k in ("title", "artist", "year")]) == canonical(
                [body[k] for k in ("title", "artist", "year")]
            )
            created.append((response.headers["Location"], body))
            assert songs_counts(pii_backend, app)[:2] == (before[0] + 1, before[1] + 1)
        else:
            assert_json_error(response, 400, 422)
            assert songs_counts(pii_backend, app) == before

    check()
    with app.app_context():
        events = example_songs.stack.read_events()
    assert len(events) == len(created)
    assert len(client.get("/v1/songs").get_json()) == len(created)


def test_songs_valid_odd_values_round_trip(pii_backend: Backend, made_apps: MadeApps) -> None:
    app = make_songs(pii_backend, made_apps)
    client = app.test_client()
    songs = [
        {"title": "\U0001f3b5 \x00 " + fragment, "artist": fragment, "year": 9999}
        for fragment in SQL_FRAGMENTS
    ]
    songs.append(
        {
            "title": "x" * 500,
            "artist": "\u202e\ufeff",
            "year": "MMXV",
            "submitted_by": {"name": "'; DROP TABLE shimmie_pii; --\x00", "email": "o'hara@example.com"},
        }
    )
    locations = []
    for song in songs:
        response = client.post("/v1/songs", data=json.dumps(song), content_type="application/json")
        assert response.status_code == 201, response.get_data(as_text=True)
        locations.append(response.headers["Location"])
    for location, song in zip(locations, songs, strict=True):
        got = client.get(location).get_json()
        assert unordered({k: got[k] for k in song}) == unordered(song)
    assert len(pii_backend.raw_event_rows(app)) == len(songs)
    assert len(pii_backend.raw_pii_rows(app)) == 1
    if pii_backend.durable:
        with app.app_context():
            before = summary(example_songs.stack.read_events())
        example_songs.stack.shutdown(app)
        app = make_songs(pii_backend, made_apps)
        with app.app_context():
            assert summary(example_songs.stack.read_events()) == before
        client = app.test_client()
        for location, song in zip(locations, songs, strict=True):
            got = client.get(location).get_json()
            assert unordered({k: got[k] for k in song}) == unordered(song)


# == The Python API ===========================================================================


def _circular() -> dict[str, Any]:
    data: dict[str, Any] = {}
    data["self"] = data
    return data


class NotJson:
    pass


UUID = "12345678-1234-5678-1234-567812345678"


class _Pairs(Mapping[Any, Any]):
    """A mapping that also takes unhashable keys (an expected_versions naming a list)."""

    def __init__(self, key: Any, value: Any) -> None:
        self.key, self.value = key, value

    def __getitem__(self, key: Any) -> Any:
        if key is self.key:
            return self.value
        raise KeyError(key)

    def __iter__(self) -> Iterator[Any]:
        return iter([self.key])

    def __len__(self) -> int:
        return 1


def _mapping(stream_id: Any) -> Mapping[Any, Any]:
    return _Pairs(stream_id, ANY)


Call = Callable[[ShimmieStack], Any]
_EMPTY: Any = object()


def unchecked(stream_id: Any = "s1", event_name: Any = "E", data: Any = _EMPTY, **options: Any) -> Call:
    """``record_unchecked_event`` with these arguments (``data`` defaults to ``{}``)."""
    return lambda s: s.record_unchecked_event(
        stream_id, event_name, {} if data is _EMPTY else data, **options
    )


def checked(stream_id: Any = "s1", event_name: Any = "E", data: Any = _EMPTY, **options: Any) -> Call:
    """``record_event`` with these arguments (``data`` defaults to ``{}``)."""
    return lambda s: s.record_event(stream_id, event_name, {} if data is _EMPTY else data, **options)


def batch(*events: Any, expected_versions: Any = None) -> Call:
    """``record_events`` of ``events``."""
    return lambda s: s.record_events(list(events), expected_versions)


def bad_calls() -> list[tuple[str, Call]]:
    """(case, call) pairs that must raise ShimmieError / ValidationError and record nothing.

    A case named ``conflict: ...`` must raise StreamVersionError, ``invalid: ...`` InvalidEventError.
    """
    ok = NewEvent("s1", "E", {})
    names: list[tuple[str, Any]] = [
        ("empty", ""),
        ("int", 5),
        ("none", None),
        ("bytes", b"s1"),
        ("list", ["s1"]),
        ("float", 1.5),
        ("bool", True),
        ("256-chars", "a" * 256),
        ("10kB", "a" * 10_000),
        ("256-astral", "\U0001f3b5" * 256),
        ("nul-inside", "a\x00b"),
        ("only-nul", "\x00"),
        ("sql-with-nul", "'; DROP TABLE shimmie_events; --\x00"),
        ("sql-10kB", "'; DROP TABLE shimmie_events; --" * 400),
    ]
    calls: list[tuple[str, Call]] = []
    for label, v in names:
        calls += [
            (f"invalid: stream_id={label}", unchecked(stream_id=v)),
            (f"invalid: checked stream_id={label}", checked(v, expected_version=ANY)),
            (f"invalid: event_name={label}", unchecked(event_name=v)),
            (f"invalid: expected_versions key={label}", checked(expected_versions=_mapping(v))),
            (f"invalid: batch stream_id={label}", batch(ok, NewEvent(v, "E", {}))),
            (f"invalid: batch event_name={label}", batch(ok, NewEvent("s1", v, {}))),
            (f"invalid: lock_stream={label}", lambda s, v=v: s.lock_stream(v)),
            (f"invalid: history={label}", lambda s, v=v: s.history([v])),
            (f"invalid: erase_pii={label}", lambda s, v=v: s.erase_pii(v)),
            (f"invalid: subscribe={label}", lambda s, v=v: s.subscribe(v, print)),
        ]
    for label, v in [("none", None), ("list", [1]), ("string", "{}"), ("int", 2**70), ("set", {"a"})]:
        calls += [
            (f"invalid: data={label}", unchecked(data=v)),
            (f"invalid: checked data={label}", checked(data=v, expected_version=1)),  # s1 is at 1
            (f"invalid: batch data={label}", batch(ok, NewEvent("s1", "E", v))),
        ]
        if v is not None:  # meta=None means no meta
            calls.append((f"invalid: meta={label}", unchecked(meta=v)))
    not_json: list[tuple[str, Any]] = [
        ("nan", math.nan),
        ("inf", math.inf),
        ("-inf", [-math.inf]),
        ("nan-key", {math.nan: 1}),
        ("object", NotJson()),
        ("set", {1, 2}),
        ("bytes", b"x"),
        ("tuple-key", {(1, 2): "x"}),
        ("5000-digit-int", 10**5000),
        ("circular", _circular()),
        ("100000-nested-lists", nested_list(100_000)),
    ]
    for label, v in not_json:
        calls += [
            (f"invalid: data value={label}", unchecked(data={"a": v})),
            (f"invalid: checked data value={label}", checked(data={"a": v}, expected_version=1)),
            (f"invalid: batch data value={label}", batch(ok, NewEvent("s1", "E", {"a": v}))),
            (f"invalid: meta value={label}", unchecked(meta={"a": v})),
            (f"invalid: PII value={label}", unchecked(data={"p": v}, pii_fields=["p"])),
        ]
    # s1 is at version 1: the valid expected versions here are conflicts.
    versions: list[tuple[str, Any]] = [
        ("invalid: -1", -1),
        ("invalid: True", True),
        ("invalid: False", False),
        ("invalid: 1.0", 1.0),
        ("invalid: 0.5", 0.5),
        ("invalid: nan", math.nan),
        ("invalid: '1'", "1"),
        ("invalid: 'ANY'", "ANY"),
        ("invalid: None", None),
        ("invalid: []", []),
        ("invalid: -2**70", -(2**70)),
        ("conflict: 2**70", 2**70),
        ("conflict: 2**63", 2**63),
        ("conflict: 0", 0),
        ("conflict: NO_STREAM", NO_STREAM),
    ]
    for label, e in versions:
        calls += [
            (f"{label} as expected_version", checked(expected_version=e)),
            (f"{label} in expected_versions", checked(expected_versions={"s1": e})),
            (f"{label} in a batch's expected_versions", batch(ok, expected_versions={"s1": e})),
        ]
    calls += [
        ("invalid: expected_versions=list", checked(expected_versions=[("s1", ANY)])),
        ("invalid: expected_versions=str", checked(expected_versions="s1")),
        ("invalid: pii_fields=str", unchecked(data={"p": "x"}, pii_fields="p")),
        ("invalid: pii_fields=[1]", unchecked(data={"p": "x"}, pii_fields=[1])),
        ("invalid: pii_fields=['']", unchecked(data={"p": "x"}, pii_fields=[""])),
        ("invalid: pii_fields=[None]", unchecked(data={"p": "x"}, pii_fields=[None])),
        ("invalid: event_id=int", unchecked(event_id=5)),
        ("invalid: event_id=empty", unchecked(event_id="")),
        ("invalid: event_id=not-a-uuid", unchecked(event_id="not-a-uuid")),
        ("invalid: event_id=sql", unchecked(event_id="' OR 1=1 --")),
        ("invalid: event_id=nul", unchecked(event_id=UUID + "\x00")),
        ("invalid: event_id=list", unchecked(event_id=[UUID])),
        ("invalid: batch item=str", batch(ok, "E")),
        ("invalid: batch item=dict", batch(ok, {"stream_id": "s1"})),
        ("invalid: batch=str", lambda s: s.record_events("s1")),
        ("batch repeats an event_id", batch(*[NewEvent("s1", "E", {}, event_id=UUID)] * 2)),
        ("schema: name=int", unchecked(event_name="TYPED", data={"name": 5, "count": 1})),
        ("schema: count=str", unchecked(event_name="TYPED", data={"name": "n", "count": "1"})),
        ("schema: count=2.0**70", unchecked(event_name="TYPED", data={"name": "n", "count": 2.0**70})),
        ("schema: unknown field", unchecked(event_name="TYPED", data={"name": "n", "count": 1, "x": 1})),
    ]
    return calls


EXPECTED_ERRORS: dict[str, type[Exception]] = {
    "conflict": StreamVersionError,
    "invalid": InvalidEventError,
    "schema": ValidationError,
}


def test_bad_python_api_input_raises_and_records_nothing(pii_backend: Backend, made_apps: MadeApps) -> None:
    stack, app = make(pii_backend, made_apps)
    with app.app_context():
        stack.record_unchecked_event("s1", "E", {"first": True})
    before = stored_counts(pii_backend, stack, app)
    wrong = []
    for case, call in bad_calls():
        with app.app_context():
            error = refused(functools.partial(call, stack))
        expected = EXPECTED_ERRORS.get(case.split(":")[0], ShimmieError)
        if error is None or not isinstance(error, (ShimmieError, ValidationError)):
            wrong.append(f"{case}: {type(error).__name__ if error else 'no error'}: {error!s:.120}")
        elif not isinstance(error, expected):
            wrong.append(f"{case}: {type(error).__name__} instead of {expected.__name__}")
        elif isinstance(error, InvalidEventError) and not str(error):
            wrong.append(f"{case}: an InvalidEventError without a message")
    assert not wrong, "\n".join(wrong)
    assert stored_counts(pii_backend, stack, app) == before
    with app.app_context():
        assert stack.record_event("s1", "E", {"second": True}, expected_version=1).stream_version == 2
        assert [e.data for e in stack.read_events()] == [{"first": True}, {"second": True}]


@pytest.mark.parametrize("pii_fields", [5, 1.5, True])
def test_pii_fields_that_is_not_a_list_raises_invalid_event_error(
    pii_backend: Backend, made_apps: MadeApps, pii_fields: Any
) -> None:
    stack, app = make(pii_backend, made_apps)
    before = stored_counts(pii_backend, stack, app)
    with app.app_context(), pytest.raises(InvalidEventError):
        stack.record_unchecked_event("s1", "E", {"p": "x"}, pii_fields=pii_fields)
    assert stored_counts(pii_backend, stack, app) == before
    client = app.test_client()
    body = {"stream_id": "s1", "event_name": "E", "data": {"p": "x"}, "pii_fields": 5}
    assert_json_error(client.post("/bad/events", json=body), 400)


@pytest.mark.parametrize(
    "data",
    [{1: "a", "1": "b"}, {True: "a", "true": "b"}, {None: "a", "null": "b"}, {1.5: "a", "1.5": "b"}],
    ids=["int", "bool", "none", "float"],
)
def test_data_keys_colliding_as_json_strings_are_refused(
    pii_backend: Backend, made_apps: MadeApps, data: dict[Any, str]
) -> None:
    stack, app = make(pii_backend, made_apps)
    before = stored_counts(pii_backend, stack, app)
    with app.app_context(), pytest.raises(InvalidEventError):
        stack.record_unchecked_event("s1", "E", data)
    with app.app_context(), pytest.raises(InvalidEventError):
        stack.record_unchecked_event("s1", "E", {}, meta=data)
    assert stored_counts(pii_backend, stack, app) == before


def test_stream_ids_names_and_meta_round_trip_generated(pii_backend: Backend, made_apps: MadeApps) -> None:
    """A generated stream id / event name is recorded and read back exactly when valid, else refused."""
    stack, app = make(pii_backend, made_apps)
    kept: list[Event] = []

    @FEW
    @given(
        stream_id=st.text(max_size=300) | st.sampled_from(SQL_FRAGMENTS) | json_scalars,
        event_name=st.text(max_size=300) | st.sampled_from(SQL_FRAGMENTS) | json_scalars,
        meta=st.dictionaries(st.text(max_size=8), json_values, max_size=3),
    )
    def check(stream_id: Any, event_name: Any, meta: dict[str, Any]) -> None:
        with app.app_context():
            error = refused(
                lambda: kept.append(stack.record_unchecked_event(stream_id, event_name, {}, meta=meta))
            )
            events = stack.read_events()
            history = stack.history(stream_id)["history"] if error is None else []
        if valid_stream_id(stream_id) and valid_name(event_name):
            assert error is None, f"{type(error).__name__}: {error}"
            event = kept[-1]
            assert (event.stream_id, event.event_name, canonical(event.meta)) == (
                stream_id,
                event_name,
                canonical(meta),
            )
            assert summary(events[-1:]) == summary([event])
            assert history[-1].event_id == event.event_id and {e.stream_id for e in history} == {stream_id}
        else:
            assert isinstance(error, InvalidEventError), f"{type(error).__name__}: {error}"
        assert summary(events) == summary(kept)

    check()
    assert len(pii_backend.raw_event_rows(app)) == len(kept)
    if pii_backend.durable:
        stack, app = restart(pii_backend, made_apps, stack, app)
        assert summary(read(stack, app)) == summary(kept)


def test_generated_expected_versions(pii_backend: Backend, made_apps: MadeApps) -> None:
    """A write succeeds exactly when the expected version is valid and matches; else nothing is kept."""
    stack, app = make(pii_backend, made_apps)
    version = {"v": 0}

    @FEW
    @given(
        expected=st.integers(min_value=-3, max_value=6)
        | st.integers()
        | st.floats()
        | st.booleans()
        | st.text(max_size=5)
        | st.none()
        | st.sampled_from([ANY, NO_STREAM, STREAM_EXISTS, 2**70, 2**63, 2**31]),
        several=st.booleans(),
    )
    def check(expected: Any, several: bool) -> None:
        current = version["v"]
        with app.app_context():
            if several:
                error = refused(
                    functools.partial(
                        stack.record_event, "v", "E", {}, expected_versions={"v": expected, "w": ANY}
                    )
                )
            else:
                error = refused(
                    functools.partial(stack.record_event, "v", "E", {}, expected_version=expected)
                )
            stored = stack.history("v")["history"]
        valid = isinstance(expected, type(ANY)) or (type(expected) is int and expected >= 0)
        matches = (
            expected is ANY
            or (expected is NO_STREAM and current == 0)
            or (expected is STREAM_EXISTS and current > 0)
            or (type(expected) is int and expected == current)
        )
        if not valid:
            assert isinstance(error, InvalidEventError), f"{expected!r}: {type(error).__name__}: {error}"
        elif not matches:
            assert isinstance(error, StreamVersionError), f"{expected!r}: {type(error).__name__}: {error}"
            assert error.conflicts == [{"stream_id": "v", "expected": expected, "actual": current}]
        else:
            assert error is None, f"{expected!r}: {type(error).__name__}: {error}"
            version["v"] = current + 1
        assert len(stored) == version["v"]
        assert [e.stream_version for e in stored] == list(range(1, version["v"] + 1))

    check()
    assert len(pii_backend.raw_event_rows(app)) == version["v"]


def test_generated_json_data_round_trips(pii_backend: Backend, made_apps: MadeApps) -> None:
    """Any JSON value (NUL, astral characters, unbounded ints, extreme floats) reads back exactly."""
    stack, app = make(pii_backend, made_apps)
    kept: list[tuple[int, str, str]] = []

    @SOME
    @given(value=json_values, pii=st.booleans())
    def check(value: Any, pii: bool) -> None:
        data = {"v": value, "w": value} if pii else {"v": value}
        with app.app_context():
            event = stack.record_unchecked_event(
                "data", "DATA", data, meta={"v": value}, pii_fields=["w"] if pii else None
            )
            (read_back,) = stack.read_events(after=event.sequence_num - 1, limit=1)
        assert canonical(event.data) == canonical(data)
        assert canonical(read_back.data) == canonical(data)
        assert canonical(read_back.meta) == canonical({"v": value})
        kept.append((event.sequence_num, canonical(data), canonical({"v": value})))

    check()
    with app.app_context():
        assert [canonical(e.data) for e in stack.model(Seen).events] == [data for _, data, _ in kept]
    if pii_backend.durable:
        stack, app = restart(pii_backend, made_apps, stack, app)
        events = read(stack, app)
        assert [(e.sequence_num, canonical(e.data), canonical(e.meta)) for e in events] == kept
        with app.app_context():
            assert [canonical(e.data) for e in stack.model(Seen).events] == [data for _, data, _ in kept]


def test_hand_picked_valid_values_round_trip(pii_backend: Backend, made_apps: MadeApps) -> None:
    stack, app = make(pii_backend, made_apps)
    ids = [*map(as_stream_id, SQL_FRAGMENTS), "s" * 255, "\U0001f3b5" * 255, "é", "EVENT", "*", " ", "\u202e"]
    recorded = []
    with app.app_context():
        for stream_id in ids:
            recorded.append(
                stack.record_event(
                    stream_id,
                    stream_id,
                    VALID_ODD_DATA,
                    expected_version=NO_STREAM,
                    meta={"who": stream_id, "n": 2**70},
                    pii_fields=["sql", "nul"],
                )
            )
        recorded += stack.record_events(
            [NewEvent(stream_id, "BATCH", {"sql": stream_id}, meta={}) for stream_id in ids],
            expected_versions=dict.fromkeys(ids, 1),
        )
        recorded.append(
            stack.record_event(ids[0], "E", {}, expected_versions={ids[0]: 2, ids[1]: STREAM_EXISTS})
        )
    events = read(stack, app)
    assert summary(events) == summary(recorded)
    with app.app_context():
        assert [e.event_id for e in stack.model(Seen).events] == [e.event_id for e in recorded]  # once each
    for event in events[: len(ids)]:
        assert canonical(event.data) == canonical(VALID_ODD_DATA)
        assert event.meta == {"who": event.stream_id, "n": 2**70}
    with app.app_context():
        for stream_id in ids:
            history = stack.history(stream_id)["history"]
            assert {e.stream_id for e in history} == {stream_id}
            assert [e.event_name for e in history][:2] == [stream_id, "BATCH"]
            named = [e.event_id for e in recorded if e.event_name == stream_id]
            assert [e.event_id for e in stack.read_events(event_names=[stream_id])] == named
            with stack.lock_stream(stream_id, timeout=1):
                pass
    rows = pii_backend.raw_event_rows(app)
    assert len(rows) == len(recorded)
    assert len(pii_backend.raw_pii_rows(app)) == len(ids)
    assert {row["stream_id"] for row in rows} == set(ids)
    # The PII went to the PII store: the event rows hold placeholders, not the SQL fragments.
    (first_row,) = [row for row in rows if row["sequence_num"] == 1]
    first = json.loads(first_row["data"])
    assert first["sql"] == [""] * len(SQL_FRAGMENTS) and first["nul"] == ""
    if pii_backend.durable:
        stack, app = restart(pii_backend, made_apps, stack, app)
        assert summary(read(stack, app)) == summary(recorded)


def test_unknown_event_names_are_recorded_and_filter_to_nothing(
    pii_backend: Backend, made_apps: MadeApps
) -> None:
    stack, app = make(pii_backend, made_apps)
    with app.app_context():
        event = stack.record_unchecked_event("s1", "NOBODY_LISTENS_TO_THIS", {"x": 1})
        assert stack.model(Seen).events[-1].event_id == event.event_id
        for unknown in [
            "NEVER",
            "nobody_listens_to_this",
            "NOBODY%",
            "NOBODY_LISTENS_TO_THI_",
            *SQL_FRAGMENTS,
        ]:
            assert stack.read_events(event_names=[unknown]) == []
            assert stack.history("s1", event_names=[unknown]) == {
                "history": [],
                "created_at": None,
                "updated_at": None,
            }
            assert stack.read_events(stream_ids=[unknown]) == []
        assert [e.event_id for e in stack.read_events(event_names=["NOBODY_LISTENS_TO_THIS"])] == [
            event.event_id
        ]
    assert len(pii_backend.raw_event_rows(app)) == 1


def test_tables_survive_sql_fragments(durable_pii_backend: Backend, made_apps: MadeApps) -> None:
    """After recording and querying every fragment, another store opened on the database sees every row."""
    backend = durable_pii_backend
    stack, app = make(backend, made_apps)
    with app.app_context():
        for fragment in SQL_FRAGMENTS:
            stream_id = as_stream_id(fragment)
            stack.record_unchecked_event(
                stream_id, fragment, {"p": fragment}, meta={"m": fragment}, pii_fields=["p"]
            )
            stack.read_events(stream_ids=[stream_id], event_names=[fragment])
            stack.history(stream_id, event_names=[fragment])
            if fragment == SQL_FRAGMENTS[0]:
                stack.erase_pii(stream_id)
    stack.shutdown(app)
    store = event_store_from_url(backend.event_url)
    store.open()
    try:
        assert [e.stream_id for e in store.read() if e.event_name != "shimmie.pii_erased"] == [
            as_stream_id(fragment) for fragment in SQL_FRAGMENTS
        ]
        assert store.count_streams() == len(SQL_FRAGMENTS)
        pii = store.colocated_pii_store()
        assert len(pii.get_json([e.event_id for e in store.read()])) == len(SQL_FRAGMENTS) - 1
    finally:
        store.close()
    assert len(backend.raw_event_rows(app)) == len(SQL_FRAGMENTS) + 1
    assert len(backend.raw_pii_rows(app)) == len(SQL_FRAGMENTS) - 1


# -- lone surrogates and deep payloads through the Python API ---------------------------------


def _hold(stack: ShimmieStack, stream_id: str) -> None:
    with stack.lock_stream(stream_id, timeout=1):
        pass


SURROGATE_CALLS: list[tuple[str, Callable[[ShimmieStack], Any]]] = [
    ("data value", lambda s: s.record_unchecked_event("s1", "E", {"a": "\ud800"})),
    ("data key", lambda s: s.record_unchecked_event("s1", "E", {"\udfff": 1})),
    ("stream_id", lambda s: s.record_unchecked_event("\ud800", "E", {})),
    ("event_name", lambda s: s.record_unchecked_event("s1", "x\udc00", {})),
    ("meta", lambda s: s.record_unchecked_event("s1", "E", {}, meta={"m": "\ud800"})),
    ("PII value", lambda s: s.record_unchecked_event("s1", "E", {"p": "\ud800"}, pii_fields=["p"])),
    ("history", lambda s: s.history("\ud800")),
    ("read_events filter", lambda s: s.read_events(stream_ids=["\ud800"], event_names=["\udfff"])),
    ("lock_stream", lambda s: _hold(s, "\ud800")),
]


def test_lone_surrogates_in_the_python_api(
    pii_backend: Backend, made_apps: MadeApps, request: pytest.FixtureRequest
) -> None:
    """Refused with InvalidEventError (nothing stored), or stored and read back exactly."""
    stack, app = make(pii_backend, made_apps)
    wrong = []
    for case, call in SURROGATE_CALLS:
        before = stored_counts(pii_backend, stack, app)
        with app.app_context():
            error = refused(functools.partial(call, stack))
        if error is not None:
            if not isinstance(error, InvalidEventError):
                wrong.append(f"{case}: {type(error).__name__}: {error!s:.100}")
            if stored_counts(pii_backend, stack, app) != before:
                wrong.append(f"{case}: refused, yet something was stored")
    assert not wrong, "\n".join(wrong)
    events = read(stack, app)
    if pii_backend.durable:
        stack, app = restart(pii_backend, made_apps, stack, app)
        assert summary(read(stack, app)) == summary(events)


def test_a_deep_payload_that_is_accepted_stays_readable(
    pii_backend: Backend, made_apps: MadeApps, request: pytest.FixtureRequest
) -> None:
    """The deepest payload record_* accepts must read back in a request and after a restart."""
    stack, app = make(pii_backend, made_apps)
    with app.app_context():
        deepest = next(
            depth
            for depth in range(1100, 0, -10)
            if refused(
                functools.partial(stack.record_unchecked_event, "deep", "DEEP", {"a": nested_list(depth)})
            )
            is None
        )
    if pii_backend.durable:
        # A restart whose first request starts the stack (SHIMMIE_AUTO_STARTUP), replaying the event.
        stack, app = restart(pii_backend, made_apps, stack, app, start=False)
        response = app.test_client().get("/bad/ping")
        assert response.status_code == 200, response.get_data(as_text=True)[:200]
    client = app.test_client()
    response = client.get("/admin/streams/deep")
    assert response.status_code == 200, response.get_data(as_text=True)[:200]
    assert unordered(response.get_json()["events"][0]["data"]) == unordered({"a": nested_list(deepest)})
    good_request_works(client, stack, app)


# -- bad arguments to the read API ------------------------------------------------------------


def _read_cases() -> list[Any]:
    """(call, check of the result): bad arguments raise, odd but valid ones answer right."""
    return [
        pytest.param(lambda s: s.read_events(after=2**70), lambda r: r == [], id="after-2**70"),
        pytest.param(lambda s: s.read_events(limit=2**70), lambda r: len(r) == 3, id="limit-2**70"),
        pytest.param(lambda s: s.read_events(stream_ids=[1]), lambda r: False, id="stream-ids-int"),
        pytest.param(
            lambda s: s.read_events(stream_ids="ab"),
            lambda r: [e.stream_id for e in r] == ["ab"],
            id="stream-ids-str",
        ),
        pytest.param(lambda s: s.history(5), lambda r: False, id="history-int"),
        pytest.param(
            lambda s: s.history(["a", "ab"], event_names=["'; DROP TABLE shimmie_events; --", "E"]),
            lambda r: [e.stream_id for e in r["history"]] == ["a", "ab"],
            id="history-sql-names",
        ),
    ]


@pytest.mark.parametrize(("call", "check"), _read_cases())
def test_read_api_bad_arguments(
    pii_backend: Backend,
    made_apps: MadeApps,
    request: pytest.FixtureRequest,
    call: Callable[[ShimmieStack], Any],
    check: Callable[[Any], bool],
) -> None:
    """A bad argument raises ShimmieError; an odd but valid one gives the right answer."""
    stack, app = make(pii_backend, made_apps)
    result: list[Any] = []
    with app.app_context():
        for stream_id in ("a", "b", "ab"):
            stack.record_unchecked_event(stream_id, "E", {})
        error = refused(lambda: result.append(call(stack)))
    assert error is None or isinstance(error, ShimmieError), f"{type(error).__name__}: {error}"
    if error is None:
        assert check(result[0])

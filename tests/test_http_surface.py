"""What the stack's HTTP surface shows, and to whom: X-Seq-Num, /health, redirects, CORS.

A small app: open and guarded views (``@authorize``), the admin API at ``/admin``, tokens
``Bearer user`` (no admin) and ``Bearer admin``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from flask import Blueprint, Flask, abort
from flask.testing import FlaskClient

from flask_shimmie import ShimmieStack, authorize, no_authorization
from flask_shimmie.recording import unique_keys
from flask_shimmie.request_hooks import relative_location
from tests.helpers import ADMIN, USER, add_guarded_views, add_open_view, add_things_view, token_app

LOCALHOST = "http://localhost:3000"


def build(config: Mapping[str, Any] | None = None, *, authenticate: Any = None) -> tuple[Flask, ShimmieStack]:
    bp = Blueprint("surface", __name__)
    add_open_view(bp)
    add_guarded_views(bp)
    add_things_view(bp)

    @bp.get("/slashed/")
    @no_authorization
    def slashed() -> dict[str, Any]:
        return {"ok": True}

    @bp.get("/missing")
    @authorize(lambda identity: True)
    def missing() -> None:
        abort(404, "No such thing.")

    return token_app("Surface", "/v1", bp, config, authenticate=authenticate)


@pytest.fixture
def app() -> Iterator[Flask]:
    app, stack = build()
    yield app
    stack.shutdown(app)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


# -- X-Seq-Num only for admitted callers of a matched route ------------------------------------


def test_x_seq_num_is_not_shown_to_refused_callers_or_unknown_paths(client: FlaskClient) -> None:
    assert client.post("/v1/things/t1", json={"n": 1}, headers=USER).status_code == 201
    hidden = {
        "401": client.get("/v1/guarded"),
        "403": client.get("/v1/admins", headers=USER),
        "404 unknown path": client.get("/nowhere", headers=ADMIN),
        "405": client.delete("/v1/guarded", headers=ADMIN),
        "308 redirect": client.get("/v1//open"),
        "admin 401": client.get("/admin/events"),
        "admin 403": client.get("/admin/events", headers=USER),
        "413 before a refusal": client.post("/v1/things/t9", data=b"x" * (2 * 1024 * 1024)),
    }
    for what, response in hidden.items():
        assert "X-Seq-Num" not in response.headers, f"{what}: {response.status_code} {response.headers}"


def test_x_seq_num_is_shown_to_admitted_callers_errors_included(client: FlaskClient) -> None:
    assert client.post("/v1/things/t1", json={"n": 1}, headers=USER).status_code == 201
    shown = {
        200: client.get("/v1/guarded", headers=USER),
        409: client.post("/v1/things/t1", json={"n": 2}, headers=USER),
        400: client.post("/v1/things/t2", data="{", content_type="application/json", headers=USER),
        404: client.get("/v1/missing", headers=USER),
        413: client.post("/v1/things/t9", data=b"x" * (2 * 1024 * 1024), headers=USER),
    }
    for code, response in shown.items():
        assert response.status_code == code, response.get_data(as_text=True)
        assert response.headers.get("X-Seq-Num") == "1", code
    for path, headers in [("/v1/open", {}), ("/admin/health", {}), ("/admin/events", ADMIN)]:
        assert client.get(path, headers=headers).headers.get("X-Seq-Num") == "1", path


# -- /health: the stores' locations only for admins ----------------------------------------------


def test_health_names_only_the_backend_to_callers_the_admin_authorizer_does_not_admit(tmp_path: Path) -> None:
    database = tmp_path / "secret-location.db"
    app, stack = build({"SHIMMIE_EVENT_STORE": f"sqlite:///{database}"})
    try:
        client = app.test_client()
        for headers in ({}, USER, {"Authorization": "Bearer nonsense"}):
            response = client.get("/admin/health", headers=headers)
            assert response.status_code == 200, response.get_data(as_text=True)
            body = response.get_json()
            assert (body["event_store"], body["pii_store"], body["status"]) == ("sqlite", "sqlite", "ok")
            assert "secret-location" not in response.get_data(as_text=True)
        admitted = client.get("/admin/health", headers=ADMIN).get_json()
        assert admitted["event_store"] == admitted["pii_store"] == f"sqlite:///{database}"
    finally:
        stack.shutdown(app)


def test_health_answers_when_the_authenticator_fails_or_no_authorizer_is_registered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken() -> None:
        raise RuntimeError("token service down")

    app, stack = build(authenticate=broken)
    try:
        response = app.test_client().get("/admin/health", headers=ADMIN)
        assert response.status_code == 200 and response.get_json()["event_store"] == "memory"
        assert "token service down" in caplog.text
    finally:
        stack.shutdown(app)
    bare = ShimmieStack()
    app = Flask(__name__)
    app.config.update(TESTING=True, SHIMMIE_ADMIN_URL="/admin")
    bare.init_app(app)
    response = app.test_client().get("/admin/health")
    assert response.status_code == 200 and response.get_json()["event_store"] == "memory"


# -- redirects never carry the client's Host -------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/v1//open", "/v1/open"),
        ("/v1//open?a=1&b=%2F", "/v1/open?a=1&b=%2F"),
        ("/v1/slashed", "/v1/slashed/"),
    ],
)
def test_routing_redirects_have_a_relative_location(client: FlaskClient, path: str, location: str) -> None:
    response = client.get(path, headers={"Host": "evil.example"})
    assert response.status_code == 308
    assert response.headers["Location"] == location
    assert "evil.example" not in response.get_data(as_text=True)
    followed = client.get(path, headers={"Host": "evil.example"}, follow_redirects=True)
    assert followed.status_code == 200 and followed.get_json() == {"ok": True}


def test_relative_location_never_names_another_host() -> None:
    assert relative_location("http://evil.example/v1/songs") == "/v1/songs"
    assert relative_location("https://h:8000/a/b?x=1") == "/a/b?x=1"
    assert relative_location("http://h//evil.example/x") == "/evil.example/x"
    assert relative_location("http://h/\\evil.example/x") == "/evil.example/x"
    assert relative_location("http://h") == "/"


# -- CORS ------------------------------------------------------------------------------------------


def cors_app(options: Mapping[str, Any]) -> FlaskClient:
    app, _ = build({"SHIMMIE_CORS": dict(options)})
    return app.test_client()


def vary(response: Any) -> list[str]:
    return [v.strip() for line in response.headers.getlist("Vary") for v in line.split(",")]


def test_an_admin_preflight_is_answered_without_credentials() -> None:
    client = cors_app({"origins": LOCALHOST, "supports_credentials": True})
    preflight = client.options(
        "/admin/events",
        headers={
            "Origin": LOCALHOST,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "Authorization",
        },
    )
    assert preflight.status_code == 200, preflight.get_data(as_text=True)
    assert preflight.headers["Access-Control-Allow-Origin"] == LOCALHOST
    assert preflight.headers["Access-Control-Allow-Credentials"] == "true"
    assert "GET" in preflight.headers["Access-Control-Allow-Methods"]
    assert "authorization" in preflight.headers["Access-Control-Allow-Headers"].lower()
    assert vary(preflight) == ["Origin"]
    for path in ("/admin/streams/s1", "/admin/streams/s1/erase-pii", "/admin/replay"):
        assert client.options(path, headers={"Origin": LOCALHOST}).status_code == 200, path
    # The preflight opens nothing: the real request still needs an admin.
    real = client.get("/admin/events", headers={"Origin": LOCALHOST})
    assert real.status_code == 401 and real.headers["Access-Control-Allow-Origin"] == LOCALHOST
    assert client.get("/admin/events", headers={"Origin": LOCALHOST, **ADMIN}).status_code == 200


def test_cors_headers_only_with_an_origin_and_vary_origin_always() -> None:
    client = cors_app({"origins": LOCALHOST})
    without = client.get("/v1/open")
    assert not [name for name in without.headers.keys() if name.startswith("Access-Control-")]
    assert vary(without) == ["Origin"]
    allowed = client.get("/v1/open", headers={"Origin": LOCALHOST})
    assert allowed.headers["Access-Control-Allow-Origin"] == LOCALHOST and vary(allowed) == ["Origin"]
    other = client.get("/v1/open", headers={"Origin": "http://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers and vary(other) == ["Origin"]
    error = client.get("/v1/guarded", headers={"Origin": LOCALHOST})
    assert error.status_code == 401
    assert error.headers["Access-Control-Allow-Origin"] == LOCALHOST and vary(error) == ["Origin"]
    several = cors_app({"origins": [LOCALHOST, "http://other.example"]})
    assert vary(several.get("/v1/open", headers={"Origin": LOCALHOST})) == ["Origin"]  # not twice


def test_the_users_cors_options_win() -> None:
    always = cors_app({"origins": LOCALHOST, "always_send": True})
    assert always.get("/v1/open").headers["Access-Control-Allow-Origin"] == LOCALHOST
    quiet = cors_app({"origins": LOCALHOST, "vary_header": False})
    assert vary(quiet.get("/v1/open", headers={"Origin": LOCALHOST})) == []


def test_a_resource_that_always_sends_gets_cors_headers_without_an_origin() -> None:
    # always_send set on one resource only: requests without an Origin still get its headers there.
    client = cors_app({"origins": LOCALHOST, "resources": {"/v1/open": {"always_send": True}, "/v1/*": {}}})
    assert client.get("/v1/open").headers["Access-Control-Allow-Origin"] == LOCALHOST
    guarded = client.get("/v1/guarded")
    assert "Access-Control-Allow-Origin" not in guarded.headers and vary(guarded) == ["Origin"]
    with_origin = client.get("/v1/guarded", headers={"Origin": LOCALHOST})
    assert with_origin.headers["Access-Control-Allow-Origin"] == LOCALHOST


def test_an_app_config_cors_key_is_honoured_without_an_origin() -> None:
    # flask-cors also reads CORS_* config keys; SHIMMIE_CORS's own options win over them.
    app, _ = build({"SHIMMIE_CORS": {"origins": LOCALHOST}, "CORS_EXPOSE_HEADERS": "X-Seq-Num"})
    client = app.test_client()
    allowed = client.get("/v1/open", headers={"Origin": LOCALHOST})
    assert allowed.headers["Access-Control-Expose-Headers"] == "X-Seq-Num"
    assert "Access-Control-Expose-Headers" not in client.get("/v1/open").headers


def test_without_cors_config_the_stack_adds_no_vary() -> None:
    app, _ = build()
    response = app.test_client().get("/v1/open", headers={"Origin": LOCALHOST})
    assert "Access-Control-Allow-Origin" not in response.headers and vary(response) == []


# -- the JSON provider ------------------------------------------------------------------------------

JSON_INPUTS: list[Any] = [
    '{"a": 1, "b": [1, 2, {"c": null}]}',
    b'{"a": "\xc3\xa9"}',
    bytearray(b'{"a": 1}'),
    "\ufeff{}",  # a BOM in text: refused
    b"\xef\xbb\xbf{}",  # a BOM in bytes: read as UTF-8
    '{"a": 1}'.encode("utf-16"),
    '{"a": 1}'.encode("utf-32-le"),
    '{"a": 1, "a": 2}',  # a repeated key: refused
    '{"a": {"b": 1, "b": 1}}',
    "[" * 100_000 + "]" * 100_000,  # too deep for Python
    "{",
    " 7 ",
    12,
]


@pytest.mark.parametrize("text", JSON_INPUTS, ids=lambda value: repr(value)[:30])
def test_the_json_provider_reads_as_json_loads_with_unique_keys(text: Any) -> None:
    app, _ = build()

    def outcome(read: Any) -> Any:
        try:
            return "value", read(text)
        except RecursionError:  # what the provider turns into a 400
            return "too deep", ValueError("The JSON body nests objects and arrays too deeply.")
        except Exception as error:  # the kind and message of what each refuses
            if str(error) == "The JSON body nests objects and arrays too deeply.":
                return "too deep", ValueError(str(error))
            return "error", type(error), str(error)

    def same(found: Any, wanted: Any) -> bool:
        if found[0] == "too deep":
            return wanted[0] == "too deep"
        return bool(found == wanted)

    expected = outcome(lambda value: json.loads(value, object_pairs_hook=unique_keys))
    assert same(outcome(app.json.loads), expected)
    # Keyword arguments still go through json.loads (with unique keys unless replaced).
    assert same(outcome(lambda value: app.json.loads(value, parse_int=int)), expected)

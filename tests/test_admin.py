"""The admin blueprint: health, events, streams, replay, erase-pii; guarded by admin_authorizer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask, request
from flask.testing import FlaskClient

from flask_shimmie import ShimmieStack
from tests.helpers import Journal

ADMIN = {"Authorization": "Bearer admin"}
USER = {"Authorization": "Bearer user"}


@pytest.fixture
def admin_app(stack: ShimmieStack, make_app: Callable[..., Flask]) -> Flask:
    @stack.authenticator
    def authenticate() -> dict[str, Any] | None:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        return {"admin": {"roles": ["admin"]}, "user": {"roles": []}}.get(token)

    stack.admin_authorizer(lambda identity: "admin" in identity["roles"])
    stack.set_api_version("/v1")
    app = make_app(SHIMMIE_ADMIN_URL="/admin")
    with app.app_context():
        for n in range(5):
            stack.record_unchecked_event(f"s{n % 2}", "CREATED" if n < 3 else "RENAMED", {"n": n})
    return app


@pytest.fixture
def client(admin_app: Flask) -> FlaskClient:
    return admin_app.test_client()


def test_health_is_open_and_reports(client: FlaskClient) -> None:
    response = client.get("/admin/health", headers=ADMIN)
    assert response.status_code == 200
    assert response.get_json() == {
        "status": "ok",
        "event_store": "memory://",
        "pii_store": "memory://",
        "last_stored": 5,
        "last_handled": 5,
        "degraded_models": [],
        "degraded_subscriptions": [],
    }
    # Without credentials it still answers, naming only the backends (tests/test_http_surface.py).
    anonymous = client.get("/admin/health")
    assert anonymous.status_code == 200
    assert anonymous.get_json() == {**response.get_json(), "event_store": "memory", "pii_store": "memory"}


def test_health_reports_degraded_models(admin_app: Flask, stack: ShimmieStack, client: FlaskClient) -> None:
    def broken(event: object) -> None:
        raise RuntimeError("nope")

    stack.subscribe("BREAKS", broken)
    with admin_app.app_context():
        stack.record_unchecked_event("s", "BREAKS", {})
    body = client.get("/admin/health").get_json()
    assert body["status"] == "degraded" and body["degraded_models"] == [
        "test_health_reports_degraded_models.broken".rsplit(".", 1)[-1]
    ]


def test_health_is_503_when_the_store_is_unreachable(
    stack: ShimmieStack, make_app: Callable[..., Flask]
) -> None:
    stack.authenticator(lambda: {"admin": True} if request.headers.get("Authorization") else None)
    stack.admin_authorizer(lambda identity: True)
    app = make_app(
        SHIMMIE_ADMIN_URL="/admin", SHIMMIE_EVENT_STORE="postgresql://postgres@127.0.0.1:1/nothing"
    )
    response = app.test_client().get("/admin/health", headers=ADMIN)
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "unavailable" and "127.0.0.1:1" in body["error"]
    anonymous = app.test_client().get("/admin/health")
    assert anonymous.status_code == 503
    body = anonymous.get_json()
    assert body["status"] == "unavailable" and body["event_store"] == "postgresql"
    assert "127.0.0.1" not in anonymous.get_data(as_text=True)


def test_admin_routes_need_the_admin_role(client: FlaskClient) -> None:
    for method, path in [("get", "/admin/events"), ("get", "/admin/streams/s0"), ("post", "/admin/replay"),
                         ("post", "/admin/streams/s0/erase-pii")]:  # fmt: skip
        assert getattr(client, method)(path).status_code == 401
        assert getattr(client, method)(path, headers=USER).status_code == 403


def test_without_admin_authorizer_everything_but_health_is_403(
    stack: ShimmieStack, make_app: Callable[..., Flask]
) -> None:
    app = make_app(SHIMMIE_ADMIN_URL="/ops")
    client = app.test_client()
    assert client.get("/ops/health").status_code == 200
    response = client.get("/ops/events")
    assert response.status_code == 403 and "admin_authorizer" in response.get_json()["message"]


def test_events_pages_and_filters(client: FlaskClient) -> None:
    first = client.get("/admin/events?limit=2", headers=ADMIN).get_json()
    assert [e["sequence_num"] for e in first["events"]] == [1, 2] and first["next_after"] == 2
    rest = client.get(f"/admin/events?after={first['next_after']}&limit=10", headers=ADMIN).get_json()
    assert [e["sequence_num"] for e in rest["events"]] == [3, 4, 5] and rest["next_after"] is None
    event = rest["events"][0]
    assert set(event) >= {"sequence_num", "stream_id", "stream_version", "event_id", "event_name", "data",
                          "meta", "recorded_at", "replay", "pii_erased", "schema_version"}  # fmt: skip
    by_stream = client.get("/admin/events?stream=s1", headers=ADMIN).get_json()["events"]
    assert [e["data"]["n"] for e in by_stream] == [1, 3]
    by_type = client.get("/admin/events?type=RENAMED&stream=s1", headers=ADMIN).get_json()["events"]
    assert [e["data"]["n"] for e in by_type] == [3]


def test_empty_paging_and_filter_values_are_the_defaults(client: FlaskClient) -> None:
    page = client.get("/admin/events?after=&limit=&stream=&type=", headers=ADMIN).get_json()
    assert [e["sequence_num"] for e in page["events"]] == [1, 2, 3, 4, 5] and page["next_after"] is None


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "limit=x", "after=-1", "after=1.5"])
def test_events_bad_paging_is_400(client: FlaskClient, query: str) -> None:
    response = client.get(f"/admin/events?{query}", headers=ADMIN)
    assert response.status_code == 400 and response.get_json()["code"] == 400


def test_stream_history(client: FlaskClient) -> None:
    body = client.get("/admin/streams/s0", headers=ADMIN).get_json()
    assert [e["data"]["n"] for e in body["events"]] == [0, 2, 4]
    assert client.get("/admin/streams/unknown", headers=ADMIN).get_json() == {"events": []}


def test_replay_rebuilds_models(admin_app: Flask, stack: ShimmieStack, client: FlaskClient) -> None:
    with admin_app.app_context():
        before = stack.model(Journal)
    body = client.post("/admin/replay", headers=ADMIN).get_json()
    assert body == {"replayed": 5, "last_handled": 5}
    with admin_app.app_context():
        assert stack.model(Journal) is not before and len(stack.model(Journal).events) == 5


def test_erase_pii(admin_app: Flask, stack: ShimmieStack, client: FlaskClient) -> None:
    with admin_app.app_context():
        stack.record_unchecked_event("person", "JOINED", {"email": "a@b.c"}, pii_fields=["email"])
    assert client.post("/admin/streams/person/erase-pii", headers=ADMIN).get_json() == {"erased_events": 1}
    event = client.get("/admin/streams/person", headers=ADMIN).get_json()["events"][0]
    assert event["data"] == {"email": ""} and event["pii_erased"] is True


def test_admin_is_not_prefixed_by_the_api_version(client: FlaskClient) -> None:
    assert client.get("/v1/admin/health").status_code == 404

"""Authentication, @authorize / @no_authorization, and enforcement at mount time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Blueprint, Flask, request
from flask.views import MethodView

from flask_shimmie import (
    AuthorizationNotImplemented,
    ShimmieStack,
    any_identity,
    authorize,
    current_identity,
    get_identity,
    no_authorization,
)

TOKENS = {"editor": {"name": "Elvis", "roles": ["editor"]}, "reader": {"name": "Pris", "roles": []}}


def is_editor(identity: dict[str, Any]) -> bool:
    return "editor" in identity["roles"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def calls() -> list[str]:
    return []


@pytest.fixture
def secured(stack: ShimmieStack, make_app: Callable[..., Flask], calls: list[str]) -> Flask:
    @stack.authenticator
    def authenticate() -> dict[str, Any] | None:
        calls.append("authenticate")
        header = request.headers.get("Authorization", "")
        return TOKENS.get(header.removeprefix("Bearer ")) if header.startswith("Bearer ") else None

    things = Blueprint("things", __name__)

    @things.post("")
    @authorize(is_editor)
    def create() -> tuple[str, int]:
        stack.record_unchecked_event("thing", "CREATED", {"by": current_identity["name"]})
        assert get_identity() is current_identity._get_current_object()
        return "Created", 201

    @things.get("")
    @authorize(any_identity)
    def listing() -> dict[str, Any]:
        return {"me": current_identity["name"]}

    @things.get("/public")
    @no_authorization
    def public() -> dict[str, Any]:
        return {"anonymous": not current_identity}

    stack.mount_processor("Things", "/things", things)
    return make_app(SHIMMIE_ENFORCE_AUTHORIZATION=True)


def test_no_identity_is_401_and_nothing_recorded(secured: Flask, stack: ShimmieStack) -> None:
    client = secured.test_client()
    for headers in ({}, {"Authorization": ""}, bearer("unknown"), {"Authorization": "editor"}):
        response = client.post("/things", json={}, headers=headers)
        assert response.status_code == 401
        assert response.get_json()["status"] == "Unauthorized"
    with secured.app_context():
        assert stack.read_events() == []


def test_refused_identity_is_403_and_nothing_recorded(secured: Flask, stack: ShimmieStack) -> None:
    response = secured.test_client().post("/things", json={}, headers=bearer("reader"))
    assert response.status_code == 403 and response.get_json()["code"] == 403
    with secured.app_context():
        assert stack.read_events() == []


def test_allowed_identity_runs_the_view(secured: Flask, stack: ShimmieStack) -> None:
    client = secured.test_client()
    assert client.post("/things", json={}, headers=bearer("editor")).status_code == 201
    assert client.get("/things", headers=bearer("reader")).get_json() == {"me": "Pris"}
    with secured.app_context():
        assert [e.data for e in stack.read_events()] == [{"by": "Elvis"}]


def test_no_authorization_view_is_open(secured: Flask) -> None:
    assert secured.test_client().get("/things/public").get_json() == {"anonymous": True}


def test_authenticator_runs_once_per_request_and_only_when_needed(secured: Flask, calls: list[str]) -> None:
    client = secured.test_client()
    client.post("/things", json={}, headers=bearer("editor"))  # authorize + view both read the identity
    assert calls == ["authenticate"]
    calls.clear()
    client.get("/nowhere")
    assert calls == []


def test_enforcement_names_every_undeclared_view(stack: ShimmieStack, make_app: Callable[..., Flask]) -> None:
    app = make_app(SHIMMIE_ENFORCE_AUTHORIZATION=True)
    songs = Blueprint("songs", __name__)

    @songs.before_request
    def hook() -> None:  # request hooks are not views
        pass

    @songs.get("")
    @no_authorization
    def listing() -> str:
        return ""

    @songs.post("")
    def create() -> str:
        return ""

    @songs.delete("/<song_id>")
    def remove(song_id: str) -> str:
        return ""

    stack.set_api_version("/v1")
    with pytest.raises(AuthorizationNotImplemented) as caught:
        stack.mount_processor("Song Command", "/songs", songs)
    message = str(caught.value)
    assert "'Song Command'" in message
    assert "/v1/songs [POST] -> view 'songs.create'" in message and "test_auth" in message
    assert "/v1/songs/<song_id> [DELETE] -> view 'songs.remove'" in message
    assert "listing" not in message
    assert [view[2] for view in caught.value.views] == ["songs.create", "songs.remove"]
    assert "songs.create" not in app.view_functions  # nothing half-registered


def test_class_based_views_declare_through_decorators(
    stack: ShimmieStack, make_app: Callable[..., Flask]
) -> None:
    make_app(SHIMMIE_ENFORCE_AUTHORIZATION=True)

    class Declared(MethodView):
        decorators = [authorize(any_identity)]

        def get(self) -> str:
            return "ok"

    class Undeclared(MethodView):
        def get(self) -> str:
            return "ok"

    good = Blueprint("good", __name__)
    good.add_url_rule("/item", view_func=Declared.as_view("item"))
    stack.mount_processor("Good", "/good", good)
    bad = Blueprint("bad", __name__)
    bad.add_url_rule("/item", view_func=Undeclared.as_view("item"))
    with pytest.raises(AuthorizationNotImplemented, match="bad.item"):
        stack.mount_processor("Bad", "/bad", bad)


def test_enforcement_off_mounts_anything(stack: ShimmieStack, make_app: Callable[..., Flask]) -> None:
    app = make_app()
    loose = Blueprint("loose", __name__)
    loose.add_url_rule("/x", view_func=lambda: "x", endpoint="x")
    stack.mount_processor("Loose", "/loose", loose)
    assert app.test_client().get("/loose/x").status_code == 200


def test_enforcement_checked_when_mounted_before_init_app(stack: ShimmieStack) -> None:
    undeclared = Blueprint("early", __name__)
    undeclared.add_url_rule("/x", view_func=lambda: "x", endpoint="x")
    stack.mount_processor("Early", "/early", undeclared)
    app = Flask(__name__)
    app.config["SHIMMIE_ENFORCE_AUTHORIZATION"] = True
    with pytest.raises(AuthorizationNotImplemented, match="early.x"):
        stack.init_app(app)


def test_authorize_needs_a_callable() -> None:
    with pytest.raises(TypeError, match="check"):
        authorize("admin")  # type: ignore[arg-type]

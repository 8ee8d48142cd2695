"""Helpers for the feature tests."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from flask import Blueprint, Flask, request
from flask.testing import FlaskClient

from flask_shimmie import (
    NO_STREAM,
    Event,
    Model,
    ShimmieStack,
    authorize,
    current_stack,
    no_authorization,
    subscribe,
)
from flask_shimmie.storage.interface import AppendBatch, EventStore, PendingEvent


class Journal(Model):
    """Records every event it receives, for assertions."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    @subscribe("*")
    def record(self, event: Event) -> None:
        self.events.append(event)


def append_raw(store: EventStore, stream_id: str, event_name: str, data: dict[str, Any] | None = None) -> int:
    """Write an event straight to ``store``, behind the app's back, as another process would.

    Returns its position.
    """
    data = data or {}
    pending = PendingEvent(stream_id, event_name, str(uuid.uuid4()), data, json.dumps(data), {}, "{}")
    return store.append(AppendBatch((pending,))).events[0].sequence_num


def slow_runs_enabled(config: pytest.Config | None = None) -> bool:
    """Whether the long runs are asked for: ``SHIMMIE_RUN_SLOW=1``, or ``--run-slow``."""
    if os.environ.get("SHIMMIE_RUN_SLOW", "").strip().lower() in ("1", "true", "yes"):
        return True
    return config is not None and bool(config.getoption("--run-slow", default=False))


def require_server(name: str) -> None:
    """Skip a test that runs example_songs under granian when granian does not import.

    ``name`` is a key of :data:`tests.serving.SERVERS`; gunicorn is a test requirement.
    """
    if name == "granian":
        pytest.importorskip(
            "granian", reason='granian, the recommended server, is not installed (pip install -e ".[serve]")'
        )


#: The demo token the example's tests act with (editor and admin).
SONGS_TOKEN = "admin-token"


class SongsClient(FlaskClient):
    """A test client that sends the example's demo admin token with every request."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {SONGS_TOKEN}"


def songs_app(config: dict[str, Any] | None = None) -> Flask:
    """``example_songs.create_app(config)`` whose test clients are authenticated."""
    from example_songs import create_app

    app = create_app(config)
    app.test_client_class = SongsClient
    return app


# -- a small app with two tokens ------------------------------------------------------------------

#: The headers of the two callers :func:`token_app` knows: signed in (no admin), and an admin.
USER = {"Authorization": "Bearer user"}
ADMIN = {"Authorization": "Bearer admin"}


def token_identity() -> dict[str, Any] | None:
    """The caller: ``{"admin": False}`` for ``Bearer user``, ``{"admin": True}`` for ``Bearer admin``."""
    token = request.headers.get("Authorization", "").removeprefix("Bearer ")
    return {"user": {"admin": False}, "admin": {"admin": True}}.get(token)


def is_admin(identity: dict[str, Any]) -> bool:
    """Whether a :func:`token_identity` is the admin's."""
    return bool(identity["admin"])


def add_open_view(bp: Blueprint) -> None:
    """``GET /open``, without authorization: ``{"ok": true}``."""

    @bp.get("/open")
    @no_authorization
    def open_view() -> dict[str, Any]:
        return {"ok": True}


def add_guarded_views(bp: Blueprint) -> None:
    """``GET /guarded`` (any signed-in caller) and ``GET /admins`` (admins only): ``{"ok": true}``."""

    @bp.get("/guarded")
    @authorize(lambda identity: True)
    def guarded() -> dict[str, Any]:
        return {"ok": True}

    @bp.get("/admins")
    @authorize(is_admin)
    def admins_only() -> dict[str, Any]:
        return {"ok": True}


def add_things_view(bp: Blueprint) -> None:
    """``POST /things/<thing_id>`` (signed in): the JSON body recorded as ``ADDED``, a new stream only."""

    @bp.post("/things/<thing_id>")
    @authorize(lambda identity: True)
    def add(thing_id: str) -> tuple[dict[str, Any], int]:
        event = current_stack.record_event(thing_id, "ADDED", request.get_json(), expected_version=NO_STREAM)
        return {"sequence_num": event.sequence_num, "data": event.data}, 201


def token_app(
    processor: str,
    prefix: str,
    bp: Blueprint,
    config: Mapping[str, Any] | None = None,
    *,
    authenticate: Callable[[], dict[str, Any] | None] | None = None,
) -> tuple[Flask, ShimmieStack]:
    """A testing app whose stack mounts ``bp`` as processor ``processor`` at ``prefix``.

    Callers are known by :func:`token_identity` (or ``authenticate``), admins by :func:`is_admin`;
    the admin API is at ``/admin``. ``config`` goes on top of ``TESTING`` and ``SHIMMIE_ADMIN_URL``.
    """
    stack = ShimmieStack()
    stack.authenticator(authenticate or token_identity)
    stack.admin_authorizer(is_admin)
    stack.mount_processor(processor, prefix, bp)
    app = Flask(__name__)
    app.config.update({"TESTING": True, "SHIMMIE_ADMIN_URL": "/admin", **(config or {})})
    stack.init_app(app)
    return app, stack


def stored(app: Flask) -> int:
    """How many events ``app``'s store holds."""
    with app.app_context():
        return len(current_stack.read_events())

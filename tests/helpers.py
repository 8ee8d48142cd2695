"""Helpers for the feature tests."""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flask_shimmie import Event, Model, subscribe
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

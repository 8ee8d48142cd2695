"""The songs example: ShimmieStack's songs app, on Flask.

Run it with ``flask --app example_songs run``; switch stores with
``FLASK_SHIMMIE_EVENT_STORE=sqlite:///songs.db flask --app example_songs run``.
The admin API is at ``/admin``, its web console at ``/admin/console`` (sign in
with ``admin-token``), and its metrics at ``/admin/metrics`` when the ``metrics``
extra is installed.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

from flask import Flask

from .artists import SongsByArtist, artist_query
from .auth import DEMO_TOKENS, authenticate, is_admin
from .commands import song_command
from .model import SongList
from .notifications import REACTOR_NAME, notify_new_song
from .queries import song_query
from .schemas import SongCreated, SongRenamed
from .stack import stack

DEFAULT_CONFIG: dict[str, Any] = {
    "SHIMMIE_CORS": {"origins": "http://localhost:3000", "supports_credentials": True},
    "SHIMMIE_ENFORCE_AUTHORIZATION": True,
    "SHIMMIE_ADMIN_URL": "/admin",
    "SHIMMIE_CONSOLE": True,
    "SHIMMIE_OPENAPI": True,
    "SHIMMIE_OPENAPI_TITLE": "Songs",
    "SONGS_TOKENS": DEMO_TOKENS,
}

stack.authenticator(authenticate)
stack.admin_authorizer(is_admin)
stack.register_model(SongList)
stack.event_schema("SONG_CREATED", SongCreated)
stack.event_schema("SONG_RENAMED", SongRenamed)
stack.set_api_version("/v1")
stack.mount_processor("Song Command", "/songs", song_command)
stack.mount_processor("Song Query", "/songs", song_query)
stack.reactor(REACTOR_NAME, events=["SONG_CREATED"])(notify_new_song)
stack.register_projection(SongsByArtist)
stack.mount_processor("Artist Query", "/artists", artist_query)


def metrics_installed() -> bool:
    """Whether prometheus_client (the ``metrics`` extra) can be imported: then the example serves metrics.

    The quick start installs it (``.[openapi,metrics]``), but the example must start without it.
    """
    return importlib.util.find_spec("prometheus_client") is not None


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the songs app: defaults, then ``FLASK_*`` environment variables, then ``config``."""
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_mapping(DEFAULT_CONFIG, SHIMMIE_METRICS=metrics_installed())
    app.config.from_prefixed_env()
    if config:
        app.config.from_mapping(config)
    stack.init_app(app)
    return app


__all__ = ["create_app", "stack", "SongList", "SongsByArtist"]

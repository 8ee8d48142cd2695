"""Token authentication for the songs example: ``Authorization: Bearer <token>``.

Tokens come from ``SONGS_TOKENS`` (``{token: {"name": ..., "roles": [...]}}``).
The defaults are demo tokens, as ShimmieStack's example has: replace them in
any real deployment (e.g. ``FLASK_SONGS_TOKENS='{"...": {...}}'``).
"""

from __future__ import annotations

from typing import Any

from flask import current_app, request

#: Demo tokens: readers may read, editors may also write, admins may also use /admin.
DEMO_TOKENS: dict[str, dict[str, Any]] = {
    "reader-token": {"name": "Priscilla", "roles": []},
    "editor-token": {"name": "Elvis", "roles": ["editor"]},
    "admin-token": {"name": "Colonel", "roles": ["editor", "admin"]},
}


def authenticate() -> dict[str, Any] | None:
    """The identity of the request's bearer token, or ``None``."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    identity: dict[str, Any] | None = current_app.config["SONGS_TOKENS"].get(token.strip())
    return identity


def is_editor(identity: dict[str, Any]) -> bool:
    """Editors may create, rename and delete songs and erase submitters."""
    return "editor" in identity.get("roles", ())


def is_admin(identity: dict[str, Any]) -> bool:
    """Admins may use the admin API."""
    return "admin" in identity.get("roles", ())

"""The example's one ShimmieStack, shared by its blueprints and its app factory."""

from __future__ import annotations

from flask_shimmie import ShimmieStack

stack = ShimmieStack()

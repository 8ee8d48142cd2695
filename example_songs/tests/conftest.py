"""The example's own test set-up: the shimmie fixture needs an ``app`` fixture."""

from __future__ import annotations

import pytest
from flask import Flask

from example_songs import create_app
from flask_shimmie.testing import ShimmieTester


@pytest.fixture
def app() -> Flask:
    """A fresh songs app for each test, on memory stores."""
    return create_app({"TESTING": True})


@pytest.fixture(autouse=True)
def signed_in(shimmie: ShimmieTester) -> None:
    """Every request acts as the demo editor."""
    shimmie.headers["Authorization"] = "Bearer editor-token"

"""The example's own test set-up: the shimmie fixture needs an ``app`` fixture."""

from __future__ import annotations

import pytest
from flask import Flask

from example_songs import create_app


@pytest.fixture
def app() -> Flask:
    """A fresh songs app for each test, on memory stores."""
    return create_app({"TESTING": True})

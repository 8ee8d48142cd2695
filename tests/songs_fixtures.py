"""The fixtures of the example's test modules: the songs app, and a test client of it.

A test module uses them by importing them (``from tests.songs_fixtures import app as app``: the
alias marks the name as re-exported, so that linters see it used).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from example_songs import stack
from tests.helpers import songs_app


@pytest.fixture
def app() -> Iterator[Flask]:
    """``example_songs.create_app({"TESTING": True})`` with authenticated test clients; shut down after."""
    app = songs_app({"TESTING": True})
    yield app
    stack.shutdown(app)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client of :func:`app`, sending the example's demo admin token."""
    return app.test_client()

"""Fixtures shared by the feature tests: a fresh stack and app per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from flask_shimmie import Event, Model, ShimmieStack, subscribe

pytest_plugins = ["pytester"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-slow",
        action="store_true",
        default=False,
        help="also run the long soak and crash tests (marked slow); SHIMMIE_RUN_SLOW=1 does the same",
    )


class Journal(Model):
    """Records every event it receives, for assertions."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    @subscribe("*")
    def record(self, event: Event) -> None:
        self.events.append(event)


@pytest.fixture
def stack() -> ShimmieStack:
    """A new stack with the Journal model registered."""
    new = ShimmieStack()
    new.register_model(Journal)
    return new


@pytest.fixture
def make_app(stack: ShimmieStack) -> Iterator[Callable[..., Flask]]:
    """Build apps on ``stack`` with extra config; shut them all down afterwards."""
    apps: list[Flask] = []

    def make(**config: Any) -> Flask:
        app = Flask(f"test_app_{len(apps)}")
        app.config.update(TESTING=True, **config)
        stack.init_app(app)
        apps.append(app)
        return app

    yield make
    for app in apps:
        stack.shutdown(app)


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Iterator[Flask]:
    """An app on the memory store, inside an app context."""
    app = make_app()
    with app.app_context():
        yield app

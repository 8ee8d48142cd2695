"""Fixtures shared by the feature tests: a fresh stack and app per test, and the PII harness.

``stack``, ``make_app`` and ``app`` give a new stack with the :class:`Journal` model and apps on
it (the memory store unless told otherwise). ``pii_backend`` (parametrised over every backend),
``durable_pii_backend`` (SQLite and PostgreSQL), ``made_apps`` and ``make_pii_app`` are the
harness of the PII, schema, upcasting and bad-input tests (see :mod:`tests.pii_backends`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_shimmie import ShimmieStack
from flask_shimmie.follower import Follower
from tests.backends import BACKENDS, DURABLE_BACKENDS
from tests.helpers import Journal
from tests.pii_backends import AppFactory, Backend, MadeApps, fresh_backend, shut_down

pytest_plugins = ["pytester"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-slow",
        action="store_true",
        default=False,
        help="also run the long soak and crash tests (marked slow); SHIMMIE_RUN_SLOW=1 does the same",
    )


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


# -- the PII harness --------------------------------------------------------------------------------


@pytest.fixture
def made_apps(monkeypatch: pytest.MonkeyPatch) -> Iterator[MadeApps]:
    """The apps ``make_pii_app`` built; shut down before the backend's databases are dropped.

    Their background followers (which apply events written by *other* processes) are not
    started: every app here reads what it wrote itself, or what was stored before it started,
    and stopping a follower costs up to a second (it waits on the store in 1 s slices).
    """
    monkeypatch.setattr(Follower, "start", lambda self: None)
    made: MadeApps = []
    yield made
    shut_down(made)


@pytest.fixture(params=BACKENDS)
def pii_backend(request: pytest.FixtureRequest, tmp_path: Path, made_apps: MadeApps) -> Iterator[Backend]:
    """A backend with fresh, empty databases for this test."""
    yield from fresh_backend(request.param, tmp_path, made_apps)


@pytest.fixture(params=DURABLE_BACKENDS)
def durable_pii_backend(
    request: pytest.FixtureRequest, tmp_path: Path, made_apps: MadeApps
) -> Iterator[Backend]:
    """SQLite or PostgreSQL: a backend another app (a restart) can open again."""
    yield from fresh_backend(request.param, tmp_path, made_apps)


@pytest.fixture
def make_pii_app(made_apps: MadeApps) -> AppFactory:
    """``make_pii_app(stack, **config)``: a testing app with ``stack`` on it, shut down after the test."""

    def make(stack: ShimmieStack, **config: Any) -> Flask:
        app = Flask(f"pii_test_app_{len(made_apps)}")
        app.config.update(TESTING=True, **config)
        stack.init_app(app)
        made_apps.append((stack, app))
        return app

    return make

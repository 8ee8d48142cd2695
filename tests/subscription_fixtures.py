"""Set-up the subscription test modules share: a harness on a fresh store, and a runner without waits.

The fixtures are used by importing them into a test module (``from tests.subscription_fixtures
import quick as quick``: the alias marks the name as re-exported, so that linters see it used);
importing :func:`quick` makes it autouse in that module.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flask_shimmie import runner as runner_module
from flask_shimmie.follower import Follower
from tests.backends import BACKENDS, DURABLE_BACKENDS, FreshDatabases, require_backend
from tests.subscription_harness import SubsHarness


def harness_on(backend: str, tmp_path: Path) -> Iterator[SubsHarness]:
    """A :class:`SubsHarness` on a fresh store of ``backend``; its apps shut and the store dropped after."""
    require_backend(backend)
    databases = FreshDatabases(backend, tmp_path)
    harness = SubsHarness(databases.url("events"))
    try:
        yield harness
    finally:
        harness.close()
        databases.drop()


def without_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries without the production backoff, and no follower threads (tests drive the runner)."""
    monkeypatch.setattr(runner_module, "RETRY_DELAY", 0.001)
    monkeypatch.setattr(runner_module, "RETRY_DELAY_MAX", 0.004)
    monkeypatch.setattr(Follower, "start", lambda self: None)


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """:func:`without_waits`, for every test of the module that imports it."""
    without_waits(monkeypatch)


@pytest.fixture(params=BACKENDS)
def subs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SubsHarness]:
    """Apps on a fresh store of each backend."""
    yield from harness_on(request.param, tmp_path)


@pytest.fixture(params=DURABLE_BACKENDS)
def durable_subs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SubsHarness]:
    """Apps on a fresh SQLite or PostgreSQL store, which a second app (a restart) can open."""
    yield from harness_on(request.param, tmp_path)

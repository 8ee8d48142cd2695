"""Set-up the subscription test modules share: a harness on a fresh store, and a runner without waits."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flask_shimmie import runner as runner_module
from flask_shimmie.follower import Follower
from tests.backends import FreshDatabases, require_backend
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

"""The ``relay`` target: scenario 8 (a relay against the bare broker client) and 9 (SSE fan-out).

Run on the backends named beside ``relay`` (``python -m benchmarks relay sqlite``), else on SQLite
and PostgreSQL. Scenario 9 needs a store another process can open: not on ``memory``.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Sequence

from . import shimmie_side
from .backends import Stores, postgres_unavailable
from .harness import Progress, Row, Settings, skipped_row
from .relay_bench import SCENARIOS, relay_rows
from .sse_fanout import SCENARIO as SSE_SCENARIO
from .sse_fanout import sse_rows

#: Where the target runs when no backend is named beside it.
DEFAULT_BACKENDS = ("sqlite", "postgresql")


def _url(backend: str, stores: Stores, label: str) -> str:
    if backend == "sqlite":
        return shimmie_side.store_url("sqlite", sqlite_path=stores.sqlite_path(label))
    if backend == "postgresql":
        return stores.ours_postgres_url(stores.new_schema())
    return "memory://"


def run_relay_suite(
    backends: Sequence[str], stores: Stores, settings: Settings, progress: Progress
) -> list[Row]:
    """Scenarios 8n, 8r and 9 on each of ``backends``."""
    rows: list[Row] = []
    for backend in backends or DEFAULT_BACKENDS:
        if backend == "postgresql":
            reason = postgres_unavailable(stores.postgres_url)
            if reason is not None:
                rows += [
                    skipped_row(scenario, backend, reason) for scenario in (*SCENARIOS.values(), SSE_SCENARIO)
                ]
                continue
        rows += relay_rows(backend, functools.partial(_url, backend, stores), settings, progress)
        if backend == "memory":
            rows.append(skipped_row(SSE_SCENARIO, backend, "the server runs in another process"))
            continue
        with tempfile.TemporaryDirectory(prefix="shimmie-bench-sse-") as workdir:
            rows += sse_rows(backend, _url(backend, stores, "sse"), settings, progress, workdir)
    return rows

"""``python -m benchmarks metrics``: what metrics and tracing cost a single append.

Each row measures scenario 1 (one event on a new stream per call, one
subscribed model) twice in the same process, alternating: the flask_shimmie
column with the feature on, the other column with it off; the ratio is on /
off as throughput, the target ≥ 0.95× (at most 5 % slower). The cost per append
is the difference of the two medians' times per append.

Rates are appends per CPU second of the appending thread (``time.thread_time``),
measured in short on / off pairs run back to back; the ratio is the median of
the pairs' ratios. On a shared machine, other processes then blur a difference
of a few per cent far less than they blur wall-clock rates. SQLite's appends
also wait for fsync, which takes no CPU: against wall time their cost is
smaller still.

- M1: ``SHIMMIE_METRICS = True`` against off (memory, SQLite).
- M2: the same with ``PROMETHEUS_MULTIPROC_DIR`` set (SQLite; measured in a child
  process, since prometheus_client reads that variable when it is imported).
- M3: ``opentelemetry-api`` imported with no SDK configured, against not imported.
- M4 (for information): spans recorded by the SDK's ``TracerProvider`` (no exporter).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import shimmie_side
from .backends import Stores
from .harness import Operation, Progress, Row, Settings, Worker, compare_row, median, skipped_row

#: The most a feature may slow a single append down: on / off ≥ this.
MINIMUM_RATIO = 0.95

METRICS_CONFIG = {"SHIMMIE_ADMIN_URL": "/admin", "SHIMMIE_METRICS": True}

M1 = "M1 metrics on / off"
M2 = "M2 multiprocess metrics on / off"
M3 = "M3 OpenTelemetry API, no SDK / none"
M4 = "M4 spans recorded / none"


def _url(backend: str, stores: Stores, label: str) -> str:
    if backend == "sqlite":
        return shimmie_side.store_url("sqlite", sqlite_path=stores.sqlite_path(label))
    return "memory://"


def measure_pair(
    backend: str, stores: Stores, settings: Settings, on_config: dict[str, Any]
) -> dict[str, list[float]]:
    """Samples of single appends on two fresh apps: ``ours`` with ``on_config``, ``theirs`` without."""
    on = shimmie_side.make_app(_url(backend, stores, "on"), config=on_config)
    off = shimmie_side.make_app(_url(backend, stores, "off"))
    try:
        return _alternate(shimmie_side.single_appends(on), shimmie_side.single_appends(off), settings)
    finally:
        on.close()
        off.close()


def cpu_rate(worker: Worker, duration: float) -> float:
    """Repeat ``worker``'s operation for ``duration`` seconds; return operations per CPU second here."""
    with worker() as operation:
        deadline = time.perf_counter() + duration
        start = time.thread_time()
        done = 0
        while time.perf_counter() < deadline:
            done += operation()
        return done / (time.thread_time() - start)


def rounds(settings: Settings) -> int:
    """How many on / off pairs a row measures."""
    return max(4 * settings.repeats, 4)


def _alternate(on: Worker, off: Worker, settings: Settings) -> dict[str, list[float]]:
    """``rounds`` short runs of each side, alternating: samples ``ours`` (on) and ``theirs`` (off)."""
    cpu_rate(on, settings.warmup)
    cpu_rate(off, settings.warmup)
    slice_ = settings.duration / 4
    samples: dict[str, list[float]] = {"ours": [], "theirs": []}
    for index in range(rounds(settings)):
        pair = [("ours", on), ("theirs", off)]
        for name, worker in pair if index % 2 == 0 else reversed(pair):
            samples[name].append(cpu_rate(worker, slice_))
    return samples


def cost_row(scenario: str, backend: str, samples: dict[str, list[float]], notes: str) -> Row:
    """A row of on / off samples, with the cost per append in µs beside the rate."""
    row = compare_row(scenario, backend, samples, minimum_ratio=MINIMUM_RATIO, notes=notes)
    # The median of the pairs' ratios: each pair ran back to back, under the same load.
    row.ratio = median([on / off for on, off in zip(samples["ours"], samples["theirs"], strict=True)])
    row.holds = row.ratio >= MINIMUM_RATIO
    if row.ours_value and row.theirs_value:
        cost = 1e6 / row.ours_value - 1e6 / row.theirs_value
        row.ours = f"{row.ours}, {cost:+.2f} µs CPU/append"
    row.theirs = f"{row.theirs} (off)"
    return row


def run_metrics(settings: Settings, progress: Progress, stores: Stores) -> list[Row]:
    """Every row of this scenario."""
    rows: list[Row] = []
    for backend in ("memory", "sqlite"):
        progress(f"{backend}: {M1}")
        rows.append(
            cost_row(
                M1,
                backend,
                measure_pair(backend, stores, settings, METRICS_CONFIG),
                "SHIMMIE_METRICS = True: per append, a counter per event name and a histogram bucket, "
                "plain integers behind one lock (prometheus_client objects only at scrape time)",
            )
        )
    progress(f"sqlite: {M2}")
    rows.append(_multiprocess_row(settings, stores))
    rows += _tracing_rows(settings, stores, progress)
    for row in rows:
        progress(f"  {row.scenario} / {row.backend}: {row.ours} vs {row.theirs}")
    return rows


def _multiprocess_row(settings: Settings, stores: Stores) -> Row:
    with tempfile.TemporaryDirectory(prefix="shimmie-bench-prom-") as directory:
        root = str(Path(__file__).resolve().parent.parent)
        path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
        env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=directory, PYTHONPATH=path)
        args = [str(value) for value in (stores.tmpdir, settings.duration, settings.warmup, settings.repeats)]
        child = subprocess.run(
            [sys.executable, "-m", "benchmarks.metrics_cost", *args],
            env=env,
            cwd=root,
            capture_output=True,
            text=True,
            timeout=600,
        )
    if child.returncode != 0:
        return skipped_row(M2, "sqlite", f"the child process failed: {child.stderr.strip()[-300:]}")
    samples: dict[str, list[float]] = json.loads(child.stdout.strip().splitlines()[-1])
    return cost_row(
        M2,
        "sqlite",
        samples,
        "PROMETHEUS_MULTIPROC_DIR set: counted as in M1, and added to prometheus_client's per-process files "
        "a few times a second (memory:// is left out: each worker process would have a store of its own)",
    )


@contextmanager
def _without_opentelemetry() -> Iterator[None]:
    """As if opentelemetry-api were not installed: flask_shimmie.tracing only looks in sys.modules."""
    from flask_shimmie import tracing

    saved = sys.modules.pop(tracing.API_MODULE, None)
    try:
        yield
    finally:
        if saved is not None:
            sys.modules[tracing.API_MODULE] = saved


def _tracing_rows(settings: Settings, stores: Stores, progress: Progress) -> list[Row]:
    try:
        import opentelemetry.trace  # noqa: F401
    except ImportError:
        return [skipped_row(M3, "memory", "opentelemetry-api is not installed")]
    from flask_shimmie import tracing

    progress(f"memory: {M3}")
    samples = _switched(settings, stores, _without_opentelemetry)
    rows = [
        cost_row(
            M3,
            "memory",
            samples,
            "ours: opentelemetry.trace imported, no tracer provider set; theirs: not imported (as without "
            "opentelemetry-api); the hooks find no provider and record nothing",
        )
    ]
    try:
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:
        return rows
    progress(f"memory: {M4}")
    tracing.set_tracer(TracerProvider().get_tracer(tracing.SCOPE))
    try:
        samples = _switched(settings, stores, lambda: _no_tracer(tracing))
    finally:
        tracing.set_tracer(None)
    row = cost_row(
        M4,
        "memory",
        samples,
        "for information: the SDK's TracerProvider with no span processor records shimmie.record, "
        "shimmie.append and shimmie.apply for every append; theirs: no OpenTelemetry",
    )
    row.target, row.holds = "- (info)", None
    return rows + [row]


@contextmanager
def _no_tracer(tracing: Any) -> Iterator[None]:
    saved = tracing.active_tracer()
    tracing.set_tracer(None)
    try:
        with _without_opentelemetry():
            yield
    finally:
        tracing.set_tracer(saved)


def _switched(settings: Settings, stores: Stores, off: Any) -> dict[str, list[float]]:
    """On / off samples of one app, ``off()`` being the context in which the feature is off."""
    ours = shimmie_side.make_app("memory://")
    try:
        worker = shimmie_side.single_appends(ours)

        @contextmanager
        def without() -> Iterator[Operation]:
            with off(), worker() as operation:
                yield operation

        return _alternate(worker, without, settings)
    finally:
        ours.close()


def _child(argv: list[str]) -> int:
    """M2's measurement, in a process started with ``PROMETHEUS_MULTIPROC_DIR``: prints the samples."""
    tmpdir, duration, warmup, repeats = argv
    settings = Settings(duration=float(duration), warmup=float(warmup), repeats=int(repeats))
    stores = Stores(tmpdir=tmpdir)
    samples = measure_pair("sqlite", stores, settings, METRICS_CONFIG)
    print(json.dumps(samples))
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))

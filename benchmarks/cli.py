"""The command line: ``python -m benchmarks [memory|sqlite|postgres|http|projection|metrics|relay|all] ...``.

Every figure is measured in the same run, on the same machine, for
flask_shimmie and for ``eventsourcing`` (or, for HTTP, a bare Flask app), with
the same durability; see :mod:`benchmarks.backends`. Each throughput figure is
the median of ``--repeats`` timed runs after a warm-up, the two sides
alternating. The ratio is ours / theirs as throughput: above 1 we are faster.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from .harness import Progress, Row, Settings, format_table, load_average, machine_lines
from .suite import REPLAY_TARGET_RATIO, TARGET_RATIOS

TARGETS = ("memory", "sqlite", "postgres", "http", "projection", "metrics", "relay", "all")
#: The in-process backends, in the order they run, by target name.
BACKEND_TARGETS = (("memory", "memory"), ("sqlite", "sqlite"), ("postgres", "postgresql"))

#: ``--quick``: a smoke run that finishes in seconds per backend.
QUICK = Settings(
    duration=0.3,
    warmup=0.1,
    repeats=1,
    events=2000,
    replay_repeats=1,
    http_duration=1.0,
    http_repeats=1,
    projection_events=2000,
    projection_repeats=1,
    reactor_events=50,
    reactor_spacing=0.002,
    relay_events=1000,
    relay_rabbitmq_events=200,
    relay_repeats=1,
    sse_clients=(1, 10),
    sse_events=200,
    sse_rate=500,
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=(
            "flask_shimmie against eventsourcing (and, over HTTP, bare Flask and ShimmieStack), side by side."
        ),
    )
    parser.add_argument(
        "targets",
        nargs="*",
        choices=TARGETS,
        default=["all"],
        metavar="{memory,sqlite,postgres,http,projection,metrics,relay,all}",
        help=(
            "what to run (default: all); 'projection' runs only scenarios 7 and 7r, on the backends "
            "named beside it, else on all three; 'metrics': what metrics and tracing cost an append, "
            "not part of all; 'relay': scenarios 8 (relays to NATS JetStream and RabbitMQ against "
            "their bare clients) and 9 (SSE fan-out), on the backends named beside it, else on SQLite "
            "and PostgreSQL, not part of all"
        ),
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run (seconds, not minutes)")
    parser.add_argument(
        "--events",
        type=int,
        default=None,
        help="events stored and replayed in scenario 4 (default 1,000,000)",
    )
    parser.add_argument(
        "--projection-events",
        type=int,
        default=None,
        help="events stored and projected in scenario 7 (default 100,000)",
    )
    parser.add_argument(
        "--relay-events",
        type=int,
        default=None,
        help="events relayed to JetStream in scenario 8n (default 20,000; RabbitMQ's 8r: a tenth)",
    )
    parser.add_argument("--duration", type=float, default=None, help="seconds per timed run (default 2)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per side; the median counts")
    parser.add_argument("--threads", type=int, default=None, help="writer threads of scenario 2 (default 8)")
    parser.add_argument(
        "--loadgen", choices=("auto", "wrk", "python"), default="auto", help="HTTP load generator"
    )
    parser.add_argument("--postgres-url", default=None, help="PostgreSQL server (default: the tests' one)")
    parser.add_argument("--results", metavar="FILE", default=None, help="also write the report as Markdown")
    parser.add_argument("--quiet", action="store_true", help="print the table only")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    """The :class:`Settings` the options ask for."""
    settings = QUICK if args.quick else Settings()
    changes = {
        name: value
        for name, value in (
            ("events", args.events),
            ("projection_events", args.projection_events),
            ("relay_events", args.relay_events),
            ("duration", args.duration),
            ("repeats", args.repeats),
            ("threads", args.threads),
        )
        if value is not None
    }
    if "relay_events" in changes:
        changes["relay_rabbitmq_events"] = max(1, changes["relay_events"] // 10)
    if "repeats" in changes:
        for name in ("replay_repeats", "http_repeats", "projection_repeats", "relay_repeats"):
            changes[name] = changes["repeats"]
    return replace(settings, **changes)


def backends_of(targets: Sequence[str]) -> tuple[list[str], bool]:
    """The in-process backends to run, and whether to run HTTP.

    ``projection`` alone stands for every in-process backend (scenarios 7 and 7r on each).
    """
    wanted = set(targets)
    if "all" in wanted:
        return [backend for _, backend in BACKEND_TARGETS], True
    chosen = [backend for name, backend in BACKEND_TARGETS if name in wanted]
    if "projection" in wanted and not chosen:
        chosen = [backend for _, backend in BACKEND_TARGETS]
    return chosen, "http" in wanted


def relay_only(targets: Sequence[str]) -> bool:
    """Whether the run is the ``relay`` target alone (on the backends named beside it)."""
    return "relay" in targets and "all" not in targets


def projection_only(targets: Sequence[str]) -> bool:
    """Whether the in-process backends run scenarios 7 and 7r only (``projection`` without ``all``)."""
    return "projection" in targets and "all" not in targets


def run(
    backends: Sequence[str],
    settings: Settings,
    *,
    http: bool = False,
    metrics: bool = False,
    loadgen: str = "auto",
    postgres_url: str | None = None,
    progress: Progress | None = None,
    subscriptions_only: bool = False,
    relay: bool = False,
) -> list[Row]:
    """Run the scenarios of ``backends`` (and HTTP); return the table's rows.

    Each backend runs scenarios 1-4 (and 6), then 7 and 7r; with
    ``subscriptions_only``, 7 and 7r alone; with ``relay``, 8 and 9 alone
    (on SQLite and PostgreSQL when ``backends`` is empty).
    """
    from .backends import Stores

    progress = progress or Progress(enabled=False)
    stores = Stores() if postgres_url is None else Stores(postgres_url=postgres_url)
    rows: list[Row] = []
    try:
        if relay:
            from .relay_suite import run_relay_suite

            return run_relay_suite(backends, stores, settings, progress)
        if backends:
            from .subscription_suite import run_subscription_scenarios
            from .suite import run_backend

            for backend in backends:
                if not subscriptions_only:
                    rows += run_backend(backend, stores, settings, progress)
                rows += run_subscription_scenarios(backend, stores, settings, progress)
        if metrics:
            from .metrics_cost import run_metrics

            rows += run_metrics(settings, progress, stores)
        if http:
            from .httpbench import run_http

            with tempfile.TemporaryDirectory(prefix="shimmie-bench-http-") as workdir:
                rows += run_http(settings, progress, loadgen, workdir, stores)
    finally:
        stores.cleanup()
    return rows


def report(rows: Sequence[Row], command: str, settings: Settings, run_lines: Sequence[str] = ()) -> str:
    """The Markdown report: command, machine, table, method."""
    lines = [
        "# flask_shimmie benchmarks",
        "",
        f"Command: `{command}`",
        "",
        "Machine:",
        "",
        *machine_lines(),
        *run_lines,
        "",
        format_table(rows),
        "",
        "Method:",
        "",
        f"- Throughput rows (1-3): median of {settings.repeats} timed runs of {settings.duration:g} s per "
        f"side after {settings.warmup:g} s of warm-up each, the two sides alternating; ± is the largest "
        "deviation of a run from the median. Replay: median of "
        f"{settings.replay_repeats} runs per side; HTTP: median of {settings.http_repeats} runs of "
        f"{settings.http_duration:g} s per server. Projection catch-up (7): median of "
        f"{settings.projection_repeats} runs of ours and {settings.projection_theirs_repeats} of "
        f"eventsourcing's, {settings.projection_events:,} events each.",
        "- Ratio = flask_shimmie / the other side, as throughput: above 1 flask_shimmie is faster. "
        f"{store_targets()}; "
        "HTTP (5) at ≥ 0.8× ShimmieStack's POST and ≥ 0.6× its GET in one process each, ≥ 1.5× / ≥ 1× "
        "on the whole machine on PostgreSQL, and ≥ 0.7× / ≥ 0.85× the bare-Flask floor; projection "
        "catch-up at ≥ 2× eventsourcing.",
        "- flask_shimmie: one stack with one subscribed model (it counts and sums), so every append is "
        "also applied to the model before the call returns; eventsourcing: an Application and a "
        "one-event Aggregate, no subscribers.",
        "- Durability: SQLite in WAL with synchronous=FULL on both sides (checked on each side's "
        "connections); PostgreSQL with the server's synchronous_commit=on on both sides.",
        "- Fresh store per scenario and side: a temp SQLite file, a new PostgreSQL schema (dropped at "
        "the end).",
    ]
    return "\n".join(lines) + "\n"


def store_targets() -> str:
    """What scenarios 1-4 aim at, from :data:`~benchmarks.suite.TARGET_RATIOS` (one sentence)."""

    def aims(kind: str) -> str:
        return ", ".join(
            f"{scenario} ≥ {ratio:g}×" for (group, scenario), ratio in TARGET_RATIOS.items() if group == kind
        )

    return (
        f"Scenarios 1-3 aim, against eventsourcing, at {aims('memory')} in memory and {aims('durable')} "
        f"on SQLite and PostgreSQL; replay at ≥ {REPLAY_TARGET_RATIO:g}× and 1,000,000 events in ≤ 3 s"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the suite from the command line; print the table; return the exit status."""
    args = parse_args(argv)
    settings = settings_from(args)
    backends, http = backends_of(args.targets)
    relay = relay_only(args.targets)
    try:
        import eventsourcing  # noqa: F401
    except ImportError:
        if backends and not relay:
            print('eventsourcing is not installed: pip install -e ".[bench]"', file=sys.stderr)
            return 2
    progress = Progress(enabled=not args.quiet)
    load_before = load_average()
    started = time.perf_counter()
    rows = run(
        backends,
        settings,
        http=http,
        metrics="metrics" in args.targets,
        loadgen=args.loadgen,
        postgres_url=args.postgres_url,
        progress=progress,
        subscriptions_only=projection_only(args.targets),
        relay=relay,
    )
    command = "python -m benchmarks " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    run_lines = [
        f"- load average (1/5/15 min) before: {load_before}, after: {load_average()}",
        f"- wall time of the run: {time.perf_counter() - started:.0f} s",
    ]
    text = report(rows, command.strip(), settings, run_lines)
    print()
    print(text)
    if args.results:
        path = Path(args.results)
        kept = kept_sections(path.read_text(encoding="utf-8")) if path.exists() else ""
        path.write_text(text + kept, encoding="utf-8")
    return 0


#: The heading from which a results file is written by hand and kept across runs.
KEPT_HEADING = "## Measurements behind the design"


def kept_sections(previous: str) -> str:
    """What a run keeps of the previous results file: everything from :data:`KEPT_HEADING` on."""
    at = previous.find(KEPT_HEADING)
    return "" if at < 0 else "\n" + previous[at:]

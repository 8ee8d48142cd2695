"""The benchmark suite runs: its smallest mode, in-process, on the memory store (and scenario 7 on
SQLite and PostgreSQL too, at a few hundred events; the relay target's scenarios 8 and 9 on SQLite,
against the real brokers), and scenario 5 over HTTP with every server it compares (runs of half a
second).

No timing thresholds: the machine may be slow or busy. Only the table's shape
and that every ratio is a positive number are checked.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from tests.backends import DURABLE_BACKENDS, postgres_base_url, require_backend
from tests.brokers import require_nats, require_rabbitmq

pytest.importorskip("eventsourcing", reason='eventsourcing is not installed (pip install -e ".[bench]")')

from benchmarks.backends import Stores  # noqa: E402
from benchmarks.cli import (  # noqa: E402
    KEPT_HEADING,
    QUICK,
    backends_of,
    main,
    parse_args,
    projection_only,
    relay_only,
    run,
    settings_from,
)
from benchmarks.harness import Progress, Row, format_table  # noqa: E402
from benchmarks.httpbench import (  # noqa: E402
    FLOOR_GET_SCENARIO,
    FLOOR_POST_SCENARIO,
    SHIMMIESTACK_ENV,
    run_http,
    scenario_name,
    shimmiestack_postgres_url,
    shimmiestack_unavailable,
)
from benchmarks.relay_bench import SCENARIOS as RELAY_SCENARIOS  # noqa: E402
from benchmarks.sse_fanout import SCENARIO as SSE_SCENARIO  # noqa: E402
from benchmarks.subscription_suite import (  # noqa: E402
    LATENCY_SCENARIO,
    PROJECTION_SCENARIO,
    interleave,
    percentile,
    run_subscription_scenarios,
)
from benchmarks.suite import BULK_SCENARIO, SCENARIOS  # noqa: E402

#: Scenarios 7 and 7r at their smallest.
SMALL_SUBSCRIPTIONS = {"projection_events": 200, "reactor_events": 10, "reactor_spacing": 0.001}


def test_memory_smoke_run_has_every_row_with_a_positive_ratio() -> None:
    settings = replace(QUICK, duration=0.1, warmup=0.02, events=300, threads=4, **SMALL_SUBSCRIPTIONS)

    rows = run(["memory"], settings)

    expected = [scenario.replace("8 threads", "4 threads") for scenario in SCENARIOS]
    expected.insert(3, BULK_SCENARIO)
    expected += [PROJECTION_SCENARIO, LATENCY_SCENARIO]
    assert [row.scenario for row in rows] == expected
    assert {row.backend for row in rows} == {"memory"}
    assert rows[-1].ratio is None and rows[-1].holds is None  # 7r: ours only
    for row in rows[:-1]:
        assert isinstance(row.ratio, float) and row.ratio > 0, row
        assert row.ours_value is not None and row.ours_value > 0, row
        assert row.theirs_value is not None and row.theirs_value > 0, row
        assert row.holds in ((None,) if row.scenario == BULK_SCENARIO else (True, False)), row
    table = format_table(rows)
    for scenario in expected:
        assert scenario in table
    assert "eventsourcing" in table.splitlines()[0]


def test_command_line_targets_and_options() -> None:
    args = parse_args(["memory", "postgres", "--quick", "--events", "500"])

    assert backends_of(args.targets) == (["memory", "postgresql"], False)
    assert backends_of(["all"]) == (["memory", "sqlite", "postgresql"], True)
    assert backends_of(["http"]) == ([], True)
    settings = settings_from(args)
    assert settings.events == 500 and settings.duration == QUICK.duration


def test_main_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["memory", "--quick", "--events", "200", "--duration", "0.05", "--threads", "2", "--quiet"])

    out = capsys.readouterr().out
    assert status == 0
    assert "| 4 replay" in out and "| memory" in out
    assert "Command: `python -m benchmarks memory --quick" in out


def test_a_results_file_keeps_its_hand_written_section(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text(
        f"# old table\n\n| old | row |\n\n{KEPT_HEADING}\n\n| choice | figure |\n", encoding="utf-8"
    )

    status = main(
        ["memory", "--quick", "--events", "200", "--duration", "0.05", "--threads", "2", "--quiet"]
        + ["--results", str(results)]
    )

    text = results.read_text(encoding="utf-8")
    assert status == 0
    assert "| old | row |" not in text
    assert "| 4 replay" in text
    assert text.count(KEPT_HEADING) == 1 and text.endswith("| choice | figure |\n")


def check_projection_row(row: Row, ours_runs: int, theirs_runs: int) -> None:
    """Scenario 7's row: two throughputs with their seconds, a ratio against the 2× target."""
    assert row.scenario == PROJECTION_SCENARIO
    assert row.ratio is not None and row.ratio > 0, row
    assert row.target == "≥ 2×" and row.holds == (row.ratio >= 2.0)
    for figure in (row.ours, row.theirs):
        assert re.fullmatch(r"[\d.]+[kM]? ev/s( ±\d+%)?, \d+\.\d\d s", figure), figure
    assert len(row.samples["ours"]) == ours_runs and len(row.samples["theirs"]) == theirs_runs
    assert "stack.run_subscriptions()" in row.notes and "process_event" in row.notes
    assert "one transaction per event" in row.notes


def check_latency_row(row: Row, events: int) -> None:
    """Scenario 7r's row: ours only, p50 and p99 in milliseconds, for information."""
    assert row.scenario == LATENCY_SCENARIO
    assert re.fullmatch(r"p50 -?\d+\.\d\d ms, p99 -?\d+\.\d\d ms", row.ours), row.ours
    assert (row.theirs, row.ratio, row.target, row.holds) == ("-", None, "- (info)", None)
    assert len(row.samples["ours"]) == events
    assert "background runner" in row.notes and "perf_counter" in row.notes


def test_projection_scenarios_alone_on_memory() -> None:
    settings = replace(QUICK, **SMALL_SUBSCRIPTIONS)

    rows = run(["memory"], settings, subscriptions_only=True)

    assert [(row.scenario, row.backend) for row in rows] == [
        (PROJECTION_SCENARIO, "memory"),
        (LATENCY_SCENARIO, "memory"),
    ]
    check_projection_row(rows[0], QUICK.projection_repeats, QUICK.projection_theirs_repeats)
    check_latency_row(rows[1], 10)
    assert "| 7 projection catch-up | memory" in format_table(rows)


@pytest.mark.parametrize("backend", DURABLE_BACKENDS)
def test_projection_scenarios_on_a_durable_store(backend: str, tmp_path: Path) -> None:
    require_backend(backend)
    # Two runs a side: each needs a projection (and a view) that starts from the first event.
    settings = replace(QUICK, projection_repeats=2, projection_theirs_repeats=2, **SMALL_SUBSCRIPTIONS)
    stores = Stores(postgres_url=postgres_base_url(), tmpdir=str(tmp_path))
    try:
        rows = run_subscription_scenarios(backend, stores, settings, Progress(enabled=False))
    finally:
        stores.cleanup()

    check_projection_row(rows[0], 2, 2)
    check_latency_row(rows[1], 10)
    assert {row.backend for row in rows} == {backend}


def test_the_projection_target_runs_scenario_7_only(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["projection", "memory", "--quick", "--projection-events", "150", "--quiet"])

    out = capsys.readouterr().out
    assert status == 0
    assert "| 7 projection catch-up | memory" in out and "| 7r reactor latency    | memory" in out
    assert "| 1 single append" not in out and "| 4 replay" not in out
    assert "150 stored events" in out


def test_projection_target_and_options() -> None:
    args = parse_args(["projection", "--projection-events", "5000", "--repeats", "4"])

    assert backends_of(args.targets) == (["memory", "sqlite", "postgresql"], False)
    assert projection_only(args.targets)
    assert backends_of(["projection", "sqlite"]) == (["sqlite"], False)
    assert not projection_only(["sqlite"]) and not projection_only(["projection", "all"])
    settings = settings_from(args)
    assert settings.projection_events == 5000 and settings.projection_repeats == 4
    assert settings.projection_theirs_repeats == 1


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]

    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (50.0, 99.0, 100.0)
    assert percentile([3.0], 99) == 3.0


def test_interleave_takes_turns_and_runs_each_side_its_number_of_times() -> None:
    calls: list[str] = []

    def side(name: str) -> Callable[[], float]:
        def measure() -> float:
            calls.append(name)
            return float(len(calls))

        return measure

    samples = interleave([("ours", 3, side("ours")), ("theirs", 1, side("theirs"))])

    assert calls == ["ours", "theirs", "ours", "ours"]
    assert samples == {"ours": [1.0, 3.0, 4.0], "theirs": [2.0]}


@pytest.mark.nats
@pytest.mark.rabbitmq
def test_relay_target_smoke_run_on_sqlite() -> None:
    require_nats()
    require_rabbitmq()
    settings = replace(
        QUICK, relay_events=120, relay_rabbitmq_events=20, sse_clients=(1, 3), sse_events=40, sse_rate=400
    )

    rows = run(["sqlite"], settings, relay=True)

    assert [(row.scenario, row.backend) for row in rows] == [
        (RELAY_SCENARIOS["nats"], "sqlite"),
        (RELAY_SCENARIOS["rabbitmq"], "sqlite"),
        (f"{SSE_SCENARIO}, 1 client", "sqlite"),
        (f"{SSE_SCENARIO}, 3 clients", "sqlite"),
    ]
    for row in rows[:2]:  # against the bare client, same messages, same confirms
        assert isinstance(row.ratio, float) and row.ratio > 0, row
        assert row.target == "≥ 0.5×" and row.theirs.split()[1] == "msg/s"
        assert "bare" in row.notes and "stack.run_subscriptions()" in row.notes
    assert "120 stored events" in rows[0].notes and "20 stored events" in rows[1].notes
    for row, clients in zip(rows[2:], (1, 3), strict=True):
        assert re.fullmatch(r"[\d.]+[kM]? ev/s each, p50 -?\d+\.\d ms, p99 -?\d+\.\d ms", row.ours), row.ours
        assert (row.ratio, row.target, row.holds) == (None, "- (info)", None)
        assert len(row.samples["ours"]) == 40 * clients  # every client got every event
        assert row.ours_value is not None and row.ours_value > 0


def test_relay_target_and_options() -> None:
    args = parse_args(["relay", "postgres", "--relay-events", "500", "--repeats", "2"])

    assert relay_only(args.targets) and not relay_only(["relay", "all"]) and not relay_only(["sqlite"])
    assert backends_of(args.targets) == (["postgresql"], False)
    assert backends_of(["relay"]) == ([], False)  # the suite picks SQLite and PostgreSQL then
    settings = settings_from(args)
    assert (settings.relay_events, settings.relay_rabbitmq_events, settings.relay_repeats) == (500, 50, 2)


#: Scenario 5's rows, in order: memory (one process each), SQLite and PostgreSQL (the recommended workers).
HTTP_ROWS = [
    (scenario_name("POST", "ShimmieStack"), "memory"),
    (scenario_name("POST", "bare Flask"), "memory"),
    (FLOOR_POST_SCENARIO, "memory"),
    (scenario_name("GET", "ShimmieStack"), "memory"),
    (scenario_name("GET", "bare Flask"), "memory"),
    (FLOOR_GET_SCENARIO, "memory"),
    (scenario_name("POST", "bare Flask + SQLite"), "sqlite"),
    (scenario_name("GET", "bare Flask"), "sqlite"),
    (scenario_name("POST", "ShimmieStack"), "postgresql"),
    (scenario_name("GET", "ShimmieStack"), "postgresql"),
]


def test_the_http_scenario_has_every_row_side_by_side(tmp_path: Path) -> None:
    pytest.importorskip("granian", reason='granian is not installed (pip install -e ".[serve]")')
    require_backend("postgresql")
    settings = replace(QUICK, http_duration=0.5, warmup=0.02, http_repeats=1)
    stores = Stores(postgres_url=postgres_base_url(), tmpdir=str(tmp_path / "stores"))
    workdir = tmp_path / "http"
    workdir.mkdir()
    try:
        rows = run_http(settings, Progress(enabled=False), "python", str(workdir), stores)
    finally:
        stores.cleanup()

    assert [(row.scenario, row.backend) for row in rows] == HTTP_ROWS
    reason = shimmiestack_unavailable()
    for row in rows:
        if reason is not None and "ShimmieStack" in row.scenario:
            assert row.ratio is None and row.notes == f"skipped: {reason}", row
            continue
        assert "errors" not in row.notes, row  # every request of every server answered 2xx
        assert isinstance(row.ratio, float) and row.ratio > 0, row
        assert row.ours_value is not None and row.theirs_value is not None and row.theirs_value > 0, row
        if row.scenario.startswith("5f"):
            assert (row.target, row.holds) == ("- (info)", None) and "ours is at" in row.notes
        else:
            assert row.holds == (row.ratio >= float(row.target.strip("≥ ×"))), row
    assert "| 5 HTTP GET /v1/songs/<id> vs bare Flask" in format_table(rows)


def test_shimmiestack_rows_say_why_they_are_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SHIMMIESTACK_ENV, str(tmp_path / "nowhere"))
    assert shimmiestack_unavailable() == (
        f"no built ShimmieStack songs server in {tmp_path / 'nowhere'} (set {SHIMMIESTACK_ENV})"
    )
    monkeypatch.setenv("PATH", str(tmp_path))  # no node there
    assert shimmiestack_unavailable() == "node is not on PATH (Debian: apt-get install nodejs npm)"


def test_node_postgres_gets_its_schema_through_the_url() -> None:
    url = shimmiestack_postgres_url("postgresql://postgres@127.0.0.1:5432/test", "bench_1")
    assert url == "postgresql://postgres@127.0.0.1:5432/test?options=-c%20search_path%3Dbench_1"
    assert shimmiestack_postgres_url("postgresql://h/db?sslmode=disable", "s").endswith(
        "&options=-c%20search_path%3Ds"
    )

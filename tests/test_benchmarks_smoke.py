"""The benchmark suite runs: its smallest mode, in-process, on the memory store only.

No timing thresholds: the machine may be slow or busy. Only the table's shape
and that every ratio is a positive number are checked.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("eventsourcing", reason='eventsourcing is not installed (pip install -e ".[bench]")')

from benchmarks.cli import KEPT_HEADING, QUICK, backends_of, main, parse_args, run, settings_from  # noqa: E402
from benchmarks.harness import format_table  # noqa: E402
from benchmarks.suite import BULK_SCENARIO, SCENARIOS  # noqa: E402


def test_memory_smoke_run_has_every_row_with_a_positive_ratio() -> None:
    settings = replace(QUICK, duration=0.1, warmup=0.02, events=300, threads=4)

    rows = run(["memory"], settings)

    expected = [scenario.replace("8 threads", "4 threads") for scenario in SCENARIOS]
    expected.insert(3, BULK_SCENARIO)
    assert [row.scenario for row in rows] == expected
    assert {row.backend for row in rows} == {"memory"}
    for row in rows:
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

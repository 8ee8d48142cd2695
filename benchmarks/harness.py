"""Timing, repetition and the results table shared by every scenario.

A *side* is one library's implementation of a scenario. Throughput scenarios
hand the harness a :data:`Worker`: a context manager, entered once per thread,
that yields the operation to repeat. The operation returns how many events (or
requests) it completed, so a batch of 100 counts 100.
"""

from __future__ import annotations

import os
import platform
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timezone

#: One repetition of an operation; returns how many events it wrote or read.
Operation = Callable[[], int]
#: Entered once per thread (e.g. to push an app context); yields the operation.
Worker = Callable[[], AbstractContextManager[Operation]]


@dataclass(frozen=True)
class Settings:
    """How long and how often to measure."""

    #: Seconds one timed repetition of a throughput scenario runs.
    duration: float = 1.5
    #: Seconds of untimed warm-up before the repetitions.
    warmup: float = 0.5
    #: Timed repetitions per side; the table shows the median.
    repeats: int = 5
    #: Events stored before the replay scenario.
    events: int = 1_000_000
    #: Repetitions of the replay scenario (each reads every stored event).
    replay_repeats: int = 3
    #: Threads of the concurrent-appends scenario.
    threads: int = 8
    #: Events per batch in the batch scenario.
    batch_size: int = 100
    #: Seconds one HTTP load run lasts.
    http_duration: float = 4.0
    #: Timed HTTP runs per server. Now and then one gunicorn worker accepts all
    #: of a run's connections and the run measures a single worker (about a
    #: third of the rate): five runs keep such a run from being the median.
    http_repeats: int = 5
    #: Concurrent connections of the HTTP load generator.
    http_connections: int = 8
    #: Events stored before the projection catch-up scenario (7).
    projection_events: int = 100_000
    #: Timed catch-ups of ours in scenario 7; the table shows the median.
    projection_repeats: int = 3
    #: Timed catch-ups of eventsourcing's: one commit per event makes one run last a minute or more.
    projection_theirs_repeats: int = 1
    #: Events recorded in the reactor latency scenario (7r).
    reactor_events: int = 500
    #: Seconds between two of those events.
    reactor_spacing: float = 0.005
    #: Events stored and relayed to JetStream in scenario 8n.
    relay_events: int = 20_000
    #: Events stored and relayed to RabbitMQ in scenario 8r (one confirm per message: slower).
    relay_rabbitmq_events: int = 2_000
    #: Timed runs per side in scenario 8.
    relay_repeats: int = 3
    #: The numbers of SSE clients of scenario 9, one row each.
    sse_clients: tuple[int, ...] = (1, 10, 50)
    #: Events written while the clients of scenario 9 read.
    sse_events: int = 3_000
    #: Events per second the writer of scenario 9 aims at.
    sse_rate: int = 1_000


@dataclass
class Row:
    """One line of the results table."""

    scenario: str
    backend: str
    ours: str
    theirs: str
    #: ours / theirs as throughput: > 1 means flask_shimmie is faster.
    ratio: float | None
    target: str
    #: Whether the target holds; ``None`` when the row has no figure.
    holds: bool | None
    notes: str = ""
    #: The raw figures (events or requests per second) behind ``ours`` and ``theirs``.
    ours_value: float | None = None
    theirs_value: float | None = None
    #: Every timed repetition, for the curious.
    samples: dict[str, list[float]] = field(default_factory=dict)


def run_for(worker: Worker, duration: float, threads: int = 1) -> float:
    """Repeat ``worker``'s operation in ``threads`` threads for ``duration`` seconds; return ops/s.

    Every thread enters its worker first; the clock starts when all are ready
    and stops when the last one finished its last operation.
    """
    if threads == 1:
        with worker() as operation:
            start = time.perf_counter()
            deadline = start + duration
            done = 0
            while time.perf_counter() < deadline:
                done += operation()
            return done / (time.perf_counter() - start)

    clock: dict[str, float] = {}

    def start_clock() -> None:
        clock["start"] = time.perf_counter()
        clock["deadline"] = clock["start"] + duration

    ready = threading.Barrier(threads, action=start_clock)
    counts = [0] * threads
    ends = [0.0] * threads
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            with worker() as operation:
                ready.wait()
                deadline = clock["deadline"]
                done = 0
                while time.perf_counter() < deadline:
                    done += operation()
                counts[index] = done
                ends[index] = time.perf_counter()
        except threading.BrokenBarrierError:
            pass
        except BaseException as error:  # re-raised below, in the caller's thread
            errors.append(error)
            ready.abort()

    pool = [threading.Thread(target=run, args=(i,), name=f"bench-{i}") for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    if errors:
        raise errors[0]
    return sum(counts) / (max(ends) - clock["start"])


def alternate(
    sides: Sequence[tuple[str, Callable[[], float]]], repeats: int, warmup: Callable[[], None] | None = None
) -> dict[str, list[float]]:
    """Run each side ``repeats`` times, alternating which goes first; return the samples by name.

    Alternating spreads the machine's slow moments over both sides rather
    than over whichever happened to run second.
    """
    if warmup is not None:
        warmup()
    samples: dict[str, list[float]] = {name: [] for name, _ in sides}
    for index in range(repeats):
        order = sides if index % 2 == 0 else list(reversed(sides))
        for name, measure in order:
            samples[name].append(measure())
    return samples


def median(values: Sequence[float]) -> float:
    """The median of ``values``."""
    return float(statistics.median(values))


def rate(value: float, unit: str = "ev/s") -> str:
    """``value`` per second, shortened: ``12.3k ev/s``."""
    if value >= 1_000_000:
        text = f"{value / 1_000_000:.2f}M"
    elif value >= 10_000:
        text = f"{value / 1000:.0f}k"
    elif value >= 1000:
        text = f"{value / 1000:.1f}k"
    elif value >= 100:
        text = f"{value:.0f}"
    else:
        text = f"{value:.1f}"
    return f"{text} {unit}"


def spread(values: Sequence[float]) -> str:
    """The samples' range relative to their median, e.g. ``±4%``."""
    if len(values) < 2:
        return ""
    mid = median(values)
    if mid <= 0:
        return ""
    return f"±{max(abs(v - mid) for v in values) / mid * 100:.0f}%"


def compare_row(
    scenario: str,
    backend: str,
    samples: dict[str, list[float]],
    *,
    ours: str = "ours",
    theirs: str = "theirs",
    unit: str = "ev/s",
    minimum_ratio: float = 1.0,
    notes: str = "",
) -> Row:
    """A row comparing two sides' throughput samples by their medians."""
    ours_value = median(samples[ours])
    theirs_value = median(samples[theirs])
    ratio = ours_value / theirs_value if theirs_value > 0 else None
    return Row(
        scenario=scenario,
        backend=backend,
        ours=f"{rate(ours_value, unit)} {spread(samples[ours])}".strip(),
        theirs=f"{rate(theirs_value, unit)} {spread(samples[theirs])}".strip(),
        ratio=ratio,
        target=f"≥ {minimum_ratio:g}×",
        holds=None if ratio is None else ratio >= minimum_ratio,
        notes=notes,
        ours_value=ours_value,
        theirs_value=theirs_value,
        samples=samples,
    )


def skipped_row(scenario: str, backend: str, reason: str) -> Row:
    """A row for a scenario that could not run here."""
    return Row(scenario, backend, "-", "-", None, "-", None, f"skipped: {reason}")


def ours_only_row(
    scenario: str, backend: str, ours: str, notes: str, samples: list[float], ours_value: float | None = None
) -> Row:
    """A row of figures of ours alone: nothing to compare with, no target (``- (info)``)."""
    return Row(
        scenario=scenario,
        backend=backend,
        ours=ours,
        theirs="-",
        ratio=None,
        target="- (info)",
        holds=None,
        notes=notes,
        ours_value=ours_value,
        theirs_value=None,
        samples={"ours": samples},
    )


HEADERS = (
    "scenario",
    "backend",
    "flask_shimmie",
    "eventsourcing / bare Flask / ShimmieStack",
    "ratio",
    "target",
    "holds",
)


def cells(row: Row) -> tuple[str, ...]:
    """The printed cells of ``row``, in :data:`HEADERS` order."""
    ratio = "-" if row.ratio is None else f"{row.ratio:.2f}×"
    holds = "-" if row.holds is None else ("yes" if row.holds else "NO")
    return (row.scenario, row.backend, row.ours, row.theirs, ratio, row.target, holds)


def format_table(rows: Sequence[Row]) -> str:
    """A Markdown pipe table of ``rows``, aligned for a terminal, followed by the notes."""
    body = [HEADERS] + [cells(row) for row in rows]
    widths = [max(len(line[i]) for line in body) for i in range(len(HEADERS))]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    lines = [line(HEADERS), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += [line(values) for values in body[1:]]
    notes = [f"- {row.scenario} / {row.backend}: {row.notes}" for row in rows if row.notes]
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines)


def cpu_model() -> str:
    """The CPU model named in ``/proc/cpuinfo`` (or what :mod:`platform` says)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for text in cpuinfo:
                if text.startswith("model name"):
                    return text.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def source_line() -> str:
    """Which flask_shimmie was measured: its directory and git commit (``+dirty`` when edited)."""
    import subprocess

    import flask_shimmie

    where = os.path.dirname(os.path.dirname(os.path.abspath(flask_shimmie.__file__)))
    described = os.environ.get("SHIMMIE_BENCH_SOURCE", "")
    try:
        commit = subprocess.run(
            ["git", "-C", where, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if commit.returncode == 0:
            dirty = subprocess.run(
                ["git", "-C", where, "status", "--porcelain", "--", "flask_shimmie", "example_songs"],
                capture_output=True,
                text=True,
                timeout=10,
            )
            described = commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return f"- flask_shimmie source: {where}" + (f" ({described})" if described else "")


def load_average() -> str:
    """The 1/5/15-minute load averages, or ``unknown``."""
    try:
        return " / ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def machine_lines() -> list[str]:
    """What the results depend on: cores, CPU, Python, library versions, the date."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return [
        f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- nproc: {os.cpu_count()}",
        f"- CPU: {cpu_model()}",
        f"- Python: {platform.python_version()} ({platform.python_implementation()}), {platform.platform()}",
        f"- flask_shimmie {installed('flask-shimmie')}, eventsourcing {installed('eventsourcing')}, "
        f"Flask {installed('flask')}, gunicorn {installed('gunicorn')}, psycopg {installed('psycopg')}",
        source_line(),
    ]


class Progress:
    """Prints what is being measured, so a long run shows it is alive."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.started = time.perf_counter()

    def __call__(self, message: str) -> None:
        if self.enabled:
            elapsed = time.perf_counter() - self.started
            print(f"[{elapsed:6.1f}s] {message}", flush=True)


def chunks(total: int, size: int) -> Iterator[int]:
    """Sizes of the chunks that split ``total`` into pieces of at most ``size``."""
    while total > 0:
        yield min(size, total)
        total -= size

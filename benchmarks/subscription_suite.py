"""Scenario 7 (projection catch-up, against eventsourcing) and 7r (reactor latency, ours only)."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from . import es_projection, es_side, shimmie_side, shimmie_subscriptions
from .backends import Stores, check_sqlite_durability, postgres_unavailable
from .es_side import BenchApplication
from .harness import Progress, Row, Settings, compare_row, ours_only_row, skipped_row
from .shimmie_side import OurApp

PROJECTION_SCENARIO = "7 projection catch-up"
LATENCY_SCENARIO = "7r reactor latency"
SCENARIOS = (PROJECTION_SCENARIO, LATENCY_SCENARIO)

#: Scenario 7 aims at twice eventsourcing's rate.
PROJECTION_TARGET_RATIO = 2.0


def run_subscription_scenarios(
    backend: str, stores: Stores, settings: Settings, progress: Progress
) -> list[Row]:
    """Scenarios 7 and 7r on ``backend``; skipped rows when PostgreSQL does not answer."""
    if backend == "postgresql":
        reason = postgres_unavailable(stores.postgres_url)
        if reason is not None:
            return [skipped_row(scenario, backend, reason) for scenario in SCENARIOS]
    progress(f"{backend}: {PROJECTION_SCENARIO} of {settings.projection_events:,} events")
    rows = [_catch_up(backend, stores, settings, progress)]
    progress(f"  ours {rows[-1].ours}, eventsourcing {rows[-1].theirs}")
    progress(f"{backend}: {LATENCY_SCENARIO}, {settings.reactor_events} events")
    rows.append(_latency(backend, stores, settings))
    progress(f"  {rows[-1].ours}")
    return rows


def _stores_for(backend: str, stores: Stores, label: str) -> tuple[str, dict[str, str]]:
    """Our store URL and eventsourcing's environment, each a fresh store."""
    if backend == "sqlite":
        return (
            shimmie_side.store_url("sqlite", sqlite_path=stores.sqlite_path(f"ours-{label}")),
            es_side.environment("sqlite", sqlite_path=stores.sqlite_path(f"theirs-{label}")),
        )
    if backend == "postgresql":
        return (
            stores.ours_postgres_url(stores.new_schema()),
            es_side.environment("postgresql", postgres=stores.theirs_postgres_env(stores.new_schema())),
        )
    return "memory://", es_side.environment("memory")


def interleave(
    sides: list[tuple[str, int, Callable[[], float]]],
) -> dict[str, list[float]]:
    """Run each ``(name, repeats, measure)`` its number of times, taking turns, the first side first."""
    samples: dict[str, list[float]] = {name: [] for name, _, _ in sides}
    for index in range(max(repeats for _, repeats, _ in sides)):
        for name, repeats, measure in sides:
            if index < repeats:
                samples[name].append(measure())
    return samples


def _catch_up(backend: str, stores: Stores, settings: Settings, progress: Progress) -> Row:
    total = settings.projection_events
    url, env = _stores_for(backend, stores, "projection")
    ours: OurApp | None = None
    theirs: BenchApplication | None = None
    try:
        ours = shimmie_subscriptions.make_quiet_app(url)
        theirs = es_side.make_app(env)
        if backend == "sqlite":
            _check_our_sqlite(ours)
        progress(f"  storing {total:,} events on each side")
        shimmie_side.fill(ours, total)
        es_side.fill(theirs, total)
        samples = interleave(
            [
                ("ours", settings.projection_repeats, shimmie_subscriptions.catch_up_function(ours, total)),
                (
                    "theirs",
                    settings.projection_theirs_repeats,
                    es_projection.catch_up_function(backend, env, theirs, total),
                ),
            ]
        )
    finally:
        if ours is not None:
            with suppress(Exception):
                ours.close()
        if theirs is not None:
            with suppress(Exception):
                theirs.close()
    row = compare_row(
        PROJECTION_SCENARIO,
        backend,
        samples,
        minimum_ratio=PROJECTION_TARGET_RATIO,
        notes=_catch_up_notes(backend, total, settings),
    )
    assert row.ours_value is not None and row.theirs_value is not None
    row.ours = f"{row.ours}, {total / row.ours_value:.2f} s"
    row.theirs = f"{row.theirs}, {total / row.theirs_value:.2f} s"
    return row


def _check_our_sqlite(ours: OurApp) -> None:
    # Projections commit on the store's writer connection: check what it runs with.
    store: Any = ours.app.extensions["shimmie"].event_store
    with store._db.writing() as connection:
        check_sqlite_durability(connection, "flask_shimmie")


def _catch_up_notes(backend: str, total: int, settings: Settings) -> str:
    if backend == "postgresql":
        theirs_how = (
            "eventsourcing: a new ProjectionRunner (a new application and view, LISTEN/NOTIFY subscription, "
            "its processing thread)"
        )
    else:
        theirs_how = (
            "eventsourcing: its SQLite recorder has no subscribe(), so ProjectionRunner cannot run there"
            if backend == "sqlite"
            else "eventsourcing: on POPO a ProjectionRunner's new application has an empty store"
        )
        theirs_how += (
            f"; the runner's loop in this thread instead: select_notifications in pages of "
            f"{es_projection.SUBSCRIPTION_PAGE}, mapper.to_domain_event, Projection.process_event"
        )
    where = {
        "memory": "in-memory SQLite on both sides (ours: memory://'s projection database; theirs: the view's "
        "factory on SQLITE_DBNAME=:memory:)",
        "sqlite": "the events' SQLite file on both sides (WAL, synchronous=FULL, checked on both)",
        "postgresql": "the events' schema on both sides (synchronous_commit=on)",
    }[backend]
    repeats = (
        f"Runs, taking turns: {settings.projection_repeats} of ours, {settings.projection_theirs_repeats} of "
        "theirs (the medians count)"
    )
    return (
        f"{total:,} stored events (streams of 100) projected into a new table of (stream_id, version) rows, "
        f"one INSERT per event; clock from registering a new projection to its position at the last event; "
        f"{where}. Ours: stack.register_projection + stack.run_subscriptions() in this thread; its rows and "
        f"position commit in one transaction per batch (up to 500 events or 50 ms). {theirs_how}; the view "
        f"commits each event's row with its tracking record, one transaction per event (process_event is "
        f"called per event). {repeats}."
    )


def _latency(backend: str, stores: Stores, settings: Settings) -> Row:
    url, _ = _stores_for(backend, stores, "latency")
    delays = shimmie_subscriptions.reactor_latencies(url, settings.reactor_events, settings.reactor_spacing)
    p50, p99 = percentile(delays, 50), percentile(delays, 99)
    return ours_only_row(
        LATENCY_SCENARIO,
        backend,
        f"p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms",
        (
            f"ours only: {len(delays)} events recorded with record_event from one thread, "
            f"{settings.reactor_spacing * 1000:g} ms apart, on a fresh store; one reactor, run by the "
            "background runner that startup() starts; the delay from record_event's return to the "
            "reactor's call, both instants from time.perf_counter() in this one process (the runner may "
            "call the reactor between the commit and the return: such a delay is negative, and kept); "
            f"max {max(delays) * 1000:.2f} ms"
        ),
        delays,
    )


def percentile(values: list[float], percent: float) -> float:
    """The ``percent`` percentile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]

"""The subscription store: durable positions, one lease holder at a time, fenced writes, projections.

Run on every backend; what needs another process or a database that outlives the store object
runs on SQLite and PostgreSQL only. A lease is taken over for real: from a SIGKILLed process, from
a process whose fcntl locks were dropped (SQLite), from a terminated session (PostgreSQL).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from flask_shimmie.errors import ConfigurationError
from flask_shimmie.storage.interface import (
    EventStore,
    Lease,
    LeaseLostError,
    SubscriptionInfo,
    SubscriptionNotFoundError,
    SubscriptionStore,
)
from tests.backends import backend_param, postgres_base_url, require_durable
from tests.storage.helpers import append_one, positions, run_in_threads
from tests.storage.workers import CONTEXT, Workers


@pytest.fixture
def subs(store: EventStore) -> SubscriptionStore:
    """The subscription store of ``store``."""
    return store.subscription_store()


def lease_of(subs: SubscriptionStore, name: str, runner: str = "host:1:a") -> Lease:
    """Take ``name``'s lease, which must be free."""
    lease = subs.try_lease(name, runner)
    assert lease is not None, f"the lease of {name} was not free"
    return lease


def durable_mailer(backend: str, store: EventStore) -> SubscriptionStore:
    """``store``'s subscription store with the reactor ``mailer`` registered at 0 (SQLite and
    PostgreSQL only: skipped, or in CI failed, on another backend)."""
    require_durable(backend)
    subs = store.subscription_store()
    subs.register("mailer", "reactor", start_position=0)
    return subs


def info_of(subs: SubscriptionStore, name: str) -> SubscriptionInfo:
    """The row of the subscription ``name``, which must be registered."""
    info = subs.get(name)
    assert info is not None, f"{name} is not registered"
    return info


def placeholder(backend: str) -> str:
    """The driver's parameter placeholder: ``%s`` for psycopg, ``?`` for sqlite3."""
    return "%s" if backend == "postgresql" else "?"


def project(subs: SubscriptionStore, lease: Lease, backend: str, values: list[int], position: int) -> None:
    """A projection batch: create its table if needed, insert ``values``, advance to ``position``."""
    mark = placeholder(backend)
    with subs.projection_transaction(lease) as tx:
        tx.db.execute("CREATE TABLE IF NOT EXISTS projected (value INTEGER NOT NULL)")
        for value in values:
            tx.db.execute(f"INSERT INTO projected (value) VALUES ({mark})", (value,))
        tx.advance(position)


def projected(subs: SubscriptionStore) -> list[int]:
    """The values in the projection's table, read through ``projection_reader`` (none: no table yet)."""
    with subs.projection_reader() as db:
        try:
            rows = db.execute("SELECT value FROM projected ORDER BY value").fetchall()
        except Exception as error:  # the table is created by the first batch that commits
            if "projected" not in str(error):
                raise
            return []
    return [value for (value,) in rows]


def schema_of(url: str) -> str:
    """The ``schema`` query parameter of a PostgreSQL store URL."""
    return parse_qs(urlsplit(url).query)["schema"][0]


# -- rows -----------------------------------------------------------------------------------------


def test_register_creates_the_row_once_and_keeps_its_position_and_version(subs: SubscriptionStore) -> None:
    created = subs.register("mailer", "reactor", start_position=5, version=2)
    assert (created.name, created.kind, created.position, created.version) == ("mailer", "reactor", 5, 2)
    assert (created.state, created.error, created.runner) == ("active", None, None)
    assert created.updated_at.tzinfo is not None

    lease = lease_of(subs, "mailer")
    subs.advance(lease, 9)
    again = subs.register("mailer", "reactor", start_position=0, version=3)

    assert (again.position, again.version) == (9, 2)
    assert subs.get("mailer") == again
    assert len(subs.all()) == 1


def test_a_registered_row_is_seen_by_another_store_object_and_after_a_restart(
    backend: str, store: EventStore, open_store: Callable[[], EventStore]
) -> None:
    require_durable(backend)
    subs = store.subscription_store()
    subs.register("mailer", "reactor", start_position=4)
    subs.advance(lease_of(subs, "mailer"), 7)

    other = open_store().subscription_store()
    assert other.register("mailer", "reactor", start_position=0).position == 7
    store.close()
    store.open()

    info = info_of(store.subscription_store(), "mailer")
    assert info.position == 7
    assert info.runner is None  # closing the store released the lease


def test_register_with_another_kind_raises_configuration_error_and_changes_nothing(
    subs: SubscriptionStore,
) -> None:
    subs.register("songs", "projection", start_position=0, version=1)

    with pytest.raises(ConfigurationError, match="'songs'.*projection.*reactor"):
        subs.register("songs", "reactor", start_position=3)
    with pytest.raises(ValueError, match="kind"):
        subs.register("other", "cron", start_position=0)

    info = info_of(subs, "songs")
    assert (info.kind, info.position, info.version) == ("projection", 0, 1)
    assert [i.name for i in subs.all()] == ["songs"]


def test_all_lists_every_subscription_sorted_by_name(subs: SubscriptionStore) -> None:
    for name, kind in [("b-relay", "relay"), ("a", "reactor"), ("Z", "projection"), ("_x", "reactor")]:
        subs.register(name, kind, start_position=1)

    listed = subs.all()

    assert [info.name for info in listed] == sorted(["b-relay", "a", "Z", "_x"])
    assert {info.name: info.kind for info in listed}["b-relay"] == "relay"
    assert subs.get("missing") is None


def test_an_unknown_name_raises_subscription_not_found(subs: SubscriptionStore) -> None:
    for call in (
        lambda: subs.try_lease("missing", "host:1:a"),
        lambda: subs.set_state("missing", "failed", "boom"),
        lambda: subs.reset("missing", 0),
        lambda: subs.request_retry("missing"),
    ):
        with pytest.raises(SubscriptionNotFoundError, match="missing"):
            call()
    assert subs.all() == []
    assert subs.parked("missing") == []


def test_set_state_records_a_failure_and_active_clears_it(subs: SubscriptionStore) -> None:
    subs.register("mailer", "reactor", start_position=0)

    subs.set_state("mailer", "failed", "Traceback: boom")
    failed = subs.get("mailer")
    subs.set_state("mailer", "active", "ignored")
    active = subs.get("mailer")

    assert failed is not None and (failed.state, failed.error) == ("failed", "Traceback: boom")
    assert active is not None and (active.state, active.error) == ("active", None)
    with pytest.raises(ValueError, match="state"):
        subs.set_state("mailer", "paused")


# -- leases ---------------------------------------------------------------------------------------


def test_try_lease_records_the_runner_and_the_lease_is_alive(subs: SubscriptionStore) -> None:
    subs.register("mailer", "reactor", start_position=0)

    lease = lease_of(subs, "mailer", "host:42:x")

    assert (lease.name, lease.runner) == ("mailer", "host:42:x")
    assert lease.alive()
    info = info_of(subs, "mailer")
    assert info.runner == "host:42:x"


def test_one_thread_of_many_gets_the_lease(subs: SubscriptionStore) -> None:
    subs.register("mailer", "reactor", start_position=0)

    leases = run_in_threads(lambda i: subs.try_lease("mailer", f"host:1:{i}"), 8)

    held = [lease for lease in leases if lease is not None]
    assert len(held) == 1
    info = info_of(subs, "mailer")
    assert info.runner == held[0].runner


def test_leases_of_different_subscriptions_are_independent(subs: SubscriptionStore) -> None:
    for name in ("a", "b"):
        subs.register(name, "reactor", start_position=0)

    first, second = lease_of(subs, "a"), lease_of(subs, "b")
    first.release()

    assert second.alive()
    assert subs.try_lease("b", "host:1:other") is None
    assert subs.try_lease("a", "host:1:other") is not None


def test_release_lets_another_take_it_and_the_released_lease_is_dead(subs: SubscriptionStore) -> None:
    subs.register("mailer", "reactor", start_position=3)
    lease = lease_of(subs, "mailer", "host:1:first")
    assert subs.try_lease("mailer", "host:1:second") is None

    lease.release()
    lease.release()  # idempotent
    released = subs.get("mailer")
    second = subs.try_lease("mailer", "host:1:second")

    assert released is not None and (released.runner, released.position) == (None, 3)
    assert second is not None and second.alive()
    assert not lease.alive()
    with pytest.raises(LeaseLostError):
        subs.advance(lease, 10)
    info = info_of(subs, "mailer")
    assert (info.position, info.runner) == (3, "host:1:second")


def test_two_store_objects_on_one_url_hold_the_lease_one_at_a_time(
    backend: str, store: EventStore, open_store: Callable[[], EventStore]
) -> None:
    first, second = durable_mailer(backend, store), open_store().subscription_store()

    lease = lease_of(first, "mailer", "host:1:first")
    refused = second.try_lease("mailer", "host:1:second")
    lease.release()
    taken = second.try_lease("mailer", "host:1:second")

    assert refused is None
    assert taken is not None and taken.alive()
    assert first.try_lease("mailer", "host:1:third") is None


def test_closing_the_event_store_releases_its_leases(
    backend: str, store: EventStore, open_store: Callable[[], EventStore]
) -> None:
    subs = durable_mailer(backend, store)
    lease = lease_of(subs, "mailer", "host:1:first")
    other = open_store().subscription_store()
    assert other.try_lease("mailer", "host:2:second") is None

    store.close()
    taken = other.try_lease("mailer", "host:2:second")

    assert taken is not None
    assert not lease.alive()
    with pytest.raises(LeaseLostError):
        subs.advance(lease, 5)
    info = info_of(other, "mailer")
    assert (info.position, info.runner) == (0, "host:2:second")


def test_a_lease_of_another_store_object_is_refused(
    backend: str, store: EventStore, open_store: Callable[[], EventStore]
) -> None:
    first, second = durable_mailer(backend, store), open_store().subscription_store()
    lease = lease_of(first, "mailer")

    with pytest.raises(ValueError, match="not taken through this subscription store"):
        second.advance(lease, 5)
    info = info_of(first, "mailer")
    assert info.position == 0


def test_two_processes_trying_at_once_one_gets_the_lease(
    backend: str, store: EventStore, store_url: str
) -> None:
    subs = durable_mailer(backend, store)
    workers = Workers()
    tried, release = CONTEXT.Barrier(3), CONTEXT.Event()
    for index in range(2):
        workers.start("try_subscription_lease", store_url, "mailer", f"host:w{index}:t", tried, release)
    try:
        tried.wait(60)  # both opened their stores
        tried.wait(60)  # both tried
        assert subs.try_lease("mailer", "host:main:t") is None
        info = info_of(subs, "mailer")
        assert info.runner in ("host:w0:t", "host:w1:t")
    finally:
        release.set()
    assert sorted(workers.wait()) == [False, True]
    info = info_of(subs, "mailer")
    assert info.runner is None


def test_a_killed_holders_lease_is_taken_over_by_another_process_within_two_seconds(
    backend: str, store: EventStore, store_url: str
) -> None:
    subs = durable_mailer(backend, store)
    workers = Workers()
    held = CONTEXT.Event()
    workers.start("hold_subscription_until_killed", store_url, "mailer", "host:doomed:t", held)
    workers.wait_for(held, "the holder process did not take the lease")
    assert subs.try_lease("mailer", "host:main:t") is None

    workers.kill()  # SIGKILL: no cleanup in the holder
    killed_at = time.monotonic()
    lease = None
    while lease is None and time.monotonic() - killed_at < 10:
        lease = subs.try_lease("mailer", "host:main:t")
        if lease is None:
            time.sleep(0.01)
    took = time.monotonic() - killed_at

    assert lease is not None, "the dead process's lease was never freed"
    assert took < 2.0, took
    info = info_of(subs, "mailer")
    assert info.runner == "host:main:t"


# -- fencing --------------------------------------------------------------------------------------


#: The writes a lease fences, each given (subscription store, lease, backend).
FENCED_WRITES: dict[str, Callable[[SubscriptionStore, Lease, str], None]] = {
    "advance": lambda subs, lease, _backend: subs.advance(lease, 100),
    "park": lambda subs, lease, _backend: subs.park(lease, "e-late", 101, "boom", 5),
    "projection": lambda subs, lease, backend: project(subs, lease, backend, [1, 2], 102),
    "set_state": lambda subs, lease, _backend: subs.set_state(lease.name, "failed", "boom", lease=lease),
}


def assert_fenced(subs: SubscriptionStore, lease: Lease, backend: str, write: str, position: int) -> None:
    """``write`` through ``lease`` raises LeaseLostError and stores nothing; so does every other write."""
    with pytest.raises(LeaseLostError):
        FENCED_WRITES[write](subs, lease, backend)  # refused by the database's fence
    for other in FENCED_WRITES.values():
        with pytest.raises(LeaseLostError):
            other(subs, lease, backend)  # refused at once: the lease knows it is lost now
    info = info_of(subs, lease.name)
    assert (info.position, info.state, info.error) == (position, "active", None)
    assert subs.parked(lease.name) == []
    assert projected(subs) == []
    assert not lease.alive()


@pytest.mark.parametrize("write", list(FENCED_WRITES))
def test_reset_ends_the_holders_lease_whose_writes_then_store_nothing(
    backend: str, subs: SubscriptionStore, write: str
) -> None:
    subs.register("mailer", "reactor", start_position=0)
    lease = lease_of(subs, "mailer", "host:1:old")
    subs.advance(lease, 8)

    subs.reset("mailer", 2)

    info = info_of(subs, "mailer")
    assert (info.position, info.runner) == (2, None)
    assert_fenced(subs, lease, backend, write, 2)
    assert subs.try_lease("mailer", "host:1:new") is None  # until the old holder lets go
    lease.release()
    assert subs.try_lease("mailer", "host:1:new") is not None


def drop_this_process_fcntl_locks(store_url: str) -> None:
    """Close a descriptor of the SQLite store's ``-locks`` sidecar: POSIX then drops every fcntl
    lock this process holds on the file, as it would if any library here opened and closed it."""
    os.close(os.open(f"{os.path.realpath(urlsplit(store_url).path)}-locks", os.O_RDWR))


def terminate_lease_session(store_url: str, name: str) -> None:
    """End, from another connection, the PostgreSQL session that holds ``name``'s advisory lock."""
    import psycopg

    from flask_shimmie.storage.postgres.database import advisory_key

    key = advisory_key(schema_of(store_url), "subscription", name) & 0xFFFFFFFFFFFFFFFF
    with psycopg.connect(postgres_base_url(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND classid = %s AND objid = %s AND objsubid = 1",
            [key >> 32, key & 0xFFFFFFFF],
        ).fetchall()
        assert len(rows) == 1, rows
        (terminated,) = conn.execute("SELECT pg_terminate_backend(%s)", [rows[0][0]]).fetchone() or (False,)
        assert terminated


@pytest.mark.parametrize("write", ["advance", "park", "projection"])
def test_after_a_takeover_the_old_leases_writes_raise_lease_lost_and_store_nothing(
    backend: str, store: EventStore, store_url: str, write: str
) -> None:
    subs = durable_mailer(backend, store)
    lease = lease_of(subs, "mailer", "host:main:old")
    subs.advance(lease, 4)
    # The old holder loses its lock without knowing it: SQLite drops a process's fcntl locks
    # when it closes any descriptor of the file; PostgreSQL ends the session.
    if backend == "sqlite":
        drop_this_process_fcntl_locks(store_url)
    else:
        terminate_lease_session(store_url, "mailer")
    workers = Workers()
    taken, done = CONTEXT.Event(), CONTEXT.Event()
    workers.start("take_over_subscription", store_url, "mailer", "host:other:new", taken, done)
    try:
        workers.wait_for(taken, "the other process did not take the lease over")
        info = info_of(subs, "mailer")
        assert info.runner == "host:other:new"
        assert_fenced(subs, lease, backend, write, 4)
    finally:
        done.set()
    assert workers.wait() == [True]


#: For the tests of what only PostgreSQL has (sessions, schemas): the ``backend`` fixture, narrowed.
POSTGRES_ONLY = pytest.mark.parametrize("backend", [backend_param("postgresql")], indirect=True)


@POSTGRES_ONLY
def test_a_terminated_lease_session_is_not_alive_and_another_runner_takes_over(
    store: EventStore, store_url: str, open_store: Callable[[], EventStore]
) -> None:
    subs = store.subscription_store()
    subs.register("mailer", "reactor", start_position=0)
    lease = lease_of(subs, "mailer", "host:1:old")
    assert lease.alive()

    terminate_lease_session(store_url, "mailer")
    alive_after = lease.alive()
    other = open_store().subscription_store()
    successor = other.try_lease("mailer", "host:2:new")

    assert alive_after is False
    assert successor is not None and successor.alive()
    assert lease.alive() is False  # and never again
    with pytest.raises(LeaseLostError):
        subs.advance(lease, 50)
    other.advance(successor, 3)
    info = info_of(other, "mailer")
    assert (info.position, info.runner) == (3, "host:2:new")


# -- parking --------------------------------------------------------------------------------------


def test_park_advances_past_the_event_and_lists_it(subs: SubscriptionStore) -> None:
    subs.register("mailer", "reactor", start_position=0)
    lease = lease_of(subs, "mailer")
    subs.advance(lease, 3)

    subs.park(lease, "e5", 5, "Traceback: smtp down", 5)
    subs.park(lease, "e4", 4, "Traceback: bad address", 2)  # a retried older event

    info = info_of(subs, "mailer")
    assert info.position == 5
    parked = subs.parked("mailer")
    assert [(p.event_id, p.sequence_num, p.error, p.attempts) for p in parked] == [
        ("e4", 4, "Traceback: bad address", 2),
        ("e5", 5, "Traceback: smtp down", 5),
    ]
    assert all(p.subscription == "mailer" and not p.retry_requested for p in parked)
    assert all(p.parked_at.tzinfo is not None for p in parked)
    assert subs.parked("other") == []


def test_parking_a_parked_event_again_replaces_its_error_and_clears_the_retry(
    subs: SubscriptionStore,
) -> None:
    subs.register("mailer", "reactor", start_position=0)
    lease = lease_of(subs, "mailer")
    subs.park(lease, "e1", 1, "first", 5)
    subs.request_retry("mailer")

    subs.park(lease, "e1", 1, "second", 6)

    (parked,) = subs.parked("mailer")
    assert (parked.error, parked.attempts, parked.retry_requested) == ("second", 6, False)


def test_request_retry_marks_parked_events_and_unpark_removes_one(subs: SubscriptionStore) -> None:
    subs.register("mailer", "reactor", start_position=0)
    lease = lease_of(subs, "mailer")
    subs.park(lease, "e1", 1, "boom", 5)
    subs.park(lease, "e2", 2, "boom", 5)

    assert subs.request_retry("mailer", "e1") == 1
    assert [p.retry_requested for p in subs.parked("mailer")] == [True, False]
    assert subs.request_retry("mailer", "unknown") == 0
    assert subs.request_retry("mailer") == 2
    assert [p.retry_requested for p in subs.parked("mailer")] == [True, True]

    subs.unpark(lease, "e1")

    assert [p.event_id for p in subs.parked("mailer")] == ["e2"]
    info = info_of(subs, "mailer")
    assert info.position == 2


def test_reset_moves_the_position_sets_active_and_drops_parked_events(subs: SubscriptionStore) -> None:
    subs.register("mailer", "reactor", start_position=0, version=3)
    subs.register("other", "reactor", start_position=0)
    lease, other = lease_of(subs, "mailer"), lease_of(subs, "other")
    subs.park(lease, "e7", 7, "boom", 5)
    subs.park(other, "e8", 8, "boom", 5)
    subs.set_state("mailer", "failed", "Traceback: boom")

    subs.reset("mailer", 2)
    kept_version = subs.get("mailer")
    subs.reset("mailer", 0, version=4)

    info = subs.get("mailer")
    assert kept_version is not None and (kept_version.position, kept_version.version) == (2, 3)
    assert info is not None
    assert (info.position, info.version, info.state, info.error) == (0, 4, "active", None)
    assert subs.parked("mailer") == []
    assert [p.event_id for p in subs.parked("other")] == ["e8"]


def test_a_runners_set_state_is_fenced_by_its_lease(subs: SubscriptionStore) -> None:
    subs.register("songs", "projection", start_position=0)
    lease = lease_of(subs, "songs")

    subs.set_state("songs", "failed", "Traceback: bad row", lease=lease)
    failed = subs.get("songs")
    subs.reset("songs", 0)

    assert failed is not None and (failed.state, failed.error) == ("failed", "Traceback: bad row")
    with pytest.raises(LeaseLostError):
        subs.set_state("songs", "failed", "late", lease=lease)
    info = info_of(subs, "songs")
    assert (info.state, info.error) == ("active", None)


# -- projections ----------------------------------------------------------------------------------


def test_a_projection_transaction_commits_the_rows_and_the_position_together(
    backend: str, subs: SubscriptionStore
) -> None:
    subs.register("songs", "projection", start_position=0, version=1)
    lease = lease_of(subs, "songs")

    project(subs, lease, backend, [1, 2], 2)
    project(subs, lease, backend, [3], 3)

    assert projected(subs) == [1, 2, 3]
    info = info_of(subs, "songs")
    assert (info.position, info.version) == (3, 1)


def test_an_exception_in_a_projection_transaction_rolls_back_the_rows_and_the_position(
    backend: str, subs: SubscriptionStore
) -> None:
    subs.register("songs", "projection", start_position=0)
    lease = lease_of(subs, "songs")
    project(subs, lease, backend, [1], 1)
    mark = placeholder(backend)

    with pytest.raises(RuntimeError, match="handler failed"):
        with subs.projection_transaction(lease) as tx:
            tx.db.execute(f"INSERT INTO projected (value) VALUES ({mark})", (2,))
            tx.advance(2)
            raise RuntimeError("handler failed")

    assert projected(subs) == [1]
    info = info_of(subs, "songs")
    assert info.position == 1
    project(subs, lease, backend, [2], 2)  # the lease and the connection are fine afterwards
    assert projected(subs) == [1, 2]


def test_a_rebuild_commits_the_cleared_table_the_position_and_the_version_together(
    backend: str, subs: SubscriptionStore
) -> None:
    subs.register("songs", "projection", start_position=0, version=1)
    lease = lease_of(subs, "songs")
    project(subs, lease, backend, [1, 2], 5)

    with subs.projection_transaction(lease) as tx:
        tx.db.execute("DELETE FROM projected")
        tx.advance(0, version=2)

    assert projected(subs) == []
    info = info_of(subs, "songs")
    assert (info.position, info.version) == (0, 2)


def test_a_projection_transaction_of_a_reset_lease_commits_nothing(
    backend: str, subs: SubscriptionStore
) -> None:
    subs.register("songs", "projection", start_position=0)
    lease = lease_of(subs, "songs")
    subs.reset("songs", 0)  # from an operator: the lease does not know yet

    with pytest.raises(LeaseLostError):
        project(subs, lease, backend, [1, 2], 2)

    assert projected(subs) == []
    info = info_of(subs, "songs")
    assert info.position == 0


def test_the_projection_reader_sees_only_committed_batches(
    backend: str, store: EventStore, open_store: Callable[[], EventStore]
) -> None:
    require_durable(backend)
    subs = store.subscription_store()
    subs.register("songs", "projection", start_position=0)
    lease = lease_of(subs, "songs")
    project(subs, lease, backend, [1], 1)
    mark = placeholder(backend)
    reader = open_store().subscription_store()

    with subs.projection_transaction(lease) as tx:
        tx.db.execute(f"INSERT INTO projected (value) VALUES ({mark})", (2,))
        tx.advance(2)
        during = projected(reader)

    assert during == [1]
    assert projected(reader) == [1, 2]


# -- living with the event store ------------------------------------------------------------------


def test_subscription_writes_and_appends_interleave_without_errors_or_gaps(
    store: EventStore, subs: SubscriptionStore
) -> None:
    subs.register("mailer", "reactor", start_position=0)
    lease = lease_of(subs, "mailer")

    def work(index: int) -> int:
        for step in range(20):
            if index == 0:
                subs.advance(lease, step)
            elif index == 1:
                subs.park(lease, f"e{step}", step, "boom", 1)
            else:
                append_one(store, f"s{index}")
        return index

    run_in_threads(work, 4)

    assert positions(store.read()) == list(range(1, 41))
    assert len(subs.parked("mailer")) == 20
    info = info_of(subs, "mailer")
    assert info.position == 19


def test_the_subscription_tables_are_created_in_a_store_made_before_them(
    backend: str, store: EventStore, store_url: str, open_store: Callable[[], EventStore]
) -> None:
    require_durable(backend)
    append_one(store, "s")
    store.close()
    with raw_connection(backend, store_url) as execute:
        execute("DROP TABLE shimmie_parked")
        execute("DROP TABLE shimmie_subscriptions")

    reopened = open_store()
    subs = reopened.subscription_store()
    subs.register("mailer", "reactor", start_position=reopened.last_sequence_num())

    info = info_of(subs, "mailer")
    assert info.position == 1
    with raw_connection(backend, store_url) as execute:
        assert execute("SELECT version FROM shimmie_schema_version") == [(current_schema_version(backend),)]


def current_schema_version(backend: str) -> int:
    """The schema version this release creates ``backend``'s tables at."""
    if backend == "sqlite":
        from flask_shimmie.storage.sqlite.database import SCHEMA_VERSION
    else:
        from flask_shimmie.storage.postgres.database import SCHEMA_VERSION
    return SCHEMA_VERSION


@contextmanager
def raw_connection(backend: str, store_url: str) -> Iterator[Callable[[str], list[Any]]]:
    """Run statements on the store's database without the store (in the store's schema)."""
    if backend == "sqlite":
        connection = sqlite3.connect(urlsplit(store_url).path, isolation_level=None)
        try:
            yield lambda statement: connection.execute(statement).fetchall()
        finally:
            connection.close()
        return
    import psycopg

    with psycopg.connect(postgres_base_url(), autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema_of(store_url)}"')

        def execute(statement: str) -> list[Any]:
            cursor = conn.execute(statement)
            return cursor.fetchall() if cursor.description else []

        yield execute


# -- fork -----------------------------------------------------------------------------------------


def in_forked_child(body: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``body`` in a forked child and return what it returned (or raise with its error)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running any cleanup of the parent's
        os.close(read_end)
        try:
            outcome = {"ok": True, "value": body()}
        except BaseException as error:
            outcome = {"ok": False, "error": repr(error)}
        os.write(write_end, json.dumps(outcome).encode())
        os._exit(0)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    os.waitpid(pid, 0)
    outcome = json.loads(b"".join(chunks) or b'{"ok": false, "error": "the child said nothing"}')
    assert outcome["ok"], outcome["error"]
    value: dict[str, Any] = outcome["value"]
    return value


def test_a_forked_child_holds_none_of_its_parents_leases(
    backend: str, store: EventStore, open_store: Callable[[], EventStore]
) -> None:
    subs = store.subscription_store()
    subs.register("mailer", "reactor", start_position=0)
    lease = lease_of(subs, "mailer", "host:parent:t")
    subs.advance(lease, 1)

    def child() -> dict[str, Any]:
        alive = lease.alive()
        try:
            subs.advance(lease, 99)
            advanced = "stored"
        except LeaseLostError:
            advanced = "refused"
        try:
            taken = subs.try_lease("mailer", "host:child:t") is not None
        except SubscriptionNotFoundError:  # memory://: the child starts without subscriptions
            taken = False
        lease.release()  # must not release the parent's lock or end its session
        return {"alive": alive, "advanced": advanced, "taken": taken}

    seen = in_forked_child(child)
    time.sleep(0.2)  # let the server notice a session the child might have ended

    assert seen == {"alive": False, "advanced": "refused", "taken": False}
    assert lease.alive()
    subs.advance(lease, 2)
    info = info_of(subs, "mailer")
    assert (info.position, info.runner) == (2, "host:parent:t")
    if backend != "memory":
        assert open_store().subscription_store().try_lease("mailer", "host:other:t") is None


# -- PostgreSQL sessions --------------------------------------------------------------------------


@POSTGRES_ONLY
def test_a_projections_tables_live_in_the_stores_schema(store: EventStore, store_url: str) -> None:
    subs = store.subscription_store()
    subs.register("songs", "projection", start_position=0)

    project(subs, lease_of(subs, "songs"), "postgresql", [1], 1)

    import psycopg

    with psycopg.connect(postgres_base_url(), autocommit=True) as conn:
        found = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL, to_regclass('public.projected') IS NOT NULL",
            [f'"{schema_of(store_url)}".projected'],
        ).fetchone()
    assert found == (True, False)


@POSTGRES_ONLY
def test_projection_queries_get_the_ordinary_planner_and_the_stores_sessions_keep_theirs(
    store: EventStore,
) -> None:
    subs = store.subscription_store()
    subs.register("songs", "projection", start_position=0)
    lease = lease_of(subs, "songs")

    with subs.projection_transaction(lease) as tx:
        in_transaction = tx.db.execute("SHOW enable_seqscan").fetchone()[0]
        tx.advance(1)
    with subs.projection_reader() as db:
        in_reader = db.execute("SHOW enable_seqscan").fetchone()[0]
    pool = store._db.pool()  # type: ignore[attr-defined]
    sessions = [pool.getconn() for _ in range(pool.get_stats()["pool_size"])]
    try:
        afterwards = {conn.execute("SHOW enable_seqscan").fetchone()[0] for conn in sessions}
    finally:
        for conn in sessions:
            pool.putconn(conn)

    assert (in_transaction, in_reader) == ("on", "on")
    assert afterwards == {"off"}


@POSTGRES_ONLY
def test_a_lease_session_notices_a_dead_peer_within_seconds_and_is_never_idle_timed_out(
    store: EventStore,
) -> None:
    subs = store.subscription_store()
    subs.register("mailer", "reactor", start_position=0)
    lease = lease_of(subs, "mailer")
    session: Any = lease.connection  # the session that holds the lock (PostgreSQL leases keep it)

    settings = {
        name: session.execute(f"SHOW {name}").fetchone()[0]
        for name in ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count")
    }
    client = session.info.get_parameters()

    assert settings == {
        "tcp_keepalives_idle": "2",
        "tcp_keepalives_interval": "1",
        "tcp_keepalives_count": "2",
    }
    assert session.execute("SHOW idle_session_timeout").fetchone()[0] == "0"
    assert (client.get("keepalives"), client.get("keepalives_idle"), client.get("keepalives_count")) == (
        "1",
        "2",
        "2",
    )


@POSTGRES_ONLY
def test_polling_for_a_held_lease_reuses_one_connection_and_replaces_it_when_it_dies(
    store: EventStore, store_url: str, open_store: Callable[[], EventStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    from flask_shimmie.storage.postgres.database import PostgresDatabase

    subs = store.subscription_store()
    subs.register("mailer", "reactor", start_position=0)
    holder = lease_of(open_store().subscription_store(), "mailer", "host:1:holder")
    opened: list[Any] = []
    connect = PostgresDatabase.connect

    def counting_connect(self: PostgresDatabase, **options: Any) -> Any:
        opened.append(connect(self, **options))
        return opened[-1]

    monkeypatch.setattr(PostgresDatabase, "connect", counting_connect)

    refusals = [subs.try_lease("mailer", f"host:2:{i}") for i in range(20)]
    assert refusals == [None] * 20
    assert len(opened) == 1
    import psycopg

    with psycopg.connect(postgres_base_url(), autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", [opened[0].info.backend_pid])
    time.sleep(0.1)
    holder.release()
    lease = subs.try_lease("mailer", "host:2:after")

    assert lease is not None and lease.alive()
    assert len(opened) == 2

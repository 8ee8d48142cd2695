"""Group commit: concurrent writers share transactions, each keeps its own outcome."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from flask import Flask

from flask_shimmie import NO_STREAM, ShimmieError, ShimmieStack, StreamVersionError
from flask_shimmie.group_commit import GroupCommitter
from flask_shimmie.storage.interface import AppendBatch, AppendResult
from tests.helpers import Journal


def _batch(tag: str) -> AppendBatch:
    return AppendBatch((), {tag: NO_STREAM})


def _lead_then_queue_three(
    write: Callable[[str], None], first_started: threading.Event, release: threading.Event
) -> None:
    """Writer "first" commits alone; "a", "bad" and "b" queue behind it, then share the next commit."""
    leader = threading.Thread(target=write, args=("first",))
    leader.start()
    first_started.wait(5)
    others = [threading.Thread(target=write, args=(tag,)) for tag in ("a", "bad", "b")]
    for thread in others:
        thread.start()
    time.sleep(0.2)  # let them queue behind the commit in flight
    release.set()
    for thread in [leader, *others]:
        thread.join(5)


def test_writers_arriving_during_a_commit_share_the_next_one() -> None:
    groups: list[list[str]] = []
    first_started = threading.Event()
    release = threading.Event()

    def commit(batches: Sequence[AppendBatch]) -> list[AppendResult | ShimmieError]:
        tags = [next(iter(b.expected)) for b in batches]
        groups.append(tags)
        if tags == ["first"]:
            first_started.set()
            release.wait(5)
        return [AppendResult([], True) if t != "bad" else ShimmieError(f"rejected {t}") for t in tags]

    committer = GroupCommitter(commit)
    results: dict[str, str] = {}

    def write(tag: str) -> None:
        try:
            committer.append(_batch(tag))
            results[tag] = "ok"
        except ShimmieError as error:
            results[tag] = str(error)

    _lead_then_queue_three(write, first_started, release)
    assert groups[0] == ["first"]
    assert sorted(groups[1]) == ["a", "b", "bad"] and len(groups) == 2
    assert results == {"first": "ok", "a": "ok", "b": "ok", "bad": "rejected bad"}


def test_the_committing_thread_hands_the_group_s_results_on_before_its_writers_wake() -> None:
    first_started, release = threading.Event(), threading.Event()
    seen: list[tuple[list[str], list[str]]] = []
    returned: list[str] = []

    def commit(batches: Sequence[AppendBatch]) -> list[AppendResult | ShimmieError]:
        tags = [next(iter(b.expected)) for b in batches]
        if tags == ["first"]:
            first_started.set()
            release.wait(5)
        return [AppendResult([], True) if t != "bad" else ShimmieError(f"rejected {t}") for t in tags]

    def after_commit(results: Sequence[AppendResult]) -> None:
        seen.append((sorted(str(len(r.events)) for r in results), list(returned)))

    committer = GroupCommitter(commit, after_commit)

    def write(tag: str) -> None:
        with contextlib.suppress(ShimmieError):
            committer.append(_batch(tag))
        returned.append(tag)

    _lead_then_queue_three(write, first_started, release)
    # Once per group, with the successful results only, before any writer of the group returned.
    assert [results for results, _ in seen] == [["0"], ["0", "0"]]
    assert seen[0][1] == [] and not set(seen[1][1]) & {"a", "b", "bad"}
    assert sorted(returned) == ["a", "b", "bad", "first"]


def test_a_failed_transaction_fails_every_batch_of_it() -> None:
    def commit(batches: Sequence[AppendBatch]) -> list[AppendResult | ShimmieError]:
        raise OSError("disk gone")

    committer = GroupCommitter(commit)
    with pytest.raises(OSError, match="disk gone"):
        committer.append(_batch("x"))
    with pytest.raises(OSError):  # and the committer is usable again afterwards
        committer.append(_batch("y"))


def test_concurrent_checked_writes_on_sqlite_keep_their_own_checks(
    make_app: Callable[..., Flask], stack: ShimmieStack, tmp_path: Path
) -> None:
    app = make_app(SHIMMIE_EVENT_STORE=f"sqlite:///{tmp_path}/events.db")
    outcomes: list[str] = []
    lock = threading.Lock()

    def write(n: int) -> None:
        with app.app_context():
            for i in range(25):
                try:
                    stack.record_event(f"hot-{i}", "E", {"n": n}, expected_version=NO_STREAM)
                    result = "ok"
                except StreamVersionError:
                    result = "conflict"
                with lock:
                    outcomes.append(result)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert outcomes.count("ok") == 25 and outcomes.count("conflict") == 175  # one winner per stream
    with app.app_context():
        stored = stack.read_events()
        assert [e.sequence_num for e in stored] == list(range(1, 26))
        assert sorted(e.stream_id for e in stored) == sorted(f"hot-{i}" for i in range(25))
        assert [e.sequence_num for e in stack.model(Journal).events] == list(range(1, 26))


def test_sqlite_appends_queue_behind_another_process_s_writer(tmp_path: Path) -> None:
    """Processes queue for the SQLite file in the kernel (no busy-handler naps), and still all land."""
    from flask_shimmie.storage.sqlite.events import SqliteEventStore
    from tests.storage.helpers import batch, pending
    from tests.storage.workers import CONTEXT, Workers

    store = SqliteEventStore(str(tmp_path / "gate.db"), url="sqlite:///gate.db")
    store.open()
    try:
        workers = Workers()
        held, release = CONTEXT.Event(), CONTEXT.Event()
        workers.start("hold_sqlite_writer_gate", store.lock_path, held, release)
        workers.wait_for(held, "the other process did not take the writer gate")
        releaser = threading.Timer(0.5, release.set)
        releaser.start()
        started = time.monotonic()
        stored = store.append(batch(pending("s")))
        waited = time.monotonic() - started
        releaser.join()
        assert workers.wait() == [True]
        assert waited >= 0.4, f"the append did not wait for the other process's writer ({waited:.2f}s)"
        assert waited < 5
        assert [e.sequence_num for e in stored.events] == [1]
        # Once the holder is gone, appends go straight through.
        started = time.monotonic()
        store.append(batch(pending("s")))
        assert time.monotonic() - started < 0.4
    finally:
        store.close()


def test_a_leader_waits_for_the_last_group_s_writers_to_join_but_not_for_long(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("flask_shimmie.group_commit.MAX_GATHER_SECONDS", 5.0)
    groups: list[list[str]] = []

    def commit(batches: Sequence[AppendBatch]) -> list[AppendResult | ShimmieError]:
        groups.append([next(iter(b.expected)) for b in batches])
        return [AppendResult([], True) for _ in batches]

    committer = GroupCommitter(commit)
    # A lone writer commits at once.
    started = time.monotonic()
    committer.append(_batch("alone"))
    assert time.monotonic() - started < 0.5 and groups == [["alone"]]

    # After a commit of three, the next leader waits for three writers...
    committer._last_size, committer._last_seconds = 3, 20.0
    writers = [threading.Thread(target=committer.append, args=(_batch(tag),)) for tag in ("a", "b", "c")]
    writers[0].start()
    time.sleep(0.2)
    for thread in writers[1:]:
        thread.start()
    for thread in writers:
        thread.join(10)
    assert groups[1:] == [["a", "b", "c"]]

    # ...but at most a quarter of that commit's duration.
    committer._last_size, committer._last_seconds = 3, 0.2
    started = time.monotonic()
    committer.append(_batch("late"))
    waited = time.monotonic() - started
    assert groups[2:] == [["late"]] and 0.04 <= waited < 1.0, waited

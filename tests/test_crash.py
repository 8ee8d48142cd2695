"""Crash safety (issue 8): SIGKILL the whole server (master and workers) under write load.

example_songs runs under gunicorn (2 sync workers) and under granian, the recommended server (2
workers, :class:`tests.serving.GranianServer`), on SQLite and on PostgreSQL while client threads
POST songs with ``submitted_by`` PII. At random moments, once some writes went through since the
last start, the whole process group gets SIGKILL; the server is started again on the same store
and port, and the writers carry on. Afterwards:

- every write answered ``201`` with a ``Location`` is stored exactly once, under that id;
- nothing is stored twice or that no client sent; positions are exactly 1..N;
- every event with PII fields has its PII row and every PII row its event (raw tables), and no
  PII value reached the event table;
- every worker of the restarted server answers ``GET /v1/songs`` (with ``X-Seq-Num-Min: N``)
  exactly as a fresh ``create_app`` on the store does after its startup replay.

The default run kills 3 times per backend and server. The long run (20 kills each) is marked
``slow``: it runs only with ``SHIMMIE_RUN_SLOW=1`` in the environment (or ``--run-slow``, where a
conftest defines that option). ``SHIMMIE_CRASH_SEED`` replays a run's random kill moments.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.backends import DURABLE_BACKENDS, fresh_store_url, require_backend
from tests.helpers import require_server, slow_runs_enabled
from tests.serving import (
    SERVERS,
    ClientThreads,
    SongsServer,
    every_worker_lists,
    raw_pii_rows,
    replayed_pages,
    request,
    song_id_from,
    stored_events,
)

WRITER_THREADS = 3
#: Writes acknowledged since the last start before a kill may come.
ACKED_BEFORE_KILL = 3
#: Seconds within which a started server must acknowledge that many writes.
PROGRESS_TIMEOUT = 20.0


def song_body(title: str, person: str) -> dict[str, Any]:
    return {
        "title": title,
        "artist": "The Crashers",
        "year": "1999",
        "submitted_by": {"name": f"Person {person}", "email": f"person.{person}@example.com"},
    }


@dataclass
class WriteLog:
    """What the writers sent and what came back."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    #: title -> body, for every request that may have reached the server.
    sent: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: title -> song id, for every ``201``.
    acked: dict[str, str] = field(default_factory=dict)
    #: titles whose request failed without an answer (the write may or may not be stored).
    unanswered: list[str] = field(default_factory=list)
    #: requests refused at connect (the server was down): never reached it.
    refused: int = 0
    #: answers other than ``201``.
    unexpected: list[str] = field(default_factory=list)

    def acked_count(self) -> int:
        with self.lock:
            return len(self.acked)


class Writers(ClientThreads):
    """Client threads POSTing songs with PII, each on a new connection, until stopped."""

    def __init__(self, base_url: str, threads: int) -> None:
        super().__init__(threads)
        self.base_url = base_url
        self.log = WriteLog()

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the threads and wait for them."""
        super().stop(timeout)

    def _run(self, writer: int) -> None:
        log = self.log
        n = 0
        while not self._stop.is_set():
            n += 1
            title = f"crash-{writer}-{n}"
            body = song_body(title, f"{writer}.{n}")
            try:
                reply = request(self.base_url, "POST", "/v1/songs", json_body=body, timeout=10.0)
            except ConnectionRefusedError:
                with log.lock:
                    log.refused += 1
                self._stop.wait(0.02)
                continue
            except (OSError, http.client.HTTPException):
                with log.lock:
                    log.sent[title] = body
                    log.unanswered.append(title)
                continue
            with log.lock:
                log.sent[title] = body
                if reply.status == 201:
                    log.acked[title] = song_id_from(reply)
                else:
                    log.unexpected.append(reply.describe())


def wait_for_progress(server: SongsServer, log: WriteLog, target: int) -> None:
    deadline = time.monotonic() + PROGRESS_TIMEOUT
    while log.acked_count() < target:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the server acknowledged {log.acked_count()} writes, not {target}, within "
                f"{PROGRESS_TIMEOUT}s of its start; unexpected answers: {log.unexpected[:3]}\n"
                + server.log_tail()
            )
        time.sleep(0.01)


def check_after_crashes(server: SongsServer, store_url: str, log: WriteLog, seed: int) -> int:
    """The checks of the module docstring; returns the number of stored events."""
    where = f"(seed {seed})"
    assert not log.unexpected, f"answers other than 201 {where}: {log.unexpected[:5]}"
    events = stored_events(store_url)
    positions = [event.sequence_num for event in events]
    assert positions == list(range(1, len(events) + 1)), f"positions are not 1..N {where}: {positions}"
    assert {event.event_name for event in events} <= {"SONG_CREATED"}, where
    stored_titles = Counter(event.data["title"] for event in events)
    twice = [title for title, count in stored_titles.items() if count > 1]
    assert not twice, f"stored more than once {where}: {twice}"
    assert set(stored_titles) <= set(log.sent), f"stored but never sent {where}"
    by_title = {event.data["title"]: event for event in events}
    lost = [title for title in log.acked if title not in by_title]
    assert not lost, f"{len(lost)} acknowledged writes are missing {where}: {lost[:5]}"
    for title, song_id in log.acked.items():
        assert by_title[title].stream_id == song_id, f"{title} is stored under another id {where}"

    # PII: raw tables agree both ways; no value leaked into the event rows.
    pii_fields, pii_rows = raw_pii_rows(store_url)
    with_pii = {event_id for event_id, fields in pii_fields.items() if fields}
    assert with_pii == {event.event_id for event in events}, f"events without PII fields {where}"
    assert not with_pii - pii_rows, (
        f"events whose PII row is missing {where}: {sorted(with_pii - pii_rows)[:5]}"
    )
    assert not pii_rows - with_pii, f"PII rows without their event {where}: {sorted(pii_rows - with_pii)[:5]}"
    for event in events:
        email = log.sent[event.data["title"]]["submitted_by"]["email"]
        assert email not in json.dumps(event.data), f"PII stored in the event row {where}"

    # The restarted workers, and a fresh replay, agree; the replay merged the PII back.
    pages = replayed_pages(store_url)
    replayed = [song for _, page in pages for song in page]
    assert [song["title"] for song in replayed] == [event.data["title"] for event in events], where
    for song in replayed:
        assert song["submitted_by"] == log.sent[song["title"]]["submitted_by"], where
    workers = server.wait_workers()
    every_worker_lists(server.base_url, pages, workers=workers, seq_min=len(events), each=2, where=where)
    return len(events)


def run_crash_cycles(backend: str, server_name: str, tmp_path: Path, kills: int) -> None:
    require_backend(backend)
    require_server(server_name)
    seed = int(os.environ.get("SHIMMIE_CRASH_SEED") or random.randrange(1 << 30))
    rng = random.Random(seed)
    started = time.monotonic()
    with fresh_store_url(backend, tmp_path, "songs") as store_url:
        server = SERVERS[server_name](store_url, tmp_path / f"{server_name}.log", workers=2)
        writers: Writers | None = None
        try:
            server.start()
            writers = Writers(server.base_url, WRITER_THREADS)
            writers.start()
            downtime = 0.0
            for _ in range(kills):
                wait_for_progress(server, writers.log, writers.log.acked_count() + ACKED_BEFORE_KILL)
                time.sleep(rng.uniform(0.0, 0.4))
                down = time.monotonic()
                server.kill()
                server.start()
                downtime += time.monotonic() - down
            wait_for_progress(server, writers.log, writers.log.acked_count() + ACKED_BEFORE_KILL)
            writers.stop()
            stored = check_after_crashes(server, store_url, writers.log, seed)
        finally:
            if writers is not None:
                writers.halt()
            server.stop()
    log = writers.log
    elapsed = time.monotonic() - started
    print(
        f"\n[crash {backend} {server_name}] {kills} SIGKILLs in {elapsed:.1f}s (seed {seed}): "
        f"{len(log.acked)} writes "
        f"acknowledged, {len(log.unanswered)} unanswered, {log.refused} refused while down, {stored} stored; "
        f"{len(log.acked) / max(elapsed - downtime, 0.001):.0f} acknowledged writes/s while up; "
        f"mean kill+restart {downtime / max(kills, 1):.2f}s"
    )


@pytest.mark.parametrize("server_name", SERVERS)
@pytest.mark.parametrize("backend", DURABLE_BACKENDS)
def test_sigkill_under_write_load_loses_no_acknowledged_write(
    backend: str, server_name: str, tmp_path: Path
) -> None:
    """3 SIGKILLs of the whole server under write load (the default run)."""
    run_crash_cycles(backend, server_name, tmp_path, kills=3)


@pytest.mark.slow
@pytest.mark.parametrize("server_name", SERVERS)
@pytest.mark.parametrize("backend", DURABLE_BACKENDS)
def test_many_sigkills_under_write_load(
    backend: str, server_name: str, tmp_path: Path, pytestconfig: pytest.Config
) -> None:
    """20 SIGKILLs per backend and server; only with ``SHIMMIE_RUN_SLOW=1`` (or ``--run-slow``)."""
    if not slow_runs_enabled(pytestconfig):
        pytest.skip("long crash run: pass --run-slow (or set SHIMMIE_RUN_SLOW=1) to run it")
    run_crash_cycles(backend, server_name, tmp_path, kills=20)

"""Races on one song: two real requests at once against example_songs under gunicorn.

Each trial posts a fresh song, then sends two requests at the same moment (a barrier releases two
client threads, each on a new connection, so the kernel hands them to different workers), while
background threads keep writing other songs. After the trials, the stored events are read back
with the store API and every answer is checked against what was stored:

- rename against delete: every PUT whose rename was stored answered 200 with the renamed song
  (the answer comes from the recorded event, not from a read of the model that a DELETE
  committed just after could empty);
- delete against delete: exactly one DELETE answers 204, the other 409 or 404, and exactly one
  ``SONG_DELETED`` is stored (the delete is recorded against the version it was decided on).

Deployments: SQLite with 3 gthread workers of 2 threads, and PostgreSQL with 3 sync workers
(``postgres`` marker; skipped without a server, failed in CI). One server per deployment serves
both tests; each test is bounded in trials and in time (``--run-slow`` runs more trials).
"""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.backends import fresh_store_url, require_backend
from tests.helpers import slow_runs_enabled
from tests.serving import (
    ClientThreads,
    GunicornServer,
    Reply,
    request,
    serving,
    song_id_from,
    stored_events,
)

#: Trials per test (``--run-slow``: :data:`SLOW_TRIALS`), and the time they may take at most (the
#: test stops early, not fails).
TRIALS = 60
SLOW_TRIALS = 150
TIME_BUDGET = 20.0
#: Fewer trials than this in the budget would say little: the test fails instead.
MIN_TRIALS = 40
BACKGROUND_WRITERS = 2


@dataclass(frozen=True)
class Deployment:
    backend: str
    workers: int
    worker_class: str
    threads: int = 1


DEPLOYMENTS = [
    pytest.param(Deployment("sqlite", 3, "gthread", 2), id="sqlite-3gthread2"),
    pytest.param(Deployment("postgresql", 3, "sync"), id="postgresql-3sync", marks=pytest.mark.postgres),
]


@pytest.fixture(scope="module", params=DEPLOYMENTS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GunicornServer]:
    deployment: Deployment = request.param
    require_backend(deployment.backend)
    tmp_path = tmp_path_factory.mktemp(f"races-{deployment.backend}")
    with fresh_store_url(deployment.backend, tmp_path, "songs") as url:
        with serving(
            url,
            tmp_path / "gunicorn.log",
            workers=deployment.workers,
            worker_class=deployment.worker_class,
            threads=deployment.threads,
        ) as running:
            running.wait_workers()
            yield running


def new_song(title: str) -> dict[str, Any]:
    return {
        "title": title,
        "artist": "The Racers",
        "year": "2024",
        "submitted_by": {"name": "Rae Racer", "email": "rae@example.com"},
    }


class BackgroundWriters(ClientThreads):
    """Threads that post, rename and delete songs of their own until stopped."""

    def __init__(self, base_url: str, threads: int) -> None:
        self.base_url = base_url
        self.failures: list[str] = []
        self.writes = 0
        self.lock = threading.Lock()
        super().__init__(threads)

    def _run(self, writer: int) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            try:
                post = request(self.base_url, "POST", "/v1/songs", json_body=new_song(f"bg-{writer}-{n}"))
                song_id = song_id_from(post)
                put = request(
                    self.base_url,
                    "PUT",
                    f"/v1/songs/{song_id}",
                    json_body={"title": f"bg-{n}!", "version": 1},
                )
                replies = [post, put]
                if n % 3 == 0:
                    replies.append(request(self.base_url, "DELETE", f"/v1/songs/{song_id}"))
            except (OSError, http.client.HTTPException, AssertionError) as error:
                with self.lock:
                    self.failures.append(f"{type(error).__name__}: {error}")
                continue
            bad = [reply.describe() for reply in replies if reply.status >= 500]
            with self.lock:
                self.writes += len(replies)
                self.failures.extend(bad)


def at_once(*calls: Callable[[], Reply]) -> list[Reply]:
    """Run ``calls`` in threads released together by a barrier; their replies, in order."""
    barrier = threading.Barrier(len(calls), timeout=30)
    replies: list[Reply | None] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(index: int, call: Callable[[], Reply]) -> None:
        try:
            barrier.wait()
            replies[index] = call()
        except BaseException as error:  # re-raised in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i, call), daemon=True) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(40)
    if errors:
        raise errors[0]
    if any(reply is None for reply in replies):
        raise AssertionError("a request of the pair did not finish within 40 s")
    return [reply for reply in replies if reply is not None]


def run_trials(
    base: str, trial: Callable[[int, str], list[Reply]], config: pytest.Config
) -> list[tuple[str, list[Reply]]]:
    """Post a song and run ``trial(n, song_id)`` up to :data:`TRIALS` times (:data:`SLOW_TRIALS`
    with ``--run-slow``) within the budget, with background writers busy throughout."""
    writers = BackgroundWriters(base, BACKGROUND_WRITERS)
    results: list[tuple[str, list[Reply]]] = []
    deadline = time.monotonic() + TIME_BUDGET
    writers.start()
    try:
        for n in range(SLOW_TRIALS if slow_runs_enabled(config) else TRIALS):
            if time.monotonic() > deadline:
                break
            song_id = song_id_from(request(base, "POST", "/v1/songs", json_body=new_song(f"race-{n}")))
            results.append((song_id, trial(n, song_id)))
    finally:
        writers.stop(30)
    assert not writers.failures, writers.failures[:5]
    assert writers.writes, "the background writers wrote nothing"
    assert len(results) >= MIN_TRIALS, f"only {len(results)} trials ran within {TIME_BUDGET}s"
    return results


def events_by_song(server: GunicornServer) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for event in stored_events(server.store_url):
        found.setdefault(event.stream_id, []).append(event)
    return found


def went_wrong(bad: list[str], trials: int) -> str:
    """A failure message for ``bad`` (lines starting ``trial <n>:``)."""
    failed = {line.split(":", 1)[0] for line in bad}
    return f"{len(failed)} of {trials} trials went wrong: {bad[:5]}"


def test_a_stored_rename_always_answers_200_with_the_renamed_song(
    server: GunicornServer, pytestconfig: pytest.Config
) -> None:
    """PUT (rename) and DELETE of one song at once: a PUT whose rename was stored answers 200 with
    the renamed song at the rename's version; one that answered 200 was stored; nothing is a 5xx."""
    base = server.base_url

    def trial(n: int, song_id: str) -> list[Reply]:
        title = f"renamed-{n}"
        return at_once(
            lambda: request(base, "PUT", f"/v1/songs/{song_id}", json_body={"title": title, "version": 1}),
            lambda: request(base, "DELETE", f"/v1/songs/{song_id}"),
        )

    results = run_trials(base, trial, pytestconfig)
    stored = events_by_song(server)
    bad: list[str] = []
    outcomes: Counter[tuple[int, int]] = Counter()
    for n, (song_id, (put, delete)) in enumerate(results):
        outcomes[(put.status, delete.status)] += 1
        events = stored[song_id]
        renames = [e for e in events if e.event_name == "SONG_RENAMED"]
        deletes = [e for e in events if e.event_name == "SONG_DELETED"]
        if put.status not in (200, 404, 409) or delete.status not in (204, 404, 409):
            bad.append(f"trial {n}: unexpected statuses {put.describe()} / {delete.describe()}")
            continue
        if renames:
            (rename,) = renames
            body = put.json()
            if put.status != 200 or body.get("title") != f"renamed-{n}" or body.get("id") != song_id:
                bad.append(f"trial {n}: the rename was stored but the PUT answered {put.describe()}")
            elif body.get("version") != rename.stream_version:
                bad.append(f"trial {n}: answered version {body['version']}, stored {rename.stream_version}")
        elif put.status == 200:
            bad.append(f"trial {n}: PUT answered 200 but no rename was stored: {put.describe()}")
        if (delete.status == 204) != (len(deletes) == 1) or len(deletes) > 1:
            bad.append(f"trial {n}: DELETE answered {delete.status} and {len(deletes)} SONG_DELETED stored")
    print(f"\n[race rename/delete] {len(results)} trials; (PUT, DELETE) statuses: {dict(outcomes)}")
    assert not bad, went_wrong(bad, len(results))
    # In some trials the rename was stored while the DELETE was under way: the race was really run.
    overlapped = outcomes[(200, 204)] + outcomes[(200, 409)]
    assert overlapped, f"no trial stored the rename while the DELETE ran: {dict(outcomes)}"


def test_of_two_concurrent_deletes_exactly_one_wins(
    server: GunicornServer, pytestconfig: pytest.Config
) -> None:
    """Two DELETEs of one song at once: one 204, the other 409 (it read the song before the winner
    wrote) or 404 (after); exactly one ``SONG_DELETED`` is stored per song."""
    base = server.base_url

    def trial(n: int, song_id: str) -> list[Reply]:
        return at_once(
            lambda: request(base, "DELETE", f"/v1/songs/{song_id}"),
            lambda: request(base, "DELETE", f"/v1/songs/{song_id}"),
        )

    results = run_trials(base, trial, pytestconfig)
    stored = events_by_song(server)
    bad: list[str] = []
    outcomes: Counter[tuple[int, ...]] = Counter()
    for n, (song_id, replies) in enumerate(results):
        statuses = tuple(sorted(reply.status for reply in replies))
        outcomes[statuses] += 1
        deletes = [e for e in stored[song_id] if e.event_name == "SONG_DELETED"]
        if statuses not in ((204, 404), (204, 409)):
            bad.append(f"trial {n}: {'; '.join(reply.describe() for reply in replies)}")
        if len(deletes) != 1:
            bad.append(f"trial {n}: {len(deletes)} SONG_DELETED stored for {song_id}")
        for reply in replies:
            if reply.status in (404, 409):
                body = reply.json()
                if body.get("code") != reply.status or not body.get("message"):
                    bad.append(f"trial {n}: not the JSON error shape: {reply.describe()}")
    print(f"\n[race delete/delete] {len(results)} trials; statuses: {dict(outcomes)}")
    assert not bad, went_wrong(bad, len(results))
    # Both DELETEs read the song before either wrote in some trials: the race was really run.
    assert outcomes[(204, 409)], f"no trial had both DELETEs decide on the same version: {dict(outcomes)}"

"""Scale-out (issue 6): example_songs under gunicorn and granian, several workers on one store.

Deployments under gunicorn: PostgreSQL with 3 sync workers; SQLite with 2 sync workers, 2 gthread
workers of 4 threads, and 2 sync workers with ``--preload``. Under granian, the recommended server
(:class:`tests.serving.GranianServer`): PostgreSQL with 3 workers, SQLite with 2. Each test gets a
fresh store (a temp file, or a schema of its own that is dropped afterwards) and its own server,
always stopped afterwards.

Requests go out on a new connection each, so the kernel spreads them over the workers; the
``X-Served-By`` header (see :func:`tests.serving.songs_app`) tells which worker answered, and the
tests check that every worker was reached.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.backends import fresh_store_url, require_backend
from tests.helpers import require_server
from tests.serving import (
    GranianServer,
    GunicornServer,
    HttpClient,
    Reply,
    SongsServer,
    project,
    replayed_songs,
    request,
    run_threads,
    song_id_from,
    spread,
    stored_events,
)


@dataclass(frozen=True)
class Deployment:
    backend: str
    workers: int
    #: gunicorn's worker class, or ``"granian"`` for granian's workers.
    worker_class: str = "sync"
    threads: int = 1
    preload: bool = False

    @property
    def server_name(self) -> str:
        return "granian" if self.worker_class == "granian" else "gunicorn"

    def server(self, store_url: str, tmp_path: Path) -> SongsServer:
        """The (not started) server of this deployment."""
        log = tmp_path / f"{self.server_name}.log"
        if self.worker_class == "granian":
            return GranianServer(store_url, log, workers=self.workers)
        return GunicornServer(
            store_url,
            log,
            workers=self.workers,
            worker_class=self.worker_class,
            threads=self.threads,
            preload=self.preload,
        )


DEPLOYMENTS = [
    pytest.param(Deployment("postgresql", 3), id="postgresql-3sync", marks=pytest.mark.postgres),
    pytest.param(Deployment("sqlite", 2), id="sqlite-2sync"),
    pytest.param(Deployment("sqlite", 2, "gthread", 4), id="sqlite-2gthread4"),
    pytest.param(Deployment("sqlite", 2, preload=True), id="sqlite-2sync-preload"),
    pytest.param(
        Deployment("postgresql", 3, "granian"), id="postgresql-3granian", marks=pytest.mark.postgres
    ),
    pytest.param(Deployment("sqlite", 2, "granian"), id="sqlite-2granian"),
]


@pytest.fixture(params=DEPLOYMENTS)
def deployment(request: pytest.FixtureRequest) -> Deployment:
    chosen: Deployment = request.param
    require_backend(chosen.backend)
    require_server(chosen.server_name)
    return chosen


@pytest.fixture
def store_url(deployment: Deployment, tmp_path: Path) -> Iterator[str]:
    with fresh_store_url(deployment.backend, tmp_path, "songs") as url:
        yield url


@pytest.fixture
def server(deployment: Deployment, store_url: str, tmp_path: Path) -> Iterator[SongsServer]:
    with deployment.server(store_url, tmp_path) as running:
        running.wait_workers()
        yield running


def new_song(title: str) -> dict[str, Any]:
    return {"title": title, "artist": "The Workers", "year": "2024"}


def check_replies(replies: list[Reply], server: SongsServer) -> None:
    """Every reply carries an ``X-Seq-Num`` and names one of the server's workers."""
    workers = server.worker_pids()
    for reply in replies:
        assert reply.seq_num is not None, f"no X-Seq-Num: {reply.describe()}"
        assert reply.served_by in workers, f"not answered by a current worker {workers}: {reply.describe()}"


THREADS = 6
ROUNDS = 10
CONTESTED_SONGS = 3


def test_concurrent_writes_are_stored_once_and_every_worker_converges(
    server: SongsServer, store_url: str
) -> None:
    """Checked (PUT with a version) and unchecked (POST) writes from several threads, spread over
    every worker: each acknowledged write is stored once, each round of PUTs on one version has
    exactly one winner and 409s for the rest, positions have no gaps, and every worker answers
    ``X-Seq-Num-Min: <last>`` with what a fresh replay builds."""
    workers = server.wait_workers()
    base = server.base_url
    contested = [song_id_from(request(base, "POST", "/v1/songs", json_body=new_song(f"contested-{k}")))
                 for k in range(CONTESTED_SONGS)]  # fmt: skip
    barrier = threading.Barrier(THREADS, timeout=60)
    lock = threading.Lock()
    posts: list[tuple[str, Reply]] = []
    puts: dict[int, list[tuple[str, Reply]]] = {r: [] for r in range(ROUNDS)}

    def client(thread: int) -> None:
        for round_ in range(ROUNDS):
            title = f"post-{round_}-{thread}"
            reply = request(base, "POST", "/v1/songs", json_body=new_song(title))
            with lock:
                posts.append((title, reply))
            barrier.wait()
            song_id = contested[round_ % CONTESTED_SONGS]
            version = 1 + round_ // CONTESTED_SONGS  # each earlier round on this song had one winner
            title = f"rename-{round_}-{thread}"
            reply = request(
                base, "PUT", f"/v1/songs/{song_id}", json_body={"title": title, "version": version}
            )
            with lock:
                puts[round_].append((title, reply))
            barrier.wait()

    started = time.monotonic()
    run_threads([partial(client, t) for t in range(THREADS)], timeout=120)
    elapsed = time.monotonic() - started
    all_replies = [reply for _, reply in posts] + [reply for round_ in puts.values() for _, reply in round_]
    check_replies(all_replies, server)
    writers = {reply.served_by for reply in all_replies}
    assert writers == workers, f"the writes reached workers {writers}, not all of {workers}"

    failed_posts = [reply.describe() for _, reply in posts if reply.status != 201]
    assert not failed_posts, failed_posts
    post_ids = {title: song_id_from(reply) for title, reply in posts}
    winners: list[str] = []
    losers: list[str] = []
    last_title = {}
    for round_, attempts in puts.items():
        song_id = contested[round_ % CONTESTED_SONGS]
        version = 1 + round_ // CONTESTED_SONGS
        statuses = sorted(reply.status for _, reply in attempts)
        assert statuses == [200] + [409] * (THREADS - 1), (
            f"round {round_}: PUT {song_id} at version {version} from {THREADS} threads answered {statuses}: "
            + "; ".join(reply.describe() for _, reply in attempts)
        )
        for title, reply in attempts:
            body = reply.json()
            if reply.status == 200:
                winners.append(title)
                last_title[song_id] = title
                assert body["id"] == song_id and body["title"] == title, reply.describe()
                assert body["version"] >= version + 1, reply.describe()
            else:
                losers.append(title)
                assert body["code"] == 409 and body["status"] == "Conflict", reply.describe()
                assert body["conflicts"] == [
                    {"stream_id": song_id, "expected": version, "actual": version + 1}
                ], reply.describe()

    # The store: every acknowledged write exactly once, nothing refused, no gaps.
    events = stored_events(store_url)
    positions = [event.sequence_num for event in events]
    assert positions == list(range(1, len(events) + 1)), f"positions are not 1..N: {positions}"
    assert len(events) == CONTESTED_SONGS + len(posts) + len(winners)
    created = [event for event in events if event.event_name == "SONG_CREATED"]
    created_streams = Counter(event.stream_id for event in created)
    assert all(count == 1 for count in created_streams.values()), created_streams.most_common(3)
    assert set(created_streams) == set(contested) | set(post_ids.values())
    titles_by_stream = {event.stream_id: event.data["title"] for event in created}
    for title, song_id in post_ids.items():
        assert titles_by_stream[song_id] == title
    renamed = Counter(event.data["title"] for event in events if event.event_name == "SONG_RENAMED")
    assert renamed == Counter(winners), f"stored renames {renamed} differ from acknowledged ones {winners}"
    assert not set(losers) & set(renamed), "a PUT answered 409 was stored"
    last = len(events)
    assert max(reply.seq_num or 0 for reply in all_replies) == last

    # Every worker converges to what a fresh replay builds.
    expected = project(replayed_songs(store_url))
    assert [song["id"] for song in expected] == [event.stream_id for event in created]
    for song_id, title in last_title.items():
        assert next(song for song in expected if song["id"] == song_id)["title"] == title
    answers = spread(base, "/v1/songs", workers=workers, seq_min=last, each=4)
    assert {reply.served_by for reply in answers} == workers, "not every worker answered"
    for reply in answers:
        assert reply.status == 200, reply.describe()
        assert (reply.seq_num or 0) >= last, reply.describe()
        assert project(reply.json()) == expected, f"worker {reply.served_by} differs from a fresh replay"
    print(
        f"\n[scale-out] {len(all_replies)} writes ({len(posts)} POST, {len(all_replies) - len(posts)} PUT, "
        f"{len(losers)} x 409) in {elapsed:.2f}s = {len(all_replies) / elapsed:.0f} writes/s "
        f"with {THREADS} client threads over {len(workers)} workers; {len(answers)} converged reads"
    )


READERS = 4
SONGS_PER_READER = 3
READS = 20


def test_read_your_writes_across_workers(server: SongsServer, store_url: str) -> None:
    """POST, then GET the song 20 times with ``X-Seq-Num-Min: <the POST's X-Seq-Num>`` on new
    connections (so other workers answer too): always 200 with the song."""
    workers = server.wait_workers()
    base = server.base_url
    lock = threading.Lock()
    reads: list[tuple[str, str, Reply, Reply]] = []

    def client(reader: int) -> None:
        for n in range(SONGS_PER_READER):
            title = f"ryw-{reader}-{n}"
            post = request(base, "POST", "/v1/songs", json_body=new_song(title))
            song_id = song_id_from(post)
            assert post.seq_num is not None and post.seq_num >= 1, post.describe()
            for _ in range(READS):
                reply = request(
                    base, "GET", f"/v1/songs/{song_id}", headers={"X-Seq-Num-Min": str(post.seq_num)}
                )
                with lock:
                    reads.append((song_id, title, post, reply))

    run_threads([partial(client, r) for r in range(READERS)], timeout=120)
    assert len(reads) == READERS * SONGS_PER_READER * READS
    check_replies([reply for *_, reply in reads], server)
    for song_id, title, post, reply in reads:
        assert reply.status == 200, (
            f"{reply.describe()} (POST answered by {post.served_by}, seq {post.seq_num})"
        )
        song = reply.json()
        assert (song["id"], song["title"], song["version"]) == (song_id, title, 1), reply.describe()
        assert (reply.seq_num or 0) >= (post.seq_num or 0), reply.describe()
    elsewhere = [reply for _, _, post, reply in reads if reply.served_by != post.served_by]
    assert elsewhere, "every read was answered by the worker that wrote: nothing crossed workers"
    assert {reply.served_by for *_, reply in reads} == workers
    # X-Seq-Num of a write is at least the write's own position.
    positions = {event.stream_id: event.sequence_num for event in stored_events(store_url)}
    for song_id, _, post, _ in reads:
        assert (post.seq_num or 0) >= positions[song_id], post.describe()
    waits = sorted(reply.elapsed for reply in elsewhere)
    print(
        f"\n[read-your-writes] {len(reads)} reads, {len(elsewhere)} by another worker than the writer; "
        f"their latency median {waits[len(waits) // 2] * 1000:.1f} ms, max {waits[-1] * 1000:.1f} ms"
    )


FOLLOW_TIMEOUT = 5.0
FOLLOW_SONGS = 3


def poll_until_every_worker_shows(
    base: str, song_id: str, workers: set[int], written: float, timeout: float
) -> tuple[dict[int, float], list[Reply]]:
    """Plain GETs of the song (no ``X-Seq-Num-Min``) from several threads until every worker
    answered 200, or ``timeout``; return when each worker first showed it (s after ``written``)."""
    seen: dict[int, float] = {}
    replies: list[Reply] = []
    lock = threading.Lock()
    deadline = written + timeout

    def poll() -> None:
        while time.monotonic() < deadline:
            with lock:
                if set(seen) >= workers:
                    return
            reply = request(base, "GET", f"/v1/songs/{song_id}", timeout=timeout)
            now = time.monotonic()
            with lock:
                replies.append(reply)
                if reply.status == 200 and reply.served_by is not None:
                    seen.setdefault(reply.served_by, now - written)

    run_threads([poll for _ in range(2 * len(workers))], timeout=timeout + 20)
    return seen, replies


def test_a_worker_applies_another_workers_event_without_being_asked(server: SongsServer) -> None:
    """After one POST, every worker shows the song to plain GETs (no ``X-Seq-Num-Min``, no command
    that would catch up) within 5 s: the background follower applied it."""
    workers = server.wait_workers()
    base = server.base_url
    # A first request starts each worker's stack (SHIMMIE_AUTO_STARTUP), and with it its follower.
    warm = spread(base, "/v1/songs", workers=workers, each=1)
    assert {reply.served_by for reply in warm} == workers
    latencies: list[float] = []
    writer = HttpClient(base)  # one keep-alive connection (sync workers close it after each answer)
    for n in range(FOLLOW_SONGS):
        post = writer.post_json("/v1/songs", new_song(f"followed-{n}"))
        written = time.monotonic()
        song_id = song_id_from(post)
        seen, replies = poll_until_every_worker_shows(base, song_id, workers, written, FOLLOW_TIMEOUT)
        unexpected = [reply.describe() for reply in replies if reply.status not in (200, 404)]
        assert not unexpected, unexpected
        missing = workers - set(seen)
        assert not missing, (
            f"workers {missing} did not show song {song_id} (written by {post.served_by} at position "
            f"{post.seq_num}) within {FOLLOW_TIMEOUT}s; their last X-Seq-Num: "
            f"{ {r.served_by: r.seq_num for r in replies if r.served_by in missing} }"
        )
        latencies.extend(delay for pid, delay in seen.items() if pid != post.served_by)
    writer.close()
    assert latencies, "the writer was the only worker"
    latencies.sort()
    median = latencies[len(latencies) // 2]
    print(
        f"\n[follower] another worker showed a new song after median {median * 1000:.0f} ms, "
        f"max {latencies[-1] * 1000:.0f} ms (upper bounds: the first plain GET that showed it)"
    )

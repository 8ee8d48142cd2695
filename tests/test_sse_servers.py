"""The event stream under a real server with two workers, on SQLite and PostgreSQL.

example_songs under gunicorn (``gthread``, so an open stream holds one thread, not a worker): an
event written through one worker reaches a stream served by the other (the store's follower wakes
it), and a stream cut again and again while writers post songs, resumed each time with
``Last-Event-ID`` on whichever worker the new connection lands, gets every event once, in order.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.backends import fresh_store_url, require_backend
from tests.helpers import SONGS_TOKEN
from tests.serving import GunicornServer, request, serving, song_id_from, stored_events
from tests.sse_client import SseClient, SseMessage

STREAM = "/admin/events/stream"
AUTH = {"Authorization": f"Bearer {SONGS_TOKEN}"}

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GunicornServer]:
    backend: str = request.param
    require_backend(backend)
    tmp_path = tmp_path_factory.mktemp(f"sse-{backend}")
    with fresh_store_url(backend, tmp_path, "songs") as url:
        with serving(
            url,
            tmp_path / "gunicorn.log",
            workers=2,
            worker_class="gthread",
            threads=8,
            env={"FLASK_SHIMMIE_SSE_HEARTBEAT": "0.5"},
        ) as running:
            running.wait_workers()
            yield running


def new_song(title: str) -> dict[str, Any]:
    return {"title": title, "artist": "The Streamers", "year": "2024"}


def post_song(base_url: str, title: str) -> tuple[str, int]:
    """Post a song on a new connection; return its id and the pid of the worker that stored it."""
    reply = request(base_url, "POST", "/v1/songs", json_body=new_song(title))
    assert reply.served_by is not None
    return song_id_from(reply), reply.served_by


def test_an_event_written_through_one_worker_reaches_a_stream_on_the_other(server: GunicornServer) -> None:
    with SseClient(server.base_url, STREAM, AUTH) as client:
        assert client.status == 200
        streaming = int(client.header["x-served-by"])
        assert client.next_message() is not None
        for attempt in range(60):
            song_id, writer = post_song(server.base_url, f"cross-{attempt}")
            if writer != streaming:
                break
        else:
            pytest.fail(f"60 posts all landed on worker {streaming}, the one streaming")
        started = time.monotonic()
        while True:
            (message,) = client.events(1, timeout=5)
            event = message.json()
            if event["event_name"] == "SONG_CREATED" and event["stream_id"] == song_id:
                break
        # Within the follower's latency (LISTEN/NOTIFY; SQLite's poll), not a heartbeat or a timeout.
        assert time.monotonic() - started < 2


class SongWriters:
    """Threads posting songs over new connections until stopped."""

    def __init__(self, base_url: str, threads: int) -> None:
        self.base_url = base_url
        self.stop = threading.Event()
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self.run, args=(n,), daemon=True) for n in range(threads)]

    def run(self, writer: int) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            try:
                post_song(self.base_url, f"w{writer}-{n}")
            except Exception as error:
                self.failures.append(f"{type(error).__name__}: {error}")
            time.sleep(0.01)

    def __enter__(self) -> SongWriters:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(20)


def test_a_cut_stream_resumed_on_any_worker_gets_every_event_once(server: GunicornServer) -> None:
    rng = random.Random(11)
    received: list[SseMessage] = []
    workers: set[int] = set()
    last = str(len(stored_events(server.store_url)))
    with SongWriters(server.base_url, 3) as writers:
        for _ in range(12):
            with SseClient(server.base_url, STREAM, {**AUTH, "Last-Event-ID": last}) as client:
                assert client.status == 200
                workers.add(int(client.header["x-served-by"]))
                opening = client.next_message()
                assert opening is not None and opening.id == last
                batch = client.events(rng.randint(1, 15), timeout=20)
                client.drop()  # mid-stream, while the writers write
            received.extend(batch)
            last = batch[-1].id or ""
    assert not writers.failures, writers.failures[:3]
    # What the writers stored after the last event seen is read on a last connection.
    stored = stored_events(server.store_url)
    first = int(received[0].id or 0)
    missing = len(stored) - int(last)
    if missing:
        with SseClient(server.base_url, STREAM, {**AUTH, "Last-Event-ID": last}) as client:
            received.extend(client.events(missing, timeout=20))
    expected = [event for event in stored if event.sequence_num >= first]
    assert [int(m.id or 0) for m in received] == [event.sequence_num for event in expected]
    assert [m.json()["event_id"] for m in received] == [event.event_id for event in expected]
    assert len(workers) == 2, (
        f"every resumption landed on worker {workers}: the test proved less than it says"
    )

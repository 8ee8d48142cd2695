"""Store outage (issue 8): PostgreSQL goes away under load, without stopping the shared server.

A small TCP proxy in the test (127.0.0.1:<free port> -> the PostgreSQL server) stands between
example_songs (under gunicorn, 2 sync workers) and the database. :meth:`TcpProxy.cut` closes every
connection through it and refuses new ones; :meth:`TcpProxy.restore` accepts again on the same
port. Another app on the same schema, in the test process and connected directly (a host the
outage does not reach), keeps writing meanwhile.

While cut, writes answer 503 JSON (never 500, never a hang), and a write refused while cut is not
stored; afterwards the app recovers by itself (no restart), its background follower picks up the
other app's events again, every acknowledged write is stored exactly once, positions have no
gaps, PII rows and events match, and every worker equals a fresh replay.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from flask import Flask

from example_songs import stack
from tests.backends import fresh_store_url, postgres_base_url, require_backend
from tests.helpers import songs_app
from tests.serving import (
    HOST,
    ClientThreads,
    GunicornServer,
    Reply,
    every_worker_lists,
    free_port,
    raw_pii_rows,
    replayed_pages,
    request,
    serving,
    song_id_from,
    spread,
    stored_events,
)

pytestmark = pytest.mark.postgres

#: Seconds a write may take to be refused while the store is unreachable ("a few seconds").
FAIL_FAST_SECONDS = 5.0
#: Seconds after which a request counts as hanging, whatever the cause.
HANG_SECONDS = 30.0
#: Seconds the app gets to acknowledge writes again after the store is back.
RECOVERY_SECONDS = 30.0
#: Seconds the cut lasts at least (long enough for pools and listeners to notice and back off).
CUT_MIN_SECONDS = 3.0
#: Seconds the cut may last at most while waiting for refused writes.
CUT_MAX_SECONDS = 30.0
WRITER_THREADS = 3


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target``, one pair of pump threads per connection.

    :meth:`cut` closes every proxied connection (both sides) and the listening socket, so new
    connections are refused; :meth:`restore` listens again on the same port.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self.accepted = 0
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._generation = 0
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def is_cut(self) -> bool:
        return self._listener is None

    def start(self) -> None:
        self._listen()

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        deadline = time.monotonic() + 5
        while True:
            try:
                listener.bind((HOST, self.port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    listener.close()
                    raise
                time.sleep(0.05)
        listener.listen(128)
        listener.settimeout(0.05)
        stop = threading.Event()
        with self._lock:
            self._generation += 1
            self._listener = listener
            self._stop = stop
            generation = self._generation
        self._acceptor = threading.Thread(target=self._accept, args=(listener, stop, generation), daemon=True)
        self._acceptor.start()

    def _accept(self, listener: socket.socket, stop: threading.Event, generation: int) -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if generation != self._generation or stop.is_set():
                    client.close()
                    upstream.close()
                    continue
                self._sockets.update((client, upstream))
                self.accepted += 1
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self._drop(src, dst)

    def _drop(self, *socks: socket.socket) -> None:
        with self._lock:
            for sock in socks:
                self._sockets.discard(sock)
        for sock in socks:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with suppress(OSError):
                sock.close()

    def cut(self) -> None:
        """Close every connection and stop listening; returns once new connections are refused."""
        with self._lock:
            self._generation += 1
            self._stop.set()
            listener, self._listener = self._listener, None
            socks = list(self._sockets)
            self._sockets.clear()
        if listener is not None:
            listener.close()
        if self._acceptor is not None:
            self._acceptor.join(2)
        self._drop(*socks)

    def restore(self) -> None:
        """Listen again on the same port."""
        if self._listener is None:
            self._listen()

    def close(self) -> None:
        self.cut()


def proxied(url: str, port: int) -> str:
    """``url`` with its host and port replaced by ``127.0.0.1:<port>`` (the user kept)."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{HOST}:{port}" if userinfo else f"{HOST}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@dataclass(frozen=True)
class Outage:
    """The proxied URL gunicorn uses, the direct URL of the same schema, and the proxy."""

    url: str
    direct_url: str
    proxy: TcpProxy


@pytest.fixture
def outage() -> Iterator[Outage]:
    require_backend("postgresql")
    target = urlsplit(postgres_base_url())
    with fresh_store_url("postgresql") as direct:
        proxy = TcpProxy((target.hostname or HOST, target.port or 5432))
        proxy.start()
        try:
            yield Outage(proxied(direct, proxy.port), direct, proxy)
        finally:
            proxy.close()


@pytest.fixture
def server(outage: Outage, tmp_path: Path) -> Iterator[GunicornServer]:
    with serving(outage.url, tmp_path / "gunicorn.log", workers=2) as running:
        # A first request starts each worker's stack (and its follower) while the store is there.
        workers = running.wait_workers()
        warm = spread(running.base_url, "/v1/songs", workers=workers, each=1)
        assert {reply.served_by for reply in warm} == workers
        yield running


@pytest.fixture
def other_app(outage: Outage) -> Iterator[Flask]:
    """example_songs in this process, on the same schema, connected directly (not through the proxy)."""
    app = songs_app({"SHIMMIE_EVENT_STORE": outage.direct_url, "TESTING": True})
    with app.app_context():
        stack.startup()
    try:
        yield app
    finally:
        stack.shutdown(app)


def song_body(title: str) -> dict[str, Any]:
    return {
        "title": title,
        "artist": "The Outages",
        "year": 2003,
        "submitted_by": {"name": f"Person {title}", "email": f"{title}@example.com"},
    }


def check_503(reply: Reply) -> None:
    """A refused write: 503 JSON in the stack's error shape, with an ``X-Seq-Num``."""
    assert reply.status == 503, reply.describe()
    assert (reply.header("Content-Type") or "").startswith("application/json"), reply.describe()
    body = reply.json()
    assert body["code"] == 503 and body["status"] == "Service Unavailable", reply.describe()
    assert isinstance(body["message"], str) and body["message"], reply.describe()
    assert reply.seq_num is not None, reply.describe()


def test_a_write_is_refused_within_seconds_while_the_store_is_cut(
    outage: Outage, server: GunicornServer
) -> None:
    """With the database cut, POST after POST answers 503 JSON within a few seconds: not only the
    first few (which find their pooled connection broken), also those that need a new connection."""
    base = server.base_url
    song_id_from(request(base, "POST", "/v1/songs", json_body=song_body("before-the-cut")))
    outage.proxy.cut()
    try:
        deadline = time.monotonic() + 25
        for n in range(25):
            if time.monotonic() > deadline:
                break
            reply = request(
                base, "POST", "/v1/songs", json_body=song_body(f"during-{n}"), timeout=HANG_SECONDS
            )
            check_503(reply)
            assert reply.elapsed <= FAIL_FAST_SECONDS, (
                f"write {n + 1} during the cut took {reply.elapsed:.1f}s to be refused, more than "
                f"{FAIL_FAST_SECONDS}s: {reply.describe()}"
            )
    finally:
        outage.proxy.restore()


@dataclass(frozen=True)
class Attempt:
    writer: int
    title: str
    sent_at: float
    done_at: float
    reply: Reply | None
    error: str | None


class Writers(ClientThreads):
    """Client threads POSTing songs with PII to gunicorn, each on a new connection, until stopped."""

    def __init__(self, base_url: str, threads: int) -> None:
        self.base_url = base_url
        self.attempts: list[Attempt] = []
        self.lock = threading.Lock()
        super().__init__(threads)

    def stop(self, timeout: float = HANG_SECONDS + 10) -> None:
        super().stop(timeout)

    def _run(self, writer: int) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            title = f"outage-{writer}-{n}"
            sent_at = time.monotonic()
            reply: Reply | None = None
            error: str | None = None
            try:
                reply = request(
                    self.base_url, "POST", "/v1/songs", json_body=song_body(title), timeout=HANG_SECONDS
                )
            except (OSError, http.client.HTTPException) as failure:
                error = f"{type(failure).__name__}: {failure}"
            with self.lock:
                self.attempts.append(Attempt(writer, title, sent_at, time.monotonic(), reply, error))
            if reply is None or reply.status != 201:
                self._stop.wait(0.02)  # as a client would, rather than spin

    def snapshot(self) -> list[Attempt]:
        with self.lock:
            return list(self.attempts)

    def wait_until(self, done: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done(self.snapshot()):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{what} within {timeout}s; attempts so far: {describe(self.snapshot())}"
                )
            time.sleep(0.02)


def describe(attempts: list[Attempt]) -> str:
    counts = Counter(
        (attempt.reply.status if attempt.reply is not None else attempt.error or "?") for attempt in attempts
    )
    return ", ".join(f"{what}: {count}" for what, count in counts.items())


def post_directly(app: Flask, title: str) -> tuple[str, int]:
    """POST through the other app (directly connected); return the song id and its X-Seq-Num."""
    response = app.test_client().post("/v1/songs", json=song_body(title))
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.headers["Location"].rsplit("/", 1)[1], int(response.headers["X-Seq-Num"])


def test_the_app_recovers_by_itself_after_a_store_outage(
    outage: Outage, server: GunicornServer, other_app: Flask
) -> None:
    """Writers keep POSTing through a cut of 3 s or more and the restore; the other app writes during
    the cut. See the module docstring for what must hold."""
    base = server.base_url
    workers = server.wait_workers()
    writers = Writers(base, WRITER_THREADS)
    writers.start()
    direct_titles: dict[str, str] = {}
    try:
        writers.wait_until(
            lambda attempts: sum(1 for a in attempts if a.reply is not None and a.reply.status == 201) >= 6,
            20,
            "the writers did not get 6 writes acknowledged before the cut",
        )
        outage.proxy.cut()
        cut_at = time.monotonic()
        # The other host keeps writing through the outage.
        for n in range(3):
            title = f"direct-during-{n}"
            direct_titles[title] = post_directly(other_app, title)[0]

        def refused_while_cut(attempts: list[Attempt]) -> bool:
            refused = {a.writer for a in attempts if a.sent_at > cut_at and a.reply and a.reply.status == 503}
            return len(refused) == WRITER_THREADS

        writers.wait_until(
            refused_while_cut, CUT_MAX_SECONDS, "not every writer had a write refused while cut"
        )
        time.sleep(max(0.0, cut_at + CUT_MIN_SECONDS - time.monotonic()))
        restore_at = time.monotonic()
        outage.proxy.restore()

        def recovered(attempts: list[Attempt]) -> bool:
            ok = Counter(
                a.writer for a in attempts if a.sent_at > restore_at and a.reply and a.reply.status == 201
            )
            return len(ok) == WRITER_THREADS and min(ok.values()) >= 2

        writers.wait_until(recovered, RECOVERY_SECONDS, "the app did not take writes again by itself")
    finally:
        outage.proxy.restore()
        writers.stop()
    attempts = writers.snapshot()

    # While cut: 503 JSON, never 500, never a hang; afterwards: 201 again without a restart.
    hung = [f"{a.title}: {a.error}" for a in attempts if a.reply is None]
    assert not hung, f"requests without an answer (hang or dropped): {hung[:5]}"
    unexpected = [a.reply.describe() for a in attempts if a.reply and a.reply.status not in (201, 503)]
    assert not unexpected, f"answers other than 201 and 503: {unexpected[:5]}"
    for attempt in attempts:
        if attempt.reply is not None and attempt.reply.status == 503:
            check_503(attempt.reply)
    within_cut = [a for a in attempts if a.sent_at > cut_at and a.done_at < restore_at]
    assert within_cut and all(a.reply and a.reply.status == 503 for a in within_cut), describe(within_cut)
    acked = {a.title: song_id_from(a.reply) for a in attempts if a.reply and a.reply.status == 201}
    first_ok = min(
        a.done_at for a in attempts if a.sent_at > restore_at and a.reply and a.reply.status == 201
    )

    # The follower follows again: the other app's new song reaches every worker without a request
    # that would catch up (plain GETs only).
    follow_id, follow_seq = post_directly(other_app, "direct-after")
    direct_titles["direct-after"] = follow_id
    written = time.monotonic()
    seen: dict[int, float] = {}
    while set(seen) < workers and time.monotonic() - written < 20:
        reply = request(base, "GET", f"/v1/songs/{follow_id}")
        if reply.status == 200 and reply.served_by is not None:
            seen.setdefault(reply.served_by, time.monotonic() - written)
        time.sleep(0.01)
    assert set(seen) == workers, (
        f"workers {workers - set(seen)} never showed song {follow_id} (position {follow_seq})"
    )

    # Nothing half-written: no gaps, each acknowledged write once, no refused write stored, PII rows
    # exactly for the events that have PII fields.
    events = stored_events(outage.direct_url)
    positions = [event.sequence_num for event in events]
    assert positions == list(range(1, len(events) + 1)), f"positions are not 1..N: {positions}"
    stored = Counter(event.data["title"] for event in events)
    assert all(count == 1 for count in stored.values()), stored.most_common(3)
    by_title = {event.data["title"]: event for event in events}
    for title, song_id in {**acked, **direct_titles}.items():
        assert title in by_title, f"acknowledged write {title} is not stored"
        assert by_title[title].stream_id == song_id
    refused_stored = [a.title for a in within_cut if a.title in stored]
    assert not refused_stored, f"writes refused with 503 while cut were stored: {refused_stored}"
    pii_fields, pii_rows = raw_pii_rows(outage.direct_url)
    with_pii = {event_id for event_id, fields in pii_fields.items() if fields}
    assert with_pii == pii_rows == {event.event_id for event in events}

    # Every worker equals a fresh replay.
    every_worker_lists(base, replayed_pages(outage.direct_url), workers=workers, seq_min=len(events), each=2)

    refusals = sorted(a.done_at - a.sent_at for a in within_cut)
    print(
        f"\n[outage] {len(attempts)} writes to gunicorn: {len(acked)} acknowledged, "
        f"{sum(1 for a in attempts if a.reply and a.reply.status == 503)} refused with 503; "
        f"503 latency while cut min {refusals[0]:.1f}s max {refusals[-1]:.1f}s; cut lasted "
        f"{restore_at - cut_at:.1f}s; first write acknowledged {first_ok - restore_at:.1f}s after the "
        f"restore; the follower showed the other app's song on every worker after "
        f"{max(seen.values()):.2f}s"
    )

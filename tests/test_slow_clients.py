"""Slow clients against the recommended deployment, ``python -m example_songs.serve`` (granian).

Each test opens many connections that trickle a request a byte at a time, the way a slowloris
attack does, while a normal client polls ``/admin/health`` and ``GET /v1/songs/<id>`` on new
connections. The deployment runs as ``docs/stores.md`` says, on a free 127.0.0.1 port with a SQLite store
and a short header timeout, in a process group of its own that is always stopped
(:class:`tests.serving.GranianServer` with example_songs' own app factory). A control test
runs the same attack against ``gunicorn -c example_songs/gunicorn.conf.py`` alone, to show the
attack is one that holds up a server whose application threads read the requests.
"""

from __future__ import annotations

import http.client
import re
import selectors
import socket
import statistics
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from example_songs import serve
from tests.helpers import require_server
from tests.serving import HOST, GranianServer, GunicornServer, SongsServer, request, song_id_from

#: The header timeout the deployment runs with here: short, so that the tests are quick.
HEADER_TIMEOUT = 1.5
#: How late after the timeout a slow connection may still be closed (a loaded CI machine).
CLOSE_SLACK = 2.0
#: Every normal request must be answered within this many seconds.
ANSWER_BOUND = 1.0
SLOW_CONNECTIONS = 64
#: Seconds between two bytes of a slow request: fast enough that no idle timeout ends it.
TRICKLE_INTERVAL = 0.25
POLL_SECONDS = 4.0
POLL_INTERVAL = 0.25


# -- the deployment ------------------------------------------------------------------------------


def store_url(tmp: Path) -> str:
    return f"sqlite:///{tmp / 'songs.db'}"


def warm_up(server: SongsServer) -> None:
    """Send new connections until every worker most likely answered once.

    Each worker starts its stack on its first request, which is not the latency under test.
    """
    for _ in range(30):
        request(server.base_url, "GET", "/v1/songs", timeout=10.0)


@pytest.fixture(scope="module")
def recommended(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GranianServer]:
    """``python -m example_songs.serve`` with the default workers and a short header timeout."""
    require_server("granian")
    tmp = tmp_path_factory.mktemp("serve")
    deployment = GranianServer(
        store_url(tmp),
        tmp / "serve.log",
        workers=serve.DEFAULT_WORKERS,
        header_timeout=HEADER_TIMEOUT,
        target=serve.TARGET,
    )
    with deployment:
        warm_up(deployment)
        yield deployment


@pytest.fixture(scope="module")
def song_path(recommended: GranianServer) -> str:
    reply = request(
        recommended.base_url,
        "POST",
        "/v1/songs",
        json_body={"title": "Slow", "artist": "Loris", "year": 2009},
    )
    return f"/v1/songs/{song_id_from(reply)}"


# -- the slow clients ---------------------------------------------------------------------------

#: A GET whose headers never end: the request line, then one header that grows a byte at a time.
SLOW_HEADERS = (b"GET /v1/songs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ", b"a" * 4096)
#: A POST with whole headers whose JSON body comes a byte at a time.
SLOW_BODY = (
    b"POST /v1/songs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer admin-token\r\n"
    b"Content-Type: application/json\r\nContent-Length: 4096\r\n\r\n",
    b"{" + b" " * 4095,
)
#: A connection that never sends a byte.
SILENT = (b"", b"")


@dataclass
class SlowConnection:
    sock: socket.socket
    opened: float
    sent: int = 0
    next_send: float = 0.0


@dataclass
class SlowClients:
    """``count`` connections that each send ``head`` and then ``trickle`` a byte at a time.

    One thread drives them all. A connection the server closes is recorded with its lifetime and
    opened again, so that ``count`` stay open until :meth:`stop` (or ``max_seconds``).
    """

    port: int
    count: int
    head: bytes
    trickle: bytes
    interval: float = TRICKLE_INTERVAL
    max_seconds: float = 30.0
    #: Lifetimes (s) of the connections the server closed.
    closed_after: list[float] = field(default_factory=list)
    opened: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _ages_at_stop: list[float] = field(default_factory=list)
    _errors: list[str] = field(default_factory=list)

    def __enter__(self) -> SlowClients:
        self._thread = threading.Thread(target=self._run, name="slow-clients", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Close every connection and wait for the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            assert not self._thread.is_alive(), "the slow clients' thread did not stop"

    def ages_at_stop(self) -> list[float]:
        """How long each connection still open at :meth:`stop` had been open."""
        return list(self._ages_at_stop)

    def _open(self, selector: selectors.BaseSelector) -> None:
        try:
            sock = socket.create_connection((HOST, self.port), timeout=2.0)
        except OSError as error:
            self._errors.append(f"connect: {error}")
            return
        now = time.monotonic()
        try:
            sock.sendall(self.head)
        except OSError:
            sock.close()
            self.closed_after.append(time.monotonic() - now)
            return
        sock.setblocking(False)
        self.opened += 1
        selector.register(
            sock, selectors.EVENT_READ, SlowConnection(sock, now, next_send=now + self.interval)
        )

    def _closed(self, selector: selectors.BaseSelector, conn: SlowConnection, by_server: bool) -> None:
        selector.unregister(conn.sock)
        conn.sock.close()
        if by_server:
            self.closed_after.append(time.monotonic() - conn.opened)

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        deadline = time.monotonic() + self.max_seconds
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                while len(selector.get_map()) < self.count and not self._stop.is_set():
                    self._open(selector)
                for key, _ in selector.select(timeout=0.05):
                    conn: SlowConnection = key.data
                    try:
                        data = conn.sock.recv(65536)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        self._closed(selector, conn, by_server=True)
                now = time.monotonic()
                for key in list(selector.get_map().values()):
                    conn = key.data
                    if conn.sent < len(self.trickle) and now >= conn.next_send:
                        try:
                            conn.sock.send(self.trickle[conn.sent : conn.sent + 1])
                        except BlockingIOError:
                            continue
                        except OSError:
                            self._closed(selector, conn, by_server=True)
                            continue
                        conn.sent += 1
                        conn.next_send = now + self.interval
        finally:
            now = time.monotonic()
            for key in list(selector.get_map().values()):
                self._ages_at_stop.append(now - key.data.opened)
                self._closed(selector, key.data, by_server=False)
            selector.close()


# -- the normal client --------------------------------------------------------------------------


@dataclass
class Sample:
    path: str
    seconds: float
    outcome: str  # "200", another status, or the error

    def describe(self) -> str:
        return f"GET {self.path}: {self.outcome} in {self.seconds:.3f}s"


def poll(
    base_url: str, paths: Sequence[str], *, seconds: float, stop_at_first_slow: bool = False
) -> list[Sample]:
    """GET each path on a new connection every :data:`POLL_INTERVAL` s for ``seconds``.

    A request may take up to :data:`ANSWER_BOUND` + 1 s before it counts as failed.
    """
    samples: list[Sample] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        tick = time.monotonic()
        for path in paths:
            started = time.monotonic()
            try:
                outcome = str(request(base_url, "GET", path, timeout=ANSWER_BOUND + 1.0).status)
            except (OSError, http.client.HTTPException) as error:
                outcome = f"{type(error).__name__}: {error}"
            sample = Sample(path, time.monotonic() - started, outcome)
            samples.append(sample)
            if stop_at_first_slow and not answered_in_time(sample):
                return samples
        time.sleep(max(0.0, POLL_INTERVAL - (time.monotonic() - tick)))
    return samples


def answered_in_time(sample: Sample) -> bool:
    return sample.outcome == "200" and sample.seconds <= ANSWER_BOUND


def summary(samples: Sequence[Sample]) -> str:
    times = [sample.seconds for sample in samples]
    if not times:
        return "no samples"
    return f"{len(times)} requests, median {statistics.median(times):.3f}s, max {max(times):.3f}s"


def assert_all_answered(samples: Sequence[Sample]) -> None:
    late = [sample.describe() for sample in samples if not answered_in_time(sample)]
    assert samples, "the normal client sent no request"
    assert not late, f"{len(late)} normal requests not answered within {ANSWER_BOUND}s: {late[:5]}"


# -- the recommended deployment -----------------------------------------------------------------


def test_slow_headers_neither_hold_up_other_clients_nor_stay_connected(
    recommended: GranianServer, song_path: str
) -> None:
    with SlowClients(recommended.port, SLOW_CONNECTIONS, *SLOW_HEADERS) as slow:
        time.sleep(0.5)
        samples = poll(recommended.base_url, ["/admin/health", song_path], seconds=POLL_SECONDS)
    assert_all_answered(samples)
    closed = slow.closed_after
    assert len(closed) >= SLOW_CONNECTIONS, (
        f"only {len(closed)} of {slow.opened} slow connections were closed by the server"
    )
    assert min(closed) >= HEADER_TIMEOUT * 0.8, f"closed before the header timeout: {sorted(closed)[:5]}"
    assert max(closed) <= HEADER_TIMEOUT + CLOSE_SLACK, f"closed late: {sorted(closed)[-5:]}"
    overdue = [age for age in slow.ages_at_stop() if age > HEADER_TIMEOUT + CLOSE_SLACK]
    assert not overdue, f"slow connections still open after {HEADER_TIMEOUT}s: {overdue}"


def test_connections_that_send_nothing_are_closed_after_the_header_timeout(
    recommended: GranianServer,
) -> None:
    with SlowClients(recommended.port, 8, *SILENT) as silent:
        waited = HEADER_TIMEOUT + CLOSE_SLACK + 1.0
        deadline = time.monotonic() + waited
        while len(silent.closed_after) < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
    closed = silent.closed_after
    assert len(closed) >= 8, f"{8 - len(closed)} silent connections were still open after {waited}s"
    assert all(HEADER_TIMEOUT * 0.8 <= age <= HEADER_TIMEOUT + CLOSE_SLACK for age in closed), sorted(closed)


def test_a_kept_alive_connection_is_closed_when_no_request_follows(recommended: GranianServer) -> None:
    conn = http.client.HTTPConnection(HOST, recommended.port, timeout=HEADER_TIMEOUT + CLOSE_SLACK + 2)
    try:
        conn.request("GET", "/admin/health")
        response = conn.getresponse()
        assert response.status == 200, response.read()
        response.read()
        assert not response.will_close
        answered = time.monotonic()
        sock = conn.sock
        assert sock is not None
        assert sock.recv(1) == b"", "the server sent more than the response"
        idle = time.monotonic() - answered
    finally:
        conn.close()
    assert HEADER_TIMEOUT * 0.8 <= idle <= HEADER_TIMEOUT + CLOSE_SLACK, f"closed after {idle:.2f}s idle"


def test_slow_bodies_do_not_hold_up_other_clients(recommended: GranianServer, song_path: str) -> None:
    with SlowClients(recommended.port, SLOW_CONNECTIONS, *SLOW_BODY):
        time.sleep(0.5)
        samples = poll(recommended.base_url, ["/admin/health", song_path], seconds=POLL_SECONDS)
    assert_all_answered(samples)


# -- the control: gunicorn's gthread workers alone ----------------------------------------------


def test_gthread_alone_is_held_up_by_slow_headers(tmp_path: Path) -> None:
    """The same attack stalls ``gunicorn -c example_songs/gunicorn.conf.py`` with nothing in front.

    Its worker threads read the request headers themselves, with no deadline: once every thread
    holds a slow connection, nothing else is answered. This is what the tests above guard against.
    """
    deployment = GunicornServer(
        store_url(tmp_path), tmp_path / "gunicorn.log", workers=3, config="example_songs/gunicorn.conf.py"
    )
    with deployment:
        warm_up(deployment)
        before = poll(deployment.base_url, ["/admin/health"], seconds=1.0)
        assert_all_answered(before)
        with SlowClients(deployment.port, SLOW_CONNECTIONS, *SLOW_HEADERS) as slow:
            time.sleep(0.5)
            samples = poll(
                deployment.base_url, ["/admin/health"], seconds=POLL_SECONDS, stop_at_first_slow=True
            )
    assert not all(answered_in_time(sample) for sample in samples), (
        f"gthread answered every request despite {SLOW_CONNECTIONS} slow clients: {summary(samples)}"
    )
    assert not slow.closed_after, f"gthread closed slow connections after {slow.closed_after}"


# -- the launcher's settings --------------------------------------------------------------------


def test_the_header_timeout_defaults_to_five_seconds() -> None:
    settings = serve.ServeSettings.from_env({})
    assert settings.header_timeout == serve.DEFAULT_HEADER_TIMEOUT == 5.0
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 8000, 3)
    custom = serve.ServeSettings.from_env(
        {"SONGS_BIND": "0.0.0.0:9000", "SONGS_WORKERS": "2", "SONGS_HEADER_TIMEOUT": "2.5"}
    )
    assert (custom.host, custom.port, custom.workers, custom.header_timeout) == ("0.0.0.0", 9000, 2, 2.5)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SONGS_HEADER_TIMEOUT", "soon"),
        ("SONGS_HEADER_TIMEOUT", "0"),
        ("SONGS_HEADER_TIMEOUT", "61"),
        ("SONGS_WORKERS", "two"),
        ("SONGS_WORKERS", "0"),
        ("SONGS_BIND", "8000"),
        ("SONGS_BIND", "localhost:http"),
    ],
)
def test_a_bad_setting_stops_the_launcher_naming_it(
    name: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(serve.SettingError, match=f"^{re.escape(f'{name} = {value!r}')}"):
        serve.ServeSettings.from_env({name: value})
    assert serve.main([], {name: value}) == 2
    assert f"{name} = '{value}'" in capsys.readouterr().err

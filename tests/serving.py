"""Process-level test harness: example_songs under gunicorn or granian, and a small HTTP client for it.

:class:`GunicornServer` runs ``python -m gunicorn <app> -b 127.0.0.1:<port> -w N`` (optionally
``-k gthread --threads T`` and ``--preload``); :class:`GranianServer` runs the recommended server,
granian as :func:`example_songs.serve.build_server` makes it (``python -m tests.serve_granian``).
Both share :class:`SongsServer`: the server runs with ``FLASK_SHIMMIE_EVENT_STORE=<url>`` in its
environment, in a process group of its own, so that :meth:`SongsServer.kill` can SIGKILL the
master and every worker at once. :meth:`~SongsServer.stop` sends SIGTERM, then SIGKILL, and
always waits until no process of the group is left; :meth:`~SongsServer.start` may be called
again after either, and serves on the same port (both servers set ``SO_REUSEADDR``).
:data:`SERVERS` names both, for tests that run under each.

The default app is :func:`songs_app`: ``example_songs.create_app()`` behind a WSGI middleware that
only adds ``X-Served-By: <worker pid>`` to every response, so that a test can tell which worker
answered (nothing else of the app changes).

:class:`HttpClient` speaks HTTP/1.1 over :mod:`http.client`, keeping its connection alive or
opening a new one per request (``keep_alive=False``; a new connection per request is what lets
the kernel spread requests over the workers). Everything listens and connects on 127.0.0.1 only.

This module is imported by the server workers too (for :func:`songs_app`).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar, TypeVar

from tests.helpers import SONGS_TOKEN
from tests.helpers import songs_app as authenticated_songs_app

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
#: What gunicorn loads unless told otherwise: example_songs with the X-Served-By header.
DEFAULT_APP = "tests.serving:songs_app()"
#: What granian's workers call (an app factory) unless told otherwise: the same app.
GRANIAN_TARGET = "tests.serving:songs_app"
SERVED_BY_HEADER = "X-Served-By"
#: The fields of a song that every view of it shares (``GET /v1/songs`` entries).
SONG_FIELDS = ("id", "title", "artist", "year", "version")

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Any]


# -- the app the servers load ------------------------------------------------------


def songs_app() -> Any:
    """``example_songs.create_app()`` whose responses also carry ``X-Served-By: <pid>``."""
    from example_songs import create_app

    app = create_app()
    inner: WsgiApp = app.wsgi_app

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            headers.append((SERVED_BY_HEADER, str(os.getpid())))
            if exc_info is None:
                return start_response(status, headers)
            return start_response(status, headers, exc_info)

        return inner(environ, start)

    app.wsgi_app = wsgi  # type: ignore[method-assign]
    return app


# -- processes ----------------------------------------------------------------


def start_logged(command: list[str], env: Mapping[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    """Start ``command`` from the repository root in a process group of its own, its output to ``log``."""
    return subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment with ``extra`` on top, and the repository root first on ``PYTHONPATH``."""
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def run_python(script: str, env: Mapping[str, str] | None = None) -> str:
    """Run ``script`` (dedented) in a new Python from the repository root, with ``env`` (default:
    :func:`child_env`); return what it printed, or fail with its stderr."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=REPO_ROOT,
        env=child_env({}) if env is None else dict(env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@dataclass
class SubscriptionsRun:
    """``flask --app <app> shimmie subscriptions run`` on one store, in a process group of its own.

    Its environment is :func:`child_env` with ``FLASK_SHIMMIE_EVENT_STORE=<store_url>``,
    ``FLASK_SHIMMIE_SUBSCRIPTION_TAKEOVER=<takeover>`` and ``env``; its output goes to ``log``.
    """

    app: str
    store_url: str
    log: Path
    takeover: float
    env: Mapping[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> SubscriptionsRun:
        """Start the process (do not wait for it); return ``self``."""
        env = child_env(
            {
                "FLASK_SHIMMIE_EVENT_STORE": self.store_url,
                "FLASK_SHIMMIE_SUBSCRIPTION_TAKEOVER": str(self.takeover),
                **self.env,
            }
        )
        command = [sys.executable, "-m", "flask", "--app", self.app, "shimmie", "subscriptions", "run"]
        with self.log.open("ab") as log:
            self.process = start_logged(command, env, log)
        return self

    @property
    def pid(self) -> int:
        """The process's pid, which is also its process group's id."""
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        """Whether it was started and has not exited."""
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the process group; return once nothing of it runs."""
        if self.process is not None:
            kill_group(self.process)

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM, wait for the exit; return the exit code."""
        assert self.process is not None
        os.kill(self.pid, signal.SIGTERM)
        return self.process.wait(timeout)

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of its output, for failure messages."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """``(state, ppid, pgrp)`` of a live process, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[2])


def _live_pids() -> Iterator[tuple[int, str, int, int]]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat is not None:
                yield int(entry), *stat


def group_members(pgid: int) -> list[int]:
    """The processes of process group ``pgid`` that still run (zombies count as gone)."""
    return [pid for pid, state, _ppid, pgrp in _live_pids() if pgrp == pgid and state not in ("Z", "X")]


def children_of(pid: int) -> set[int]:
    """The running child processes of ``pid``."""
    return {child for child, state, ppid, _pgrp in _live_pids() if ppid == pid and state not in ("Z", "X")}


def _gunicorn_has_control_socket() -> bool:
    try:
        from gunicorn.config import KNOWN_SETTINGS  # type: ignore[import-untyped,unused-ignore]
    except ImportError:  # pragma: no cover - gunicorn is a test requirement
        return False
    return any("--no-control-socket" in (setting.cli or []) for setting in KNOWN_SETTINGS)


class ServerError(RuntimeError):
    """The server did not start, did not answer, or did not go away; the message has its log."""


def kill_group(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGKILL the process group that ``process`` leads; return once nothing of it runs.

    Raises :class:`ServerError` if some process of the group is still there after ``timeout``.
    """
    pgid = process.pid
    with suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout)
    deadline = time.monotonic() + timeout
    while group_members(pgid):
        if time.monotonic() > deadline:
            raise ServerError(f"processes of group {pgid} survived SIGKILL: {group_members(pgid)}")
        with suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        time.sleep(0.02)


_Server = TypeVar("_Server", bound="SongsServer")


@dataclass
class SongsServer:
    """example_songs under a WSGI server on ``127.0.0.1:<port>``, in a process group of its own.

    The common part of :class:`GunicornServer` and :class:`GranianServer`: a master process whose
    children are the workers, started with ``FLASK_SHIMMIE_EVENT_STORE=<store_url>`` and ``env``
    (see :func:`child_env`), its output appended to ``log_path``. Subclasses give the command line
    (:meth:`command`) and what else its environment needs (:meth:`server_env`).

    Use it as a context manager (or call :meth:`stop` in a ``finally``): the group is always
    terminated, however the test ends.
    """

    store_url: str
    log_path: Path
    workers: int = 2
    port: int = field(default_factory=free_port)
    env: Mapping[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    #: How many times the server was started (restarts included).
    starts: int = 0
    #: The server's name, in messages.
    kind: ClassVar[str] = "server"

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def command(self) -> list[str]:
        """The server's command line."""
        raise NotImplementedError

    def server_env(self) -> dict[str, str]:
        """Environment the command needs beyond the store URL and ``env``."""
        return {}

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and wait (at most ``timeout`` s) until every worker runs and one answers."""
        if self.process is not None and self.process.poll() is None:
            raise ServerError(f"the {self.kind} server is already running")
        env = child_env({**self.server_env(), **self.env, "FLASK_SHIMMIE_EVENT_STORE": self.store_url})
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        command = self.command()
        with self.log_path.open("ab") as log:
            log.write(f"\n=== start {self.starts + 1}: {' '.join(command)}\n".encode())
            log.flush()
            self.process = start_logged(command, env, log)
        self.starts += 1
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, timeout: float) -> None:
        """Wait until the master has all its workers and one answers ``GET /v1/songs`` with 200.

        With :func:`songs_app` (whose answers name the worker), wait until every worker answered:
        a worker still importing the app accepts nothing, and its first request starts its stack.
        """
        deadline = time.monotonic() + timeout
        last_problem = "no answer yet"
        while time.monotonic() < deadline:
            self._check_alive()
            workers = self.worker_pids()
            if len(workers) >= self.workers:
                try:
                    reply = request(self.base_url, "GET", "/v1/songs", timeout=min(5.0, timeout))
                except (OSError, http.client.HTTPException) as error:
                    last_problem = f"{type(error).__name__}: {error}"
                else:
                    if reply.status != 200:
                        last_problem = f"GET /v1/songs answered {reply.status}: {reply.text[:300]}"
                    elif reply.served_by is None:
                        return
                    else:
                        last_problem = self._every_worker_answers(workers, deadline)
                        if not last_problem:
                            return
            time.sleep(0.05)
        raise ServerError(
            f"the {self.kind} server did not get ready within {timeout}s ({last_problem})\n{self.log_tail()}"
        )

    def _every_worker_answers(self, workers: set[int], deadline: float) -> str:
        """What is still wrong ("" when every worker in ``workers`` answered 200)."""
        try:
            replies = spread(
                self.base_url,
                "/v1/songs",
                workers=workers,
                each=1,
                timeout=max(deadline - time.monotonic(), 1),
            )
        except AssertionError as error:
            return str(error)
        failed = [reply.describe() for reply in replies if reply.status != 200]
        if failed:
            return f"answers other than 200: {failed[:3]}"
        missing = workers - {reply.served_by for reply in replies}
        return f"workers {sorted(missing)} did not answer" if missing else ""

    def _check_alive(self) -> None:
        if self.process is None or self.process.poll() is not None:
            code = None if self.process is None else self.process.returncode
            raise ServerError(f"{self.kind} is not running (exit code {code})\n{self.log_tail()}")

    @property
    def pid(self) -> int:
        """The master's pid (also the process group id)."""
        if self.process is None:
            raise ServerError("the server was never started")
        return self.process.pid

    def worker_pids(self) -> set[int]:
        """The pids of the running workers (the master's children)."""
        if self.process is None or self.process.poll() is not None:
            return set()
        return children_of(self.process.pid)

    def wait_workers(self, timeout: float = 20.0) -> set[int]:
        """Wait until the master has all its workers; return their pids."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            pids = self.worker_pids()
            if len(pids) == self.workers:
                return pids
            time.sleep(0.05)
        raise ServerError(
            f"{self.kind} did not have {self.workers} workers within {timeout}s\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the group, then SIGKILL what is left; return once no process of it runs."""
        if self.process is None:
            return
        if self.process.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        self._kill_group()

    def kill(self) -> None:
        """SIGKILL the master and every worker at once (the whole process group); wait until gone."""
        self._kill_group()

    def _kill_group(self, timeout: float = 10.0) -> None:
        if self.process is not None:
            kill_group(self.process, timeout)

    def restart(self, timeout: float = 30.0, *, kill: bool = False) -> None:
        """Stop (or SIGKILL) the server and start it again on the same port."""
        if kill:
            self.kill()
        else:
            self.stop()
        self.start(timeout)

    def log_tail(self, lines: int = 60) -> str:
        """The end of the server's log (both streams), for failure messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return f"--- {self.kind} log (tail) ---\n" + "\n".join(text.splitlines()[-lines:])

    def __enter__(self: _Server) -> _Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class GunicornServer(SongsServer):
    """example_songs under gunicorn: ``python -m gunicorn <app> -b 127.0.0.1:<port> -w N ...``.

    ``config`` runs ``gunicorn -c <config>`` instead, with ``SONGS_BIND`` and ``SONGS_WORKERS`` in
    the environment (``example_songs/gunicorn.conf.py`` reads them) and nothing else on the
    command line but ``--no-control-socket``.
    """

    worker_class: str = "sync"
    threads: int = 1
    preload: bool = False
    app: str = DEFAULT_APP
    config: str | None = None
    kind: ClassVar[str] = "gunicorn"

    def command(self) -> list[str]:
        """The gunicorn command line."""
        command = [sys.executable, "-m", "gunicorn"]
        if self.config is not None:
            command += ["-c", self.config]
        else:
            command += [self.app, "-b", f"{HOST}:{self.port}"]
            command += ["-w", str(self.workers), "-k", self.worker_class]
            if self.worker_class == "gthread":
                command += ["--threads", str(self.threads)]
            if self.preload:
                command.append("--preload")
            # A worker that hangs is a failure the test should see, not one gunicorn hides by a
            # restart within the test's time; graceful shutdown is kept short.
            command += ["--timeout", "60", "--graceful-timeout", "3", "--log-level", "info"]
        if _gunicorn_has_control_socket():
            # gunicorn >= 24 opens a control socket at one fixed path per user; servers run at the
            # same time (tests in parallel, restarts) would fight over it.
            command.append("--no-control-socket")
        return command

    def server_env(self) -> dict[str, str]:
        """``SONGS_BIND`` and ``SONGS_WORKERS`` for a ``config`` file."""
        if self.config is None:
            return {}
        return {"SONGS_BIND": f"{HOST}:{self.port}", "SONGS_WORKERS": str(self.workers)}


@dataclass
class GranianServer(SongsServer):
    """example_songs under granian, the recommended server, as :mod:`example_songs.serve` builds it.

    With ``target`` left at :data:`GRANIAN_TARGET` (:func:`songs_app`, whose answers name the
    worker) it runs ``python -m tests.serve_granian``; with example_songs' own app factory
    (:data:`example_songs.serve.TARGET`) exactly the deployment, ``python -m example_songs.serve``.
    Either reads ``SONGS_BIND``, ``SONGS_WORKERS`` and ``SONGS_HEADER_TIMEOUT``.
    """

    header_timeout: float = 5.0
    target: str = GRANIAN_TARGET
    kind: ClassVar[str] = "granian"

    def command(self) -> list[str]:
        """``python -m example_songs.serve`` for its own target, else ``python -m tests.serve_granian``."""
        from example_songs.serve import TARGET

        launcher = "example_songs.serve" if self.target == TARGET else "tests.serve_granian"
        return [sys.executable, "-m", launcher]

    def server_env(self) -> dict[str, str]:
        """The ``SONGS_*`` settings."""
        return {
            "SONGS_BIND": f"{HOST}:{self.port}",
            "SONGS_WORKERS": str(self.workers),
            "SONGS_HEADER_TIMEOUT": str(self.header_timeout),
            "SONGS_TARGET": self.target,
        }


#: The servers the process-level tests run example_songs under, by name (the test ids).
SERVERS: dict[str, type[SongsServer]] = {"gunicorn": GunicornServer, "granian": GranianServer}


@contextmanager
def serving(store_url: str, log_path: Path, **options: Any) -> Iterator[GunicornServer]:
    """A started :class:`GunicornServer`, always stopped afterwards."""
    server = GunicornServer(store_url, log_path, **options)
    try:
        server.start()
        yield server
    finally:
        server.stop()


# -- HTTP ---------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One HTTP response: status, headers (names in lower case), body, and how long it took."""

    method: str
    path: str
    status: int
    headers: dict[str, str]
    body: bytes
    elapsed: float

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def seq_num(self) -> int | None:
        """``X-Seq-Num``: the position the answering process had applied."""
        value = self.header("X-Seq-Num")
        return int(value) if value is not None else None

    @property
    def served_by(self) -> int | None:
        """The pid of the worker that answered (``X-Served-By``, added by :func:`songs_app`)."""
        value = self.header(SERVED_BY_HEADER)
        return int(value) if value is not None else None

    def describe(self) -> str:
        return f"{self.method} {self.path} -> {self.status} in {self.elapsed:.3f}s: {self.text[:500]}"


def _split_base(base_url: str) -> tuple[str, int]:
    rest = base_url.split("://", 1)[-1].rstrip("/")
    host, _, port = rest.partition(":")
    if host != HOST:
        raise ValueError(f"the harness only talks to {HOST}, not {base_url}")
    return host, int(port or 80)


class HttpClient:
    """A small HTTP/1.1 client for one server.

    With ``keep_alive=True`` one connection is reused (and reopened when the server closed it);
    with ``keep_alive=False`` every request opens a new connection and asks the server to close it.
    Not thread-safe: give each thread its own client.
    """

    def __init__(self, base_url: str, *, timeout: float = 10.0, keep_alive: bool = True) -> None:
        self.host, self.port = _split_base(base_url)
        self.timeout = timeout
        self.keep_alive = keep_alive
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Reply:
        """Send one request; raise :class:`OSError` (or :class:`http.client.HTTPException`) on failure.

        A GET on a reused keep-alive connection that the server had closed is retried once on a
        new connection; nothing else is retried.
        """
        reused = self._conn is not None
        try:
            return self._send(method, path, json_body, headers, timeout)
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            self.close()
            if not (reused and method == "GET"):
                raise
            return self._send(method, path, json_body, headers, timeout)

    def _send(
        self,
        method: str,
        path: str,
        json_body: Any,
        headers: Mapping[str, str] | None,
        timeout: float | None,
    ) -> Reply:
        all_headers = {"Accept": "application/json", "Authorization": f"Bearer {SONGS_TOKEN}"}
        body: bytes | None = None
        if json_body is not None:
            body = json.dumps(json_body).encode()
            all_headers["Content-Type"] = "application/json"
        if not self.keep_alive:
            all_headers["Connection"] = "close"
        all_headers.update(headers or {})
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout or self.timeout)
        conn = self._conn
        started = time.monotonic()
        try:
            conn.request(method, path, body=body, headers=all_headers)
            response = conn.getresponse()
            data = response.read()
        except BaseException:
            self.close()
            raise
        reply = Reply(
            method,
            path,
            response.status,
            {name.lower(): value for name, value in response.getheaders()},
            data,
            time.monotonic() - started,
        )
        if not self.keep_alive or response.will_close:
            self.close()
        return reply

    def get(
        self, path: str, *, seq_min: int | None = None, headers: Mapping[str, str] | None = None
    ) -> Reply:
        """GET ``path``; ``seq_min`` sends ``X-Seq-Num-Min``."""
        all_headers = dict(headers or {})
        if seq_min is not None:
            all_headers["X-Seq-Num-Min"] = str(seq_min)
        return self.request("GET", path, headers=all_headers)

    def post_json(self, path: str, body: Any, *, headers: Mapping[str, str] | None = None) -> Reply:
        return self.request("POST", path, json_body=body, headers=headers)

    def put_json(self, path: str, body: Any, *, headers: Mapping[str, str] | None = None) -> Reply:
        return self.request("PUT", path, json_body=body, headers=headers)

    def delete(self, path: str, *, headers: Mapping[str, str] | None = None) -> Reply:
        return self.request("DELETE", path, headers=headers)


def request(
    base_url: str,
    method: str,
    path: str,
    *,
    json_body: Any = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> Reply:
    """One request on a new connection (closed afterwards)."""
    with HttpClient(base_url, timeout=timeout, keep_alive=False) as client:
        return client.request(method, path, json_body=json_body, headers=headers)


def song_id_from(reply: Reply) -> str:
    """The song id in a ``201 Created`` reply's ``Location: /v1/songs/<id>``."""
    location = reply.header("Location") or ""
    prefix = "/v1/songs/"
    if reply.status != 201 or prefix not in location:
        raise AssertionError(f"not a 201 with a song Location: {reply.describe()} (Location {location!r})")
    return location.rsplit(prefix, 1)[1]


def project(songs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Songs reduced to :data:`SONG_FIELDS`, order kept."""
    return [{name: song.get(name) for name in SONG_FIELDS} for song in songs]


def spread(
    base_url: str,
    path: str,
    *,
    workers: set[int],
    seq_min: int | None = None,
    each: int = 3,
    threads: int = 6,
    max_requests: int = 600,
    timeout: float = 20.0,
) -> list[Reply]:
    """GET ``path`` on new connections from several threads until every pid in ``workers`` answered
    ``each`` times (or ``max_requests`` / ``timeout`` ran out); return every reply, in no order.

    The caller checks the replies and that every worker was reached.
    """
    replies: list[Reply] = []
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + timeout
    headers = {} if seq_min is None else {"X-Seq-Num-Min": str(seq_min)}

    def done() -> bool:
        counts = {pid: 0 for pid in workers}
        for reply in replies:
            if reply.served_by in counts:
                counts[reply.served_by] += 1
        return min(counts.values(), default=each) >= each

    def run() -> None:
        while time.monotonic() < deadline:
            with lock:
                if done() or len(replies) + len(errors) >= max_requests:
                    return
            try:
                reply = request(base_url, "GET", path, headers=headers, timeout=10.0)
            except (OSError, http.client.HTTPException) as error:
                with lock:
                    errors.append(f"{type(error).__name__}: {error}")
                continue
            with lock:
                replies.append(reply)

    pool = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(max(deadline - time.monotonic(), 0) + 15)
    if errors:
        raise AssertionError(f"{len(errors)} requests failed while spreading GET {path}: {errors[:5]}")
    with lock:
        return list(replies)


def run_threads(targets: list[Callable[[], None]], timeout: float) -> None:
    """Run each target in a thread; wait at most ``timeout`` s; re-raise the first error."""
    failures: list[BaseException] = []

    def wrap(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as error:
                failures.append(error)

        return run

    threads = [threading.Thread(target=wrap(target), daemon=True) for target in targets]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0.01))
    alive = [thread for thread in threads if thread.is_alive()]
    if failures:
        raise failures[0]
    if alive:
        raise AssertionError(
            f"{len(alive)} of {len(threads)} client threads did not finish within {timeout}s"
        )


# -- the store, read back -------------------------------------------------------


def stored_events(store_url: str) -> list[Any]:
    """Every stored event, in position order, read with flask_shimmie's store API (PII not merged)."""
    from flask_shimmie.storage import event_store_from_url

    store = event_store_from_url(store_url)
    store.open()
    try:
        return list(store.read(0))
    finally:
        store.close()


#: The largest page ``GET /v1/songs?limit=`` gives.
SONGS_PAGE_LIMIT = 1000


def next_page(link: str | None) -> str | None:
    """The target of a ``Link`` header's ``rel="next"``, or None."""
    for part in (link or "").split(","):
        target, _, params = part.strip().partition(";")
        if target.startswith("<") and target.endswith(">") and 'rel="next"' in params:
            return target[1:-1]
    return None


def replayed_pages(store_url: str) -> list[tuple[str, list[dict[str, Any]]]]:
    """``GET /v1/songs`` of a fresh ``create_app`` on ``store_url``, after its startup replay, page by
    page (the largest pages, following ``Link: rel="next"``): ``(path, songs)`` for each."""
    from example_songs import stack

    app = authenticated_songs_app({"SHIMMIE_EVENT_STORE": store_url, "TESTING": True})
    pages: list[tuple[str, list[dict[str, Any]]]] = []
    try:
        with app.app_context():
            stack.startup()
        client = app.test_client()
        path: str | None = f"/v1/songs?limit={SONGS_PAGE_LIMIT}"
        while path is not None:
            response = client.get(path)
            if response.status_code != 200:
                raise AssertionError(
                    f"a fresh app answered {response.status_code} to {path}: {response.get_data(True)}"
                )
            pages.append((path, response.get_json()))
            path = next_page(response.headers.get("Link"))
        return pages
    finally:
        stack.shutdown(app)


def replayed_songs(store_url: str) -> list[dict[str, Any]]:
    """Every song of :func:`replayed_pages`, in the order posted."""
    return [song for _, page in replayed_pages(store_url) for song in page]


def every_worker_lists(
    base_url: str,
    pages: list[tuple[str, list[dict[str, Any]]]],
    *,
    workers: set[int],
    seq_min: int,
    each: int = 2,
    where: str = "",
) -> list[Reply]:
    """GET every page of ``pages`` (from :func:`replayed_pages`) with ``X-Seq-Num-Min: seq_min`` until
    every worker answered it ``each`` times; fail unless each answer is 200 with that page's songs
    (compared on :data:`SONG_FIELDS`). Returns every reply."""
    replies: list[Reply] = []
    for path, songs in pages:
        answers = spread(base_url, path, workers=workers, seq_min=seq_min, each=each)
        answered = {reply.served_by for reply in answers}
        if answered != workers:
            raise AssertionError(f"{path} was answered by workers {answered}, not all of {workers} {where}")
        for reply in answers:
            if reply.status != 200:
                raise AssertionError(reply.describe())
            if project(reply.json()) != project(songs):
                raise AssertionError(f"worker {reply.served_by} differs from a replay on {path} {where}")
        replies.extend(answers)
    return replies


def raw_pii_rows(store_url: str) -> tuple[dict[str, str | None], set[str]]:
    """Read the raw tables: ``({event_id: pii_fields}, {event_id of each shimmie_pii row})``."""
    if store_url.startswith("sqlite:///"):
        import sqlite3

        path = store_url[len("sqlite:///") :]
        lite = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            events = dict(lite.execute("SELECT event_id, pii_fields FROM shimmie_events").fetchall())
            pii = {row[0] for row in lite.execute("SELECT event_id FROM shimmie_pii")}
        finally:
            lite.close()
        return events, pii
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    import psycopg
    from psycopg import sql

    parts = urlsplit(store_url)
    params = dict(parse_qsl(parts.query))
    schema = params.pop("schema", "public")
    for name in ("pool_min_size", "pool_max_size"):
        params.pop(name, None)
    conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(params), ""))
    events_query = sql.SQL("SELECT event_id, pii_fields FROM {}").format(
        sql.Identifier(schema, "shimmie_events")
    )
    pii_query = sql.SQL("SELECT event_id FROM {}").format(sql.Identifier(schema, "shimmie_pii"))
    with psycopg.connect(conninfo, connect_timeout=5, autocommit=True) as conn:
        events = dict(conn.execute(events_query).fetchall())
        pii = {row[0] for row in conn.execute(pii_query)}
    return events, pii


class ClientThreads:
    """Client threads that run :meth:`_run` (with their number) until stopped."""

    def __init__(self, threads: int) -> None:
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)]

    def start(self) -> None:
        """Start every thread."""
        for thread in self._threads:
            thread.start()

    def halt(self) -> None:
        """Ask the threads to stop, without waiting."""
        self._stop.set()

    def stop(self, timeout: float) -> None:
        """Stop the threads and wait for them; fail if one does not stop within ``timeout``."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0.01))
        alive = [thread.name for thread in self._threads if thread.is_alive()]
        assert not alive, f"writer threads {alive} did not stop within {timeout}s"

    def _run(self, writer: int) -> None:
        raise NotImplementedError

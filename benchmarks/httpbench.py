"""Scenario 5: the songs example over HTTP, under the recommended server, side by side.

Three kinds of server, all on free 127.0.0.1 ports and loaded alternately:

* ours: ``example_songs`` under granian as ``python -m example_songs.serve``
  launches it (:mod:`benchmarks.granian_server`), on ``memory://`` in one
  worker process, and on SQLite and PostgreSQL in the recommended number of
  workers (:data:`example_songs.serve.DEFAULT_WORKERS`);
* the bare-Flask floor: :mod:`benchmarks.bare_app` under the same server and
  settings, the least a Flask app can do per request there;
* ShimmieStack 1.9.2's songs server (node, one process, as its README runs
  it), from the anchor folder (``SHIMMIE_BENCH_SHIMMIESTACK``, default
  ``../shared/anchors/shimmiestack-1.9.2`` beside the repository); its rows
  say "skipped" when node or the folder is missing.

The load comes from ``wrk`` when it is on PATH (POST bodies from a Lua
script), else from Python threads holding keep-alive ``http.client``
connections.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from example_songs.serve import DEFAULT_WORKERS

from .backends import postgres_unavailable
from .bare_app import SEED_COUNT, prepare_durable_file
from .harness import Progress, Row, Settings, alternate, compare_row, median, skipped_row

if TYPE_CHECKING:
    from .backends import Stores

ROOT = Path(__file__).resolve().parent.parent

#: The body of every POST.
SONG = {"title": "Hound Dog", "artist": "Elvis", "year": "1952"}

#: Sent with every request to every server: the songs example's demo editor token (the bare app
#: and ShimmieStack's songs server, which has no authentication, ignore it).
AUTHORIZATION = "Bearer editor-token"

#: Seconds a server may take to answer its first request.
START_TIMEOUT = 30.0

#: ShimmieStack's version and the folder it is built in (see its README).
SHIMMIESTACK = "shimmiestack-1.9.2"
SHIMMIESTACK_ENV = "SHIMMIE_BENCH_SHIMMIESTACK"

#: The targets, as ratios of requests per second (ours / theirs), measured in one run.
#: Memory, one process each, against ShimmieStack:
SHIMMIESTACK_POST_RATIO = 0.8
SHIMMIESTACK_GET_RATIO = 0.6
#: Against the bare-Flask floor under the same server and worker count:
FLOOR_POST_RATIO = 0.7
FLOOR_GET_RATIO = 0.85
#: Whole machine: our recommended worker count on PostgreSQL against ShimmieStack's one process on it.
MACHINE_POST_RATIO = 1.5
MACHINE_GET_RATIO = 1.0

#: The songs app's factory (its store comes from ``FLASK_SHIMMIE_EVENT_STORE``) and the bare app's.
SONGS_TARGET = "example_songs:create_app"
BARE_TARGET = "benchmarks.bare_app:create_app"

POST_SCENARIO = "5 HTTP POST /v1/songs"
GET_SCENARIO = "5 HTTP GET /v1/songs/<id>"


def scenario_name(method: str, against: str) -> str:
    """The row's scenario: ``5 HTTP POST /v1/songs vs ShimmieStack``."""
    return f"{POST_SCENARIO if method == 'POST' else GET_SCENARIO} vs {against}"


#: The information rows: the floor itself against ShimmieStack, the most one Python process can reach.
FLOOR_POST_SCENARIO = "5f floor: bare Flask POST vs ShimmieStack"
FLOOR_GET_SCENARIO = "5f floor: bare Flask GET vs ShimmieStack"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    """One server process (granian's master and its workers, or node), started and stopped by us."""

    name: str
    #: The command, run from the repository root (``--port`` comes from :attr:`port`).
    command: list[str]
    workdir: str
    env: dict[str, str] = field(default_factory=dict)
    #: Worker processes, each with its own copy of the app (for :func:`wait_visible`).
    workers: int = 1
    #: What POSTs are sent to, and the paths GETs read (seeded before measuring).
    post_path: str = "/v1/songs"
    get_paths: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    cwd: str = str(ROOT)
    #: Throw standard output away (ShimmieStack logs every request there), keep standard error.
    quiet: bool = False
    process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> str:
        """Where the server's output goes."""
        return os.path.join(self.workdir, f"{self.name}.log")

    def start(self, probe_path: str) -> None:
        """Start the server and wait until ``probe_path`` answers (at most :data:`START_TIMEOUT` s)."""
        env = {**os.environ, "PYTHONPATH": str(ROOT), **self.env}
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n{self.log_tail()}")
            try:
                status, _, _ = request(self.port, "GET", probe_path)
                if status < 500:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer within {START_TIMEOUT:.0f}s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM the server (granian's master stops its workers); SIGKILL its process group after 10 s."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            # The group is the one start_new_session gave this process: ours alone.
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's log."""
        try:
            return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def granian_server(
    name: str, target: str, workdir: str, workers: int, env: dict[str, str] | None = None
) -> Server:
    """``target`` (``module:factory``) served as ``python -m example_songs.serve`` serves the songs app."""
    server = Server(
        name, [sys.executable, "-m", "benchmarks.granian_server", target], workdir, workers=workers
    )
    server.env = {"SONGS_BIND": f"127.0.0.1:{server.port}", "SONGS_WORKERS": str(workers), **(env or {})}
    return server


def gunicorn_server(
    name: str, target: str, workdir: str, threads: int, env: dict[str, str] | None = None
) -> Server:
    """``target`` (``module:factory()``) under one gunicorn gthread worker of ``threads`` threads."""
    server = Server(name, [], workdir, env=dict(env or {}))
    server.command = [
        sys.executable, "-m", "gunicorn",
        "--workers", "1", "--worker-class", "gthread", "--threads", str(threads),
        "--bind", f"127.0.0.1:{server.port}", "--log-level", "warning",
        "--graceful-timeout", "5", "--chdir", str(ROOT),
        target,
    ]  # fmt: skip
    return server


def shimmiestack_folder() -> Path:
    """Where ShimmieStack's songs server is built: ``SHIMMIE_BENCH_SHIMMIESTACK``, else the shared anchors."""
    configured = os.environ.get(SHIMMIESTACK_ENV)
    if configured:
        return Path(configured)
    return ROOT.parent / "shared" / "anchors" / SHIMMIESTACK


def shimmiestack_unavailable() -> str | None:
    """Why ShimmieStack's songs server cannot run here, or ``None`` when it can."""
    if shutil.which("node") is None:
        return "node is not on PATH (Debian: apt-get install nodejs npm)"
    folder = shimmiestack_folder()
    if not (folder / "songs.js").is_file() or not (folder / "dist").is_dir():
        return f"no built ShimmieStack songs server in {folder} (set {SHIMMIESTACK_ENV})"
    return None


def shimmiestack_install() -> Path:
    """A copy of the anchor folder with its dependencies installed, made once per machine and reused.

    The anchor folder may be read-only; its README installs the dependencies
    into a copy with ``npm install --omit=dev``.
    """
    folder = shimmiestack_folder()
    if (folder / "node_modules").is_dir():
        return folder
    copy = Path(tempfile.gettempdir()) / f"shimmie-bench-{SHIMMIESTACK}"
    if not (copy / "node_modules").is_dir():
        if shutil.which("npm") is None:
            raise RuntimeError(f"npm is not on PATH: cannot install the dependencies of {folder}")
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(folder, copy)
        install = ["npm", "install", "--omit=dev", "--no-audit", "--no-fund"]
        done = subprocess.run(install, cwd=copy, capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            shutil.rmtree(copy, ignore_errors=True)
            raise RuntimeError(f"npm install failed in {copy}: {(done.stderr or done.stdout)[-300:]}")
    return copy


def shimmiestack_server(name: str, folder: Path, workdir: str, postgres: str | None = None) -> Server:
    """ShimmieStack's songs server: one node process, on its memory event base or on PostgreSQL."""
    server = Server(name, ["node", "songs.js"], workdir, cwd=str(folder), quiet=True)
    server.env = {"PORT": str(server.port)}
    if postgres is not None:
        server.env["PG"] = postgres
    return server


def request(
    port: int, method: str, path: str, body: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request on a new connection: status, headers, body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Authorization": AUTHORIZATION}
        if body is not None:
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


# -- load generators ------------------------------------------------------------------------------


def wrk_script(workdir: str, name: str, method: str, paths: Sequence[str]) -> str:
    """Write a wrk Lua script sending ``method`` to ``paths`` in turn (POSTs carry :data:`SONG`)."""
    lines = [
        f"local paths = {{{', '.join(json.dumps(p) for p in paths)}}}",
        "local n = 0",
        f'wrk.headers["Authorization"] = {json.dumps(AUTHORIZATION)}',
    ]
    if method == "POST":
        lines += [
            'wrk.method = "POST"',
            f"wrk.body = {json.dumps(json.dumps(SONG))}",
            'wrk.headers["Content-Type"] = "application/json"',
        ]
    lines += [
        "request = function()",
        "  n = n + 1",
        f'  return wrk.format("{method}", paths[(n % #paths) + 1])',
        "end",
    ]
    path = os.path.join(workdir, f"{name}.lua")
    Path(path).write_text("\n".join(lines) + "\n")
    return path


def run_wrk(base: str, script: str, duration: float, connections: int) -> Load:
    """Run wrk for ``duration`` seconds; parse requests/s and the error counts."""
    seconds = max(1, round(duration))
    command = ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "-s", script, base]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    out = done.stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if rps is None or total is None:
        raise RuntimeError(f"Cannot read wrk's output:\n{out}")
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return Load(float(rps.group(1)), int(total.group(1)), errors)


def run_python_load(port: int, method: str, paths: Sequence[str], duration: float, connections: int) -> Load:
    """The fallback load generator: ``connections`` threads, each with a keep-alive connection."""
    body = json.dumps(SONG).encode() if method == "POST" else None
    headers = {"Authorization": AUTHORIZATION}
    if body is not None:
        headers["Content-Type"] = "application/json"
    counts = [0] * connections
    errors = [0] * connections
    clock: dict[str, float] = {}

    def start_clock() -> None:
        clock["start"] = time.perf_counter()
        clock["deadline"] = clock["start"] + duration

    # Every thread has its connection before the clock starts: a busy machine may start them slowly.
    ready = threading.Barrier(connections, action=start_clock)

    def run(index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        n = index
        try:
            ready.wait()
            while time.perf_counter() < clock["deadline"]:
                n += 1
                try:
                    conn.request(method, paths[n % len(paths)], body=body, headers=headers)
                    response = conn.getresponse()
                    response.read()
                    counts[index] += 1
                    if response.status >= 400:
                        errors[index] += 1
                except (OSError, http.client.HTTPException):
                    errors[index] += 1
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        finally:
            conn.close()

    pool = [threading.Thread(target=run, args=(i,)) for i in range(connections)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - clock["start"]
    return Load(sum(counts) / elapsed, sum(counts), sum(errors))


def load_generator(choice: str) -> str:
    """``wrk`` or ``python``: ``auto`` picks wrk when it is on PATH."""
    if choice == "auto":
        return "wrk" if shutil.which("wrk") else "python"
    if choice == "wrk" and not shutil.which("wrk"):
        raise RuntimeError("wrk is not on PATH (Debian: apt-get install wrk); use --loadgen python")
    return choice


# -- the scenario ---------------------------------------------------------------------------------


def seed_songs(server: Server, count: int) -> list[str]:
    """POST ``count`` songs; return their paths (from ``Location``)."""
    paths = []
    body = json.dumps(SONG).encode()
    for _ in range(count):
        status, headers, text = request(server.port, "POST", server.post_path, body)
        if status != 201:
            raise RuntimeError(
                f"Seeding {server.name}: POST {server.post_path} answered {status}: {text[:200]!r}"
            )
        location = headers["location"]
        paths.append(urlsplit(location).path or location)
    return paths


def wait_visible(server: Server, paths: Sequence[str], timeout: float = 10.0) -> None:
    """Wait until every worker answers 200 for every path (the others follow the store)."""
    deadline = time.monotonic() + timeout
    for path in paths:
        while True:
            misses = sum(request(server.port, "GET", path)[0] != 200 for _ in range(2 * server.workers))
            if not misses:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{path} is still not visible in every worker of {server.name} after {timeout:.0f}s"
                )
            time.sleep(0.05)


def start_songs(server: Server) -> None:
    """Start a songs server and seed it with songs to GET, visible in every worker."""
    server.start("/v1/songs/none")
    server.get_paths = seed_songs(server, SEED_COUNT)
    wait_visible(server, server.get_paths[-3:])


def start_bare(server: Server) -> None:
    """Start the bare app; every worker has the seeded items."""
    server.start("/v1/items/seed-0")
    server.get_paths = [f"/v1/items/seed-{i}" for i in range(SEED_COUNT)]


@dataclass
class Load:
    """What one load run measured."""

    requests_per_second: float
    requests: int
    errors: int


class Loader:
    """Loads servers with one method and counts each side's errors."""

    def __init__(self, settings: Settings, generator: str, workdir: str) -> None:
        self.settings = settings
        self.generator = generator
        self.workdir = workdir
        self.errors: dict[str, int] = {}

    @property
    def warmup(self) -> float:
        """Seconds of load each server gets before a case is measured: a second, or one run if shorter."""
        return max(self.settings.warmup, min(1.0, self.settings.http_duration))

    def measure(self, server: Server, method: str) -> float:
        """One timed run of ``method`` requests against ``server``; requests per second."""
        paths = [server.post_path] if method == "POST" else server.get_paths
        settings = self.settings
        if self.generator == "wrk":
            script = wrk_script(self.workdir, f"{server.name}-{method}", method, paths)
            load = run_wrk(server.base, script, settings.http_duration, settings.http_connections)
        else:
            load = run_python_load(
                server.port, method, paths, settings.http_duration, settings.http_connections
            )
        self.errors[server.name] = self.errors.get(server.name, 0) + load.errors
        return load.requests_per_second

    def samples(self, method: str, servers: Sequence[Server]) -> dict[str, list[float]]:
        """Every server's runs of ``method``, alternating, after a short warm-up of each."""

        def warm() -> None:
            for server in servers:
                paths = [server.post_path] if method == "POST" else server.get_paths
                run_python_load(server.port, method, paths, self.warmup, 2)

        def side(server: Server) -> tuple[str, Callable[[], float]]:
            return server.name, lambda: self.measure(server, method)

        return alternate([side(server) for server in servers], self.settings.http_repeats, warm)

    def describe(self, *servers: Server) -> str:
        """The load and, when there were any, the servers' error counts."""
        text = (
            f"{self.generator} {self.settings.http_connections} keep-alive connections, "
            f"{self.settings.http_duration:g} s a run"
        )
        errors = [
            f"{server.name} {self.errors[server.name]}" for server in servers if self.errors.get(server.name)
        ]
        return text + (f"; errors: {', '.join(errors)}" if errors else "")


def http_row(
    scenario: str,
    backend: str,
    samples: dict[str, list[float]],
    ours: Server,
    theirs: Server,
    minimum_ratio: float | None,
    notes: str,
    loader: Loader,
) -> Row:
    """``ours`` against ``theirs`` by their median rates; no target when ``minimum_ratio`` is None."""
    row = compare_row(
        scenario,
        backend,
        {"ours": samples[ours.name], "theirs": samples[theirs.name]},
        unit="req/s",
        minimum_ratio=minimum_ratio or 1.0,
        notes=f"{notes}; {loader.describe(ours, theirs)}",
    )
    if minimum_ratio is None:
        row.target, row.holds = "- (info)", None
    elif loader.errors.get(ours.name):
        row.holds = False
    return row


def songs_env(store: str) -> dict[str, str]:
    """The environment that puts the songs app's events in ``store``."""
    return {"FLASK_SHIMMIE_EVENT_STORE": store}


def run_http(
    settings: Settings, progress: Progress, loadgen: str, workdir: str, stores: Stores | None = None
) -> list[Row]:
    """Scenario 5: memory (one process each), SQLite and PostgreSQL (the recommended workers)."""
    generator = load_generator(loadgen)
    loader = Loader(settings, generator, workdir)
    reason = shimmiestack_unavailable()
    folder: Path | None = None
    if reason is None:
        try:
            folder = shimmiestack_install()
        except (OSError, RuntimeError, subprocess.SubprocessError) as error:
            reason = str(error).splitlines()[0]
    rows = _one_process(settings, progress, loader, workdir, folder, reason)
    rows += _sqlite(settings, progress, loader, workdir)
    rows += _postgres(settings, progress, loader, workdir, folder, reason, stores)
    return rows


@contextmanager
def _serving(
    progress: Progress, servers: Sequence[Server], starters: Sequence[Callable[[Server], None]]
) -> Iterator[None]:
    """Start each of ``servers`` with its starter, in turn; stop them all afterwards, however it ends."""
    try:
        for server, start in zip(servers, starters, strict=True):
            progress(f"http: starting {server.name}")
            start(server)
        yield
    finally:
        for server in servers:
            server.stop()


def _report(progress: Progress, rows: Sequence[Row]) -> None:
    """Tell ``progress`` the sides of each of ``rows``."""
    for row in rows:
        progress(f"  {row.scenario}: {row.ours} vs {row.theirs}")


def _one_process(
    settings: Settings,
    progress: Progress,
    loader: Loader,
    workdir: str,
    folder: Path | None,
    reason: str | None,
) -> list[Row]:
    """Memory, one process each: ours and the bare-Flask floor under granian, ShimmieStack on node."""
    ours = granian_server("songs-memory", SONGS_TARGET, workdir, 1, songs_env("memory://"))
    bare = granian_server("bare", BARE_TARGET, workdir, 1)
    bare.post_path = "/v1/items"
    servers = [ours, bare]
    starters: list[Callable[[Server], None]] = [start_songs, start_bare]
    shimmie = None
    if folder is not None:
        shimmie = shimmiestack_server("shimmiestack-memory", folder, workdir)
        servers.append(shimmie)
        starters.append(start_songs)
    granian = "granian (python -m example_songs.serve settings), 1 worker"
    rows: list[Row] = []
    with _serving(progress, servers, starters):
        for method in ("POST", "GET"):
            progress(f"http: {method} on memory, one process each ({loader.generator})")
            samples = loader.samples(method, servers)
            post = method == "POST"
            what = "a list append" if post else "a dict lookup"
            versus = scenario_name(method, "ShimmieStack")
            if shimmie is None:
                assert reason is not None
                rows.append(skipped_row(versus, "memory", reason))
            else:
                target = SHIMMIESTACK_POST_RATIO if post else SHIMMIESTACK_GET_RATIO
                notes = f"one process each: ours under {granian}; ShimmieStack 1.9.2 songs.js, node, memory"
                rows.append(http_row(versus, "memory", samples, ours, shimmie, target, notes, loader))
            target = FLOOR_POST_RATIO if post else FLOOR_GET_RATIO
            notes = f"the bare-Flask floor ({what}) under the same server: {granian}"
            rows.append(
                http_row(
                    scenario_name(method, "bare Flask"), "memory", samples, ours, bare, target, notes, loader
                )
            )
            floor = FLOOR_POST_SCENARIO if post else FLOOR_GET_SCENARIO
            if shimmie is None:
                assert reason is not None
                rows.append(skipped_row(floor, "memory", reason))
            else:
                share = median(samples[ours.name]) / max(median(samples[bare.name]), 1e-9)
                notes = (
                    "the bare-Flask floor in the flask_shimmie column: the most one Python process reaches "
                    f"under this server against ShimmieStack ({what}); ours is at {share:.2f}× of it"
                )
                rows.append(http_row(floor, "memory", samples, bare, shimmie, None, notes, loader))
            _report(progress, rows[-3:])
    return rows


def _sqlite(settings: Settings, progress: Progress, loader: Loader, workdir: str) -> list[Row]:
    """SQLite, the recommended workers: ours against the bare app writing each POST to SQLite too."""
    store = f"sqlite:///{os.path.join(workdir, 'songs.db')}"
    bare_db = os.path.join(workdir, "bare.db")
    prepare_durable_file(bare_db)
    workers = DEFAULT_WORKERS
    ours = granian_server("songs-sqlite", SONGS_TARGET, workdir, workers, songs_env(store))
    bare = granian_server("bare-sqlite", BARE_TARGET, workdir, workers, {"BENCH_BARE_SQLITE": bare_db})
    bare.post_path = "/v1/durable-items"
    rows: list[Row] = []
    granian = f"granian (python -m example_songs.serve settings), {workers} workers each"
    with _serving(progress, [ours, bare], [start_songs, start_bare]):
        for method in ("POST", "GET"):
            progress(f"http: {method} on SQLite, {workers} workers each ({loader.generator})")
            samples = loader.samples(method, [ours, bare])
            if method == "POST":
                scenario = scenario_name(method, "bare Flask + SQLite")
                baseline = (
                    "bare Flask + one SQLite INSERT per request (WAL, synchronous=FULL, BEGIN IMMEDIATE)"
                )
                target = FLOOR_POST_RATIO
            else:
                scenario, baseline, target = (
                    scenario_name(method, "bare Flask"),
                    "bare Flask: a dict lookup",
                    FLOOR_GET_RATIO,
                )
            notes = f"{baseline}; {granian}; songs on SQLite (WAL, synchronous=FULL)"
            rows.append(http_row(scenario, "sqlite", samples, ours, bare, target, notes, loader))
            _report(progress, rows[-1:])
    return rows


def _postgres(
    settings: Settings,
    progress: Progress,
    loader: Loader,
    workdir: str,
    folder: Path | None,
    reason: str | None,
    stores: Stores | None,
) -> list[Row]:
    """PostgreSQL, the whole machine: our recommended workers against ShimmieStack's one process."""
    scenarios = [scenario_name(method, "ShimmieStack") for method in ("POST", "GET")]
    if stores is None:
        return [skipped_row(name, "postgresql", "no PostgreSQL server given") for name in scenarios]
    unavailable = postgres_unavailable(stores.postgres_url)
    if unavailable is not None:
        return [skipped_row(name, "postgresql", unavailable) for name in scenarios]
    if folder is None:
        assert reason is not None
        return [skipped_row(name, "postgresql", reason) for name in scenarios]
    workers = DEFAULT_WORKERS
    ours_store = stores.ours_postgres_url(stores.new_schema())
    theirs_schema = stores.new_schema()
    ours = granian_server("songs-postgresql", SONGS_TARGET, workdir, workers, songs_env(ours_store))
    shimmie = shimmiestack_server(
        "shimmiestack-postgresql",
        folder,
        workdir,
        shimmiestack_postgres_url(stores.postgres_url, theirs_schema),
    )
    rows: list[Row] = []
    with _serving(progress, [ours, shimmie], [start_songs, start_songs]):
        notes = (
            f"the whole machine: ours under granian (python -m example_songs.serve), {workers} workers "
            "(the recommended count); ShimmieStack 1.9.2 songs.js, its one node process; the server's "
            "synchronous_commit"
        )
        for method, scenario in zip(("POST", "GET"), scenarios, strict=True):
            progress(f"http: {method} on PostgreSQL, the whole machine ({loader.generator})")
            samples = loader.samples(method, [ours, shimmie])
            target = MACHINE_POST_RATIO if method == "POST" else MACHINE_GET_RATIO
            rows.append(http_row(scenario, "postgresql", samples, ours, shimmie, target, notes, loader))
            _report(progress, rows[-1:])
    return rows


def shimmiestack_postgres_url(url: str, schema: str) -> str:
    """``url`` with a ``search_path`` of ``schema`` for node-postgres (its ``options`` parameter)."""
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-c%20search_path%3D{schema}"

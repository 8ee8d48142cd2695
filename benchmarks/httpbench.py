"""Scenario 5: the songs example under gunicorn against a bare Flask app under the same settings.

Both apps run as ``gunicorn --workers 2 --worker-class gthread --threads 4`` on
a free 127.0.0.1 port; the songs app keeps its events in a SQLite file in a
temp dir (WAL, ``synchronous=FULL``: every POST is a synced commit). The load
comes from ``wrk`` when it is on PATH (POST bodies from a Lua script), else
from Python threads holding keep-alive ``http.client`` connections. The two
servers run side by side and are measured alternately.
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
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .bare_app import SEED_COUNT, prepare_durable_file
from .harness import Progress, Row, Settings, alternate, compare_row

ROOT = Path(__file__).resolve().parent.parent

#: The body of every POST.
SONG = {"title": "Hound Dog", "artist": "Elvis", "year": "1952"}

#: Sent with every request to both servers: the songs example's demo editor token (the bare app
#: ignores it). Harmless where the example has no authentication.
AUTHORIZATION = "Bearer editor-token"

WORKERS = 2
THREADS = 4

#: Seconds a server may take to answer its first request.
START_TIMEOUT = 30.0

#: The HTTP target: at least this fraction of bare Flask's requests per second.
MINIMUM_RATIO = 0.8

#: The POST row against a baseline with the songs app's durability.
DURABLE_SCENARIO = "5 HTTP POST vs bare+SQLite"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    """One gunicorn master (and its workers), started and stopped by us."""

    def __init__(
        self,
        name: str,
        target: str,
        workdir: str,
        env: dict[str, str] | None = None,
        *,
        workers: int = WORKERS,
        threads: int = THREADS,
    ) -> None:
        self.name = name
        self.target = target
        self.workers, self.threads = workers, threads
        self.port = free_port()
        self.log_path = os.path.join(workdir, f"{name}.log")
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, probe_path: str) -> None:
        """Start gunicorn and wait until ``probe_path`` answers (at most :data:`START_TIMEOUT` s)."""
        command = [
            sys.executable, "-m", "gunicorn",
            "--workers", str(self.workers), "--worker-class", "gthread", "--threads", str(self.threads),
            # SO_REUSEPORT, for both servers alike: fewer runs in which one worker
            # accepts every connection (see Settings.http_repeats).
            "--reuse-port",
            "--bind", f"127.0.0.1:{self.port}", "--log-level", "warning",
            "--graceful-timeout", "5", "--chdir", str(ROOT),
            self.target,
        ]  # fmt: skip
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
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
        """SIGTERM the master (it stops its workers); SIGKILL its process group after 10 s."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            # The group is the one start_new_session gave this master: ours alone.
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's log."""
        try:
            return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


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


@dataclass
class Load:
    """What one load run measured."""

    requests_per_second: float
    requests: int
    errors: int


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
    start = time.perf_counter()
    deadline = start + duration

    def run(index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        n = index
        try:
            while time.perf_counter() < deadline:
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
    elapsed = time.perf_counter() - start
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
        status, headers, text = request(server.port, "POST", "/v1/songs", body)
        if status != 201:
            raise RuntimeError(f"Seeding songs: POST /v1/songs answered {status}: {text[:200]!r}")
        location = headers["location"]
        paths.append(urlsplit(location).path or location)
    return paths


def wait_visible(server: Server, paths: Sequence[str], timeout: float = 10.0) -> None:
    """Wait until every worker answers 200 for every path (the other worker follows by polling)."""
    deadline = time.monotonic() + timeout
    for path in paths:
        while True:
            misses = sum(request(server.port, "GET", path)[0] != 200 for _ in range(2 * WORKERS))
            if not misses:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{path} is still not visible in every worker after {timeout:.0f}s")
            time.sleep(0.05)


def run_http(settings: Settings, progress: Progress, loadgen: str, workdir: str) -> list[Row]:
    """Scenario 5: POST and GET rows, songs (SQLite) against bare Flask."""
    generator = load_generator(loadgen)
    db = os.path.join(workdir, "songs.db")
    songs = Server(
        "songs", "example_songs:create_app()", workdir, {"FLASK_SHIMMIE_EVENT_STORE": f"sqlite:///{db}"}
    )
    bare_db = os.path.join(workdir, "bare.db")
    prepare_durable_file(bare_db)
    bare = Server("bare", "benchmarks.bare_app:create_app()", workdir, {"BENCH_BARE_SQLITE": bare_db})
    rows: list[Row] = []
    try:
        progress(f"http: starting gunicorn ({WORKERS} workers × gthread:{THREADS}) for songs and bare Flask")
        songs.start("/v1/songs/none")
        bare.start("/v1/items/seed-0")
        song_paths = seed_songs(songs, SEED_COUNT)
        wait_visible(songs, song_paths[-3:])
        item_paths = [f"/v1/items/seed-{i}" for i in range(SEED_COUNT)]
        cases = [
            ("5 HTTP POST /v1/songs", "POST", ["/v1/songs"], ["/v1/items"], "bare Flask: a list append"),
            (
                DURABLE_SCENARIO,
                "POST",
                ["/v1/songs"],
                ["/v1/durable-items"],
                "bare Flask + one SQLite INSERT per request (WAL, synchronous=FULL, BEGIN IMMEDIATE)",
            ),
            ("5 HTTP GET /v1/songs/<id>", "GET", song_paths, item_paths, "bare Flask: a dict lookup"),
        ]
        for scenario, method, ours_paths, bare_paths, baseline in cases:
            progress(f"http: {scenario} ({generator}, {settings.http_connections} connections)")
            row = _http_case(
                scenario, method, (songs, ours_paths), (bare, bare_paths), settings, generator, workdir
            )
            row.notes = f"{baseline}; {row.notes}"
            progress(f"  songs {row.ours}, bare Flask {row.theirs}")
            rows.append(row)
    finally:
        songs.stop()
        bare.stop()
    return rows


def _http_case(
    scenario: str,
    method: str,
    ours: tuple[Server, list[str]],
    bare: tuple[Server, list[str]],
    settings: Settings,
    generator: str,
    workdir: str,
) -> Row:
    """One HTTP row: the two servers loaded alternately with ``method`` requests."""
    errors = {"ours": 0, "theirs": 0}

    def measure(side: str, server: Server, paths: list[str]) -> float:
        if generator == "wrk":
            script = wrk_script(workdir, f"{server.name}-{method}", method, paths)
            load = run_wrk(server.base, script, settings.http_duration, settings.http_connections)
        else:
            load = run_python_load(
                server.port, method, paths, settings.http_duration, settings.http_connections
            )
        errors[side] += load.errors
        return load.requests_per_second

    def warm() -> None:
        for server, paths in (ours, bare):
            run_python_load(server.port, method, paths, max(settings.warmup, 1.0), 2)

    samples = alternate(
        [("ours", lambda: measure("ours", *ours)), ("theirs", lambda: measure("theirs", *bare))],
        settings.http_repeats,
        warm,
    )
    notes = (
        f"gunicorn {WORKERS} workers × gthread:{THREADS}, {generator} {settings.http_connections} keep-alive "
        f"connections, {settings.http_duration:g} s a run; songs on sqlite (WAL, synchronous=FULL)"
    )
    if errors["ours"] or errors["theirs"]:
        notes += f"; errors: songs {errors['ours']}, bare {errors['theirs']}"
    row = compare_row(scenario, "sqlite", samples, unit="req/s", minimum_ratio=MINIMUM_RATIO, notes=notes)
    if errors["ours"]:
        row.holds = False
    return row

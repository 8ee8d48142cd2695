"""Subscriptions across real processes, on SQLite and PostgreSQL: one runner, takeover, exactly once.

Runner processes are ``flask --app tests.subscription_app:create_app shimmie subscriptions run``
(:mod:`tests.subscription_app`: a reactor that journals each event it handles with its pid, and a
projection that writes one row per event into a table without a unique key), each in a process
group of its own so that SIGKILL takes it down at once. This process writes the events straight to
the store and reads the journal, the stored rows and the projection's table back.

- two processes running at once: one runs each subscription, nothing is handled twice;
- the runner SIGKILLed: the other takes over within ``SHIMMIE_SUBSCRIPTION_TAKEOVER`` seconds;
- SIGKILL after SIGKILL under writes: the projection holds each event exactly once (row count and
  distinct count equal the events), the reactor handled each at least once;
- SIGTERM: the runner stops cleanly, releases its leases, saves its position;
- under gunicorn and granian, the web workers' threads: one worker runs them, the others serve the
  results, and SIGTERM releases the leases;
- PostgreSQL: the runner's connection cut (a TCP proxy between it and the server) while it holds
  the lease: the other process takes over, and the projection still holds each event exactly once.

The SIGKILL loop kills a few times by default; ``--run-slow`` (or ``SHIMMIE_RUN_SLOW=1``) kills more.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from flask_shimmie.storage import event_store_from_url
from flask_shimmie.storage.interface import EventStore, SubscriptionInfo
from tests.backends import DURABLE_BACKENDS, fresh_store_url, postgres_base_url, require_backend
from tests.helpers import append_raw, require_server, slow_runs_enabled
from tests.serving import SERVERS, SubscriptionsRun, request
from tests.subscription_app import DELAY_ENV, JOURNAL_ENV
from tests.test_outage import TcpProxy, proxied

#: The takeover setting the runner processes get (seconds).
TAKEOVER = 2.0
#: What a takeover may take beyond the setting on a loaded machine (process death, polling here).
TAKEOVER_SLACK = 1.5
#: Seconds a runner process gets to start and take its first lease.
START_TIMEOUT = 30.0
#: Seconds the runners get to catch up with the last event.
CATCH_UP_TIMEOUT = 60.0

SUBSCRIPTIONS = ("journal", "tally")
#: The app the runner processes run.
APP = "tests.subscription_app:create_app"


@dataclass
class Site:
    """The store of one test, the runner processes on it, and what they left behind."""

    url: str
    tmp_path: Path
    store: EventStore
    runners: list[SubscriptionsRun] = field(default_factory=list)

    @property
    def journal(self) -> Path:
        return self.tmp_path / "journal.txt"

    def runner(self, *, url: str | None = None, delay: float = 0.0) -> SubscriptionsRun:
        log = self.tmp_path / f"runner-{len(self.runners)}.log"
        env = {JOURNAL_ENV: str(self.journal), DELAY_ENV: str(delay)}
        started = SubscriptionsRun(APP, url or self.url, log, TAKEOVER, env).start()
        self.runners.append(started)
        return started

    def logs(self) -> str:
        return "\n".join(f"--- runner {r.pid} ---\n{r.log_tail()}" for r in self.runners if r.process)

    def info(self, name: str) -> SubscriptionInfo | None:
        return self.store.subscription_store().get(name)

    def holder_pid(self, name: str) -> int | None:
        """The pid in the stored runner id (``host:pid:token``) of ``name``, or None."""
        info = self.info(name)
        if info is None or info.runner is None:
            return None
        return int(info.runner.split(":")[-2])

    def wait_held(self, by: set[int], timeout: float, names: tuple[str, ...] = SUBSCRIPTIONS) -> int:
        """Wait until one of the pids ``by`` holds every one of ``names``; return that pid."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            holders = {self.holder_pid(name) for name in names}
            if len(holders) == 1 and (pid := holders.pop()) in by:
                return pid
            time.sleep(0.05)
        raise AssertionError(f"{names} not held by one of {by} within {timeout}s\n{self.logs()}")

    def append(self, count: int, name: str = "THING") -> list[int]:
        return [append_raw(self.store, f"s{n % 7}", name, {"n": n}) for n in range(count)]

    def journal_lines(self) -> list[tuple[int, int, str]]:
        """``(pid, sequence_num, event_id)`` of every journal line."""
        if not self.journal.exists():
            return []
        lines = []
        for line in self.journal.read_text().splitlines():
            pid, position, event_id = line.split()
            lines.append((int(pid), int(position), event_id))
        return lines

    def tally(self) -> tuple[int, int, list[int]]:
        """``(rows, distinct event ids, positions in order)`` of the projection's table."""
        with self.store.subscription_store().projection_reader() as db:
            rows = db.execute("SELECT event_id, position FROM tally ORDER BY position").fetchall()
        return len(rows), len({row[0] for row in rows}), [int(row[1]) for row in rows]

    def wait_caught_up(self, timeout: float = CATCH_UP_TIMEOUT) -> int:
        """Wait until both subscriptions are at the last stored position; return it."""
        last = self.store.last_sequence_num()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            infos = [self.info(name) for name in SUBSCRIPTIONS]
            if all(info is not None and info.position >= last for info in infos):
                return last
            time.sleep(0.1)
        positions = {name: getattr(self.info(name), "position", None) for name in SUBSCRIPTIONS}
        raise AssertionError(f"not caught up with {last} within {timeout}s: {positions}\n{self.logs()}")

    def check_exactly_once(self, last: int) -> None:
        rows, distinct, positions = self.tally()
        assert (rows, distinct) == (last, last), f"tally: {rows} rows, {distinct} distinct, {last} events"
        assert positions == list(range(1, last + 1))

    def close(self) -> None:
        for runner in self.runners:
            runner.kill()
        self.store.close()


@pytest.fixture(params=DURABLE_BACKENDS)
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Site]:
    require_backend(request.param)
    with fresh_store_url(request.param, tmp_path) as url:
        store = event_store_from_url(url)
        store.open()
        made = Site(url, tmp_path, store)
        try:
            yield made
        finally:
            made.close()


def test_two_processes_one_runner_nothing_twice(site: Site) -> None:
    first = site.runner()
    holder = site.wait_held({first.pid}, START_TIMEOUT)
    second = site.runner()
    site.append(300)
    last = site.wait_caught_up()
    # The second process is up and tries the leases meanwhile, in vain: the first holds them.
    time.sleep(TAKEOVER)
    assert second.alive(), site.logs()
    lines = site.journal_lines()
    assert {pid for pid, _, _ in lines} == {holder}
    assert [position for _, position, _ in lines] == list(range(1, last + 1))
    site.check_exactly_once(last)


def test_sigkill_of_the_runner_hands_over_within_the_takeover_setting(site: Site) -> None:
    first = site.runner()
    site.wait_held({first.pid}, START_TIMEOUT)
    second = site.runner()
    site.append(20)
    site.wait_caught_up()
    time.sleep(0.5)  # let the second one settle into retrying the leases
    first.kill()
    killed_at = time.monotonic()
    site.wait_held({second.pid}, TAKEOVER + TAKEOVER_SLACK + 5)
    taken_after = time.monotonic() - killed_at
    site.append(20)
    last = site.wait_caught_up()
    assert taken_after <= TAKEOVER + TAKEOVER_SLACK, f"took over after {taken_after:.2f}s"
    handled = Counter(position for _, position, _ in site.journal_lines())
    assert set(handled) == set(range(1, last + 1))
    assert {pid for pid, position, _ in site.journal_lines() if position > 20} == {second.pid}
    site.check_exactly_once(last)


def test_sigterm_stops_cleanly_and_releases_the_leases(site: Site) -> None:
    runner = site.runner()
    site.wait_held({runner.pid}, START_TIMEOUT)
    site.append(50)
    last = site.wait_caught_up()
    assert runner.terminate() == 0, site.logs()
    assert "Stopped." in runner.log_tail()
    for name in SUBSCRIPTIONS:
        info = site.info(name)
        assert info is not None and info.runner is None and info.position == last


def test_a_reset_reaches_the_runner_of_another_process(site: Site) -> None:
    """An operator resets both subscriptions from this process while a runner process holds them:
    the reset ends its leases, it takes them again and goes on from the new positions (the
    projection rebuilt from the first event, its old rows emptied in the same transaction)."""
    from flask import Flask

    from tests import subscription_app

    runner = site.runner()
    site.wait_held({runner.pid}, START_TIMEOUT)
    site.append(30)
    last = site.wait_caught_up()
    app = Flask("operator")
    app.config.update(TESTING=True, SHIMMIE_EVENT_STORE=site.url)
    subscription_app.stack.init_app(app)
    try:
        cli = app.test_cli_runner()
        for args in (["tally"], ["journal", "--to", "25"]):
            result = cli.invoke(args=["shimmie", "subscriptions", "reset", *args])
            assert result.exit_code == 0, result.output
        deadline = time.monotonic() + CATCH_UP_TIMEOUT
        while time.monotonic() < deadline and len(site.journal_lines()) < last + 5:
            time.sleep(0.05)
        site.wait_caught_up()
        site.check_exactly_once(last)
        positions = [position for _, position, _ in site.journal_lines()]
        assert positions == [*range(1, last + 1), *range(26, last + 1)]
        assert site.holder_pid("tally") == runner.pid
    finally:
        subscription_app.stack.shutdown(app)


def _kills(pytestconfig: pytest.Config) -> int:
    return 12 if slow_runs_enabled(pytestconfig) else 3


def test_the_projection_holds_each_event_once_across_sigkills(
    site: Site, pytestconfig: pytest.Config
) -> None:
    """Two runners at all times; the holder is SIGKILLed (often inside a projection transaction, each
    event taking a few milliseconds) while a writer appends, and replaced by a new process."""
    seed = int(os.environ.get("SHIMMIE_CRASH_SEED") or random.randrange(1 << 30))
    rng = random.Random(seed)
    delay = 0.003
    site.runner(delay=delay)
    site.runner(delay=delay)
    # Started at once, the two may share the work: one runs the journal, the other the tally.
    site.wait_held({r.pid for r in site.runners}, START_TIMEOUT, ("tally",))
    stop = threading.Event()
    writer_store = event_store_from_url(site.url)
    writer_store.open()
    failures: list[BaseException] = []

    def write() -> None:
        try:
            n = 0
            while not stop.is_set():
                for _ in range(rng.randrange(5, 40)):
                    append_raw(writer_store, f"s{n % 5}", "BURST", {"n": n})
                    n += 1
                stop.wait(rng.uniform(0.05, 0.3))
        except BaseException as error:
            failures.append(error)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        for kill in range(_kills(pytestconfig)):
            live = {r.pid for r in site.runners if r.alive()}
            holder = site.wait_held(live, TAKEOVER + TAKEOVER_SLACK + 10, ("tally",))
            time.sleep(rng.uniform(0.3, 1.2))
            victim = next(r for r in site.runners if r.pid == holder)
            victim.kill()
            site.runner(delay=delay)
            assert not failures, f"the writer failed (seed {seed}, kill {kill}): {failures[0]!r}"
    finally:
        stop.set()
        writer.join(10)
        writer_store.close()
    assert not failures, f"the writer failed (seed {seed}): {failures[0]!r}"
    last = site.wait_caught_up()
    site.check_exactly_once(last)
    handled = {position for _, position, _ in site.journal_lines()}
    assert handled == set(range(1, last + 1)), f"seed {seed}: the reactor missed events"


@pytest.mark.parametrize("server_name", ["gunicorn", "granian"])
def test_server_workers_run_them_in_one_worker_and_stop_on_sigterm(site: Site, server_name: str) -> None:
    """example_songs under gunicorn and under granian: each worker's thread tries the leases, one
    worker works on each subscription, and SIGTERM (the server's graceful stop) releases them."""
    require_server(server_name)
    env = {"FLASK_SHIMMIE_SUBSCRIPTION_TAKEOVER": str(TAKEOVER)}
    server = SERVERS[server_name](site.url, site.tmp_path / f"{server_name}.log", workers=2, env=env)
    server.start()
    try:
        workers = server.wait_workers()
        for n in range(5):
            body = {"title": f"Song {n}", "artist": "The Leases", "year": "2024"}
            assert request(server.base_url, "POST", "/v1/songs", json_body=body).status == 201
        deadline = time.monotonic() + 20
        titles: list[str] = []
        while time.monotonic() < deadline and len(titles) < 5:
            reply = request(server.base_url, "GET", "/v1/artists/The%20Leases/songs")
            titles = [song["title"] for song in reply.json()] if reply.status == 200 else []
            time.sleep(0.1)
        assert titles == [f"Song {n}" for n in range(5)], server.log_tail()
        # Workers that start at once may split the leases between them (they are taken one by
        # one); each subscription has one holder, a worker of this server.
        holders = {name: site.holder_pid(name) for name in ("songs-by-artist", "notify-new-songs")}
        assert set(holders.values()) <= workers, (holders, workers)
    finally:
        server.stop()
    infos = {name: site.info(name) for name in ("songs-by-artist", "notify-new-songs")}
    held = {name: info.runner for name, info in infos.items() if info is not None and info.runner}
    # granian's workers end with os._exit(), where atexit never runs: the runners stop at the
    # threading shutdown too (flask_shimmie/process_exit.py).
    assert not held, f"still held after SIGTERM: {held}\n{server.log_tail()}"
    last = site.store.last_sequence_num()
    for name, info in infos.items():
        assert info is not None and info.position == last, (name, info, last, server.log_tail())


@pytest.mark.postgres
def test_a_runner_cut_off_from_postgresql_loses_its_lease_to_the_other(tmp_path: Path) -> None:
    """The holder reaches the server through a TCP proxy; the proxy cuts every connection while
    events come in. The other runner (connected directly) takes over; after the cut the projection
    holds each event exactly once and the reactor handled each at least once."""
    require_backend("postgresql")
    target = urlsplit(postgres_base_url())
    with fresh_store_url("postgresql") as direct:
        proxy = TcpProxy((target.hostname or "127.0.0.1", target.port or 5432))
        proxy.start()
        store = event_store_from_url(direct)
        store.open()
        site = Site(direct, tmp_path, store)
        try:
            cut_off = site.runner(url=proxied(direct, proxy.port), delay=0.002)
            site.wait_held({cut_off.pid}, START_TIMEOUT)
            other = site.runner(delay=0.002)
            site.append(200)
            time.sleep(0.2)
            proxy.cut()
            cut_at = time.monotonic()
            site.append(100)
            site.wait_held({other.pid}, TAKEOVER + TAKEOVER_SLACK + 5)
            taken_after = time.monotonic() - cut_at
            site.append(100)
            proxy.restore()
            site.append(50)
            last = site.wait_caught_up()
            assert cut_off.alive(), site.logs()  # it rode the outage out
            assert taken_after <= TAKEOVER + TAKEOVER_SLACK, f"took over after {taken_after:.2f}s"
            site.check_exactly_once(last)
            handled = {position for _, position, _ in site.journal_lines()}
            assert handled == set(range(1, last + 1))
            assert site.holder_pid("tally") == other.pid
        finally:
            site.close()
            proxy.close()

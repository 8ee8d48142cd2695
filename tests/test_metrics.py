"""``SHIMMIE_METRICS``: Prometheus text at ``<SHIMMIE_ADMIN_URL>/metrics``.

In-process apps check each metric's value after known appends, replays and subscription rows, the
access rules and the configuration errors; a gunicorn server with 3 workers and
``PROMETHEUS_MULTIPROC_DIR`` checks that every worker answers with the totals of all.
"""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

pytest.importorskip(
    "prometheus_client", reason="prometheus_client is not installed (pip install -e '.[test]')"
)

from prometheus_client.openmetrics.parser import (  # noqa: E402
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from flask_shimmie import (  # noqa: E402
    NO_STREAM,
    ConfigurationError,
    NewEvent,
    ShimmieStack,
    StoreUnavailableError,
    StreamVersionError,
)
from flask_shimmie.metrics import APPEND_BUCKETS, MULTIPROC_ENV, LocalMetrics  # noqa: E402
from tests.backends import fresh_store_url, require_backend  # noqa: E402
from tests.helpers import append_raw  # noqa: E402
from tests.serving import GunicornServer, Reply, child_env, request, run_python, serving  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text exposition: ``{(name, sorted labels): value}``."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"{name}{labels} is not in the exposition: {sorted(samples)}"
    return samples[key]


def scrape(client: FlaskClient, **headers: str) -> Samples:
    response = client.get("/admin/metrics", headers=headers)
    assert response.status_code == 200, response.get_data(True)
    assert response.content_type.startswith("text/plain; version=0.0.4")
    return parse(response.get_data(True))


@pytest.fixture
def metrics_app(make_app: Callable[..., Flask]) -> Flask:
    return make_app(SHIMMIE_ADMIN_URL="/admin", SHIMMIE_METRICS=True, SHIMMIE_METRICS_PUBLIC=True)


# -- values -----------------------------------------------------------------------------------------


def test_each_metric_holds_the_appends_and_replays_made(stack: ShimmieStack, metrics_app: Flask) -> None:
    with metrics_app.app_context():
        stack.record_event("song-1", "SONG_CREATED", {}, expected_version=NO_STREAM)
        stack.record_event("song-1", "SONG_RENAMED", {}, expected_version=1)
        stack.record_unchecked_events(
            [NewEvent("song-2", "SONG_CREATED", {}), NewEvent("song-3", "SONG_CREATED", {})]
        )
        stack.replay()
        stack.replay(from_sequence=3)

    samples = scrape(metrics_app.test_client())

    assert value(samples, "shimmie_events_appended_total", event_name="SONG_CREATED") == 3
    assert value(samples, "shimmie_events_appended_total", event_name="SONG_RENAMED") == 1
    # Three appends (the batch is one), each far below a second on the memory store.
    assert value(samples, "shimmie_append_seconds_count", store="memory") == 3
    assert value(samples, "shimmie_append_seconds_bucket", store="memory", le="1.0") == 3
    assert value(samples, "shimmie_append_seconds_bucket", store="memory", le="+Inf") == 3
    assert 0 < value(samples, "shimmie_append_seconds_sum", store="memory") < 1
    assert value(samples, "shimmie_replay_events_total") == 4 + 2
    assert value(samples, "shimmie_last_stored_position") == 4
    assert value(samples, "shimmie_last_handled_position") == 4
    assert value(samples, "shimmie_follower_lag_events") == 0
    assert value(samples, "shimmie_store_up") == 1


def test_counts_stay_exact_across_threads_and_folds(stack: ShimmieStack, metrics_app: Flask) -> None:
    from flask_shimmie.metrics import FOLD_EVERY, FOLD_NAMES

    threads, each = 4, FOLD_EVERY + 50

    def write(n: int) -> None:
        with metrics_app.app_context():
            for i in range(each):
                stack.record_unchecked_event(f"t{n}-{i}", "E", {})

    pool = [threading.Thread(target=write, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    with metrics_app.app_context():
        # A batch large enough to fold its names at once.
        stack.record_unchecked_events([NewEvent(f"b{i}", "B", {}) for i in range(FOLD_NAMES)])

    samples = scrape(metrics_app.test_client())

    assert value(samples, "shimmie_events_appended_total", event_name="E") == threads * each
    assert value(samples, "shimmie_events_appended_total", event_name="B") == FOLD_NAMES
    assert value(samples, "shimmie_append_seconds_count", store="memory") == threads * each + 1
    assert value(samples, "shimmie_last_stored_position") == threads * each + FOLD_NAMES


def test_the_histogram_buckets_are_cumulative(stack: ShimmieStack, metrics_app: Flask) -> None:
    state = metrics_app.extensions["shimmie"]
    metrics = state.metrics
    assert isinstance(metrics, LocalMetrics)
    with metrics_app.app_context():
        event = stack.record_unchecked_event("s", "E", {})
    from flask_shimmie.storage.interface import AppendResult

    # Two more appends of known durations: one in the first bucket, one past the last bound.
    metrics.appended(AppendResult([event], False), APPEND_BUCKETS[0] / 2)
    metrics.appended(AppendResult([event], False), APPEND_BUCKETS[-1] * 2)

    samples = scrape(metrics_app.test_client())

    bounds = [repr(bound) for bound in APPEND_BUCKETS] + ["+Inf"]
    counts = [value(samples, "shimmie_append_seconds_bucket", store="memory", le=le) for le in bounds]
    assert counts == sorted(counts)
    assert counts[0] >= 1 and counts[-2] == 2 and counts[-1] == 3
    assert value(samples, "shimmie_append_seconds_count", store="memory") == 3
    # An idempotent retry and these known-event results count no event.
    assert value(samples, "shimmie_events_appended_total", event_name="E") == 1


def test_a_retry_counts_its_append_but_no_event_and_a_refused_append_counts_nothing(
    stack: ShimmieStack, metrics_app: Flask
) -> None:
    with metrics_app.app_context():
        first = stack.record_unchecked_event("s", "E", {})
        again = stack.record_unchecked_event("s", "E", {}, event_id=first.event_id)
        assert again.sequence_num == first.sequence_num
        with pytest.raises(StreamVersionError):
            stack.record_event("s", "E", {}, expected_version=NO_STREAM)

    samples = scrape(metrics_app.test_client())

    assert value(samples, "shimmie_events_appended_total", event_name="E") == 1
    assert value(samples, "shimmie_append_seconds_count", store="memory") == 2
    assert value(samples, "shimmie_last_stored_position") == 1


def test_the_lag_is_what_the_store_has_and_this_process_has_not_applied(
    stack: ShimmieStack, metrics_app: Flask
) -> None:
    state = metrics_app.extensions["shimmie"]
    with metrics_app.app_context():
        stack.record_unchecked_event("s", "E", {})
    # Written behind the app's back, as another process would: not applied here yet.
    append_raw(state.event_store, "t", "E")
    append_raw(state.event_store, "t", "E")

    samples = scrape(metrics_app.test_client())

    assert value(samples, "shimmie_last_stored_position") == 3
    assert value(samples, "shimmie_last_handled_position") == 1
    assert value(samples, "shimmie_follower_lag_events") == 2
    # Events this app did not append are not counted as its appends.
    assert value(samples, "shimmie_events_appended_total", event_name="E") == 1


def test_subscription_metrics_come_from_the_stored_rows(stack: ShimmieStack, metrics_app: Flask) -> None:
    state = metrics_app.extensions["shimmie"]
    with metrics_app.app_context():
        events = [stack.record_unchecked_event(f"s{n}", "E", {}) for n in range(5)]
    subscriptions = state.event_store.subscription_store()
    subscriptions.register("email-new-songs", "reactor", start_position=0)
    subscriptions.register("songs-by-artist", "projection", start_position=0, version=1)
    lease = subscriptions.try_lease("email-new-songs", "test:1:a")
    assert lease is not None
    subscriptions.park(lease, events[0].event_id, 1, "boom", 5)
    subscriptions.park(lease, events[2].event_id, 3, "boom", 5)
    subscriptions.advance(lease, 4)

    samples = scrape(metrics_app.test_client())

    assert value(samples, "shimmie_subscription_position", subscription="email-new-songs") == 4
    assert value(samples, "shimmie_subscription_lag_events", subscription="email-new-songs") == 1
    assert value(samples, "shimmie_parked_events", subscription="email-new-songs") == 2
    assert value(samples, "shimmie_subscription_position", subscription="songs-by-artist") == 0
    assert value(samples, "shimmie_subscription_lag_events", subscription="songs-by-artist") == 5
    assert value(samples, "shimmie_parked_events", subscription="songs-by-artist") == 0


def test_two_apps_in_one_process_count_apart(stack: ShimmieStack, make_app: Callable[..., Flask]) -> None:
    config = {"SHIMMIE_ADMIN_URL": "/admin", "SHIMMIE_METRICS": True, "SHIMMIE_METRICS_PUBLIC": True}
    first, second = make_app(**config), make_app(**config)
    with first.app_context():
        stack.record_unchecked_event("s", "ONE", {})
    with second.app_context():
        stack.record_unchecked_event("s", "TWO", {})
        stack.record_unchecked_event("s", "TWO", {})

    one, two = scrape(first.test_client()), scrape(second.test_client())

    assert value(one, "shimmie_events_appended_total", event_name="ONE") == 1
    assert ("shimmie_events_appended_total", (("event_name", "TWO"),)) not in one
    assert value(two, "shimmie_events_appended_total", event_name="TWO") == 2
    assert value(two, "shimmie_last_stored_position") == 2


def test_a_store_that_cannot_be_read_leaves_the_positions_out(
    stack: ShimmieStack, metrics_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = metrics_app.extensions["shimmie"]
    with metrics_app.app_context():
        stack.record_unchecked_event("s", "E", {})

    def down() -> int:
        raise StoreUnavailableError("the database is gone")

    monkeypatch.setattr(state.event_store, "last_sequence_num", down)
    samples = scrape(metrics_app.test_client())

    assert value(samples, "shimmie_store_up") == 0
    assert value(samples, "shimmie_events_appended_total", event_name="E") == 1
    assert not any(name == "shimmie_last_stored_position" for name, _ in samples)


def test_a_scraper_asking_for_openmetrics_gets_it(stack: ShimmieStack, metrics_app: Flask) -> None:
    with metrics_app.app_context():
        stack.record_unchecked_event("s", "E", {})

    response = metrics_app.test_client().get(
        "/admin/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )

    assert response.status_code == 200
    assert response.content_type.startswith("application/openmetrics-text")
    families = {family.name: family for family in openmetrics_families(response.get_data(True))}
    assert families["shimmie_events_appended"].type == "counter"
    assert [s.value for s in families["shimmie_events_appended"].samples if s.name.endswith("_total")] == [1]


# -- access -----------------------------------------------------------------------------------------


def _admin_app(stack: ShimmieStack, make_app: Callable[..., Flask], **config: Any) -> Flask:
    @stack.authenticator
    def from_header() -> dict[str, Any] | None:
        from flask import request as incoming

        role = incoming.headers.get("X-Role")
        return {"role": role} if role else None

    return make_app(SHIMMIE_ADMIN_URL="/admin", SHIMMIE_METRICS=True, **config)


def test_the_admin_authorizer_decides_who_may_scrape(
    stack: ShimmieStack, make_app: Callable[..., Flask]
) -> None:
    app = _admin_app(stack, make_app)
    client = app.test_client()

    closed = client.get("/admin/metrics", headers={"X-Role": "admin"})
    assert closed.status_code == 403 and closed.get_json()["code"] == 403

    stack.admin_authorizer(lambda identity: identity["role"] == "admin")
    anonymous = client.get("/admin/metrics")
    assert anonymous.status_code == 401
    assert set(anonymous.get_json()) >= {"code", "status", "message"}
    assert client.get("/admin/metrics", headers={"X-Role": "reader"}).status_code == 403
    allowed = client.get("/admin/metrics", headers={"X-Role": "admin"})
    assert allowed.status_code == 200
    assert "shimmie_last_stored_position 0.0" in allowed.get_data(True)


def test_public_metrics_need_no_identity(stack: ShimmieStack, make_app: Callable[..., Flask]) -> None:
    app = _admin_app(stack, make_app, SHIMMIE_METRICS_PUBLIC=True)
    stack.admin_authorizer(lambda identity: False)
    client = app.test_client()

    assert client.get("/admin/metrics").status_code == 200
    # The rest of the admin API stays guarded.
    assert client.get("/admin/events").status_code == 401


def test_without_the_setting_there_is_no_metrics_route(make_app: Callable[..., Flask]) -> None:
    app = make_app(SHIMMIE_ADMIN_URL="/admin")

    response = app.test_client().get("/admin/metrics")

    assert response.status_code == 404
    assert app.extensions["shimmie"].metrics is None


# -- configuration ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"SHIMMIE_METRICS": True}, "SHIMMIE_METRICS = True needs SHIMMIE_ADMIN_URL"),
        ({"SHIMMIE_ADMIN_URL": "/admin", "SHIMMIE_METRICS": "yes"}, "SHIMMIE_METRICS = 'yes' must be True"),
        ({"SHIMMIE_METRICS_PUBLIC": 1}, "SHIMMIE_METRICS_PUBLIC = 1 must be True or False"),
    ],
)
def test_bad_metrics_settings_fail_at_init(
    make_app: Callable[..., Flask], config: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(")):
        make_app(**config)


def test_without_prometheus_client_the_error_names_the_extra(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    # None in sys.modules makes an import fail, as if the package were not installed.
    for name in [n for n in sys.modules if n == "prometheus_client" or n.startswith("prometheus_client.")]:
        monkeypatch.setitem(sys.modules, name, None)

    with pytest.raises(ConfigurationError, match=r"pip install 'flask-shimmie\[metrics\]'"):
        make_app(SHIMMIE_ADMIN_URL="/admin", SHIMMIE_METRICS=True)


def test_a_missing_multiprocess_directory_is_refused(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "nowhere"))

    with pytest.raises(ConfigurationError, match="PROMETHEUS_MULTIPROC_DIR = .* is not a directory"):
        make_app(SHIMMIE_ADMIN_URL="/admin", SHIMMIE_METRICS=True)


def test_a_multiprocess_directory_set_after_prometheus_client_was_imported_is_refused(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from prometheus_client import values

    if values.ValueClass is not values.MutexValue:
        pytest.skip("this test process runs in prometheus_client's multiprocess mode")
    # This test process imported prometheus_client without the variable: its counts stay per process.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))

    with pytest.raises(ConfigurationError, match="set after prometheus_client was imported"):
        make_app(SHIMMIE_ADMIN_URL="/admin", SHIMMIE_METRICS=True)


def test_prometheus_client_is_not_imported_when_metrics_are_off() -> None:
    script = textwrap.dedent(
        """
        import sys
        from flask import Flask
        from flask_shimmie import ShimmieStack
        stack = ShimmieStack()
        app = Flask("off")
        app.config["SHIMMIE_ADMIN_URL"] = "/admin"
        stack.init_app(app)
        with app.app_context():
            stack.record_unchecked_event("s", "E", {})
            stack.replay()
        assert app.test_client().get("/admin/health").status_code == 200
        print(sorted(n for n in sys.modules if n.startswith("prometheus_client")))
        """
    )
    assert run_python(script).strip() == "[]"


# -- several worker processes -----------------------------------------------------------------------


def _metrics_of(reply: Reply) -> Samples:
    assert reply.status == 200, reply.describe()
    return parse(reply.text)


def _scrape_every_worker(server: GunicornServer, workers: set[int]) -> dict[int, Samples]:
    """A scrape answered by each of ``workers`` (new connections until each has answered)."""
    found: dict[int, Samples] = {}
    deadline = time.monotonic() + 30
    while set(found) < workers and time.monotonic() < deadline:
        reply = request(server.base_url, "GET", "/admin/metrics")
        if reply.served_by is not None:
            found[reply.served_by] = _metrics_of(reply)
    assert set(found) >= workers, f"workers {workers - set(found)} never answered a scrape"
    return found


def _settled_scrapes(
    server: GunicornServer, workers: set[int], appended: int, replayed: int
) -> dict[int, Samples]:
    """Scrapes answered by each of ``workers``, once every one counts ``appended`` songs, ``replayed``
    events replayed and no lag.

    Each worker sends its counts and its position from its follower a few times a second: within
    a few seconds every answer agrees (the caller asserts on the last scrapes, settled or not).
    """
    deadline = time.monotonic() + 10
    while True:
        scrapes = _scrape_every_worker(server, workers)
        settled = all(
            value(samples, "shimmie_events_appended_total", event_name="SONG_CREATED") == appended
            and value(samples, "shimmie_replay_events_total") == replayed
            and value(samples, "shimmie_follower_lag_events") == 0
            for samples in scrapes.values()
        )
        if settled or time.monotonic() > deadline:
            return scrapes
        time.sleep(0.1)


def _post_songs(server: GunicornServer, count: int, label: str) -> set[int]:
    writers: set[int] = set()
    for n in range(count):
        body = {"title": f"{label}-{n}", "artist": "The Counters", "year": "2024"}
        reply = request(server.base_url, "POST", "/v1/songs", json_body=body)
        assert reply.status == 201, reply.describe()
        assert reply.served_by is not None
        writers.add(reply.served_by)
    return writers


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("preload", [False, True], ids=["workers-import", "preload"])
def test_every_gunicorn_worker_answers_with_the_totals_of_all(
    backend: str, preload: bool, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    require_backend(backend)
    directory = tmp_path_factory.mktemp("prometheus")
    env = {"FLASK_SHIMMIE_METRICS": "true", "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    with fresh_store_url(backend, tmp_path, "songs") as url:
        with serving(url, tmp_path / "gunicorn.log", workers=3, preload=preload, env=env) as server:
            workers = server.wait_workers()
            # Which worker accepts a new connection is the kernel's choice: post
            # until at least two of them have taken writes (bounded).
            writers: set[int] = set()
            first = 0
            while len(writers) < 2 and first < 300:
                writers |= _post_songs(server, 30, f"first-{first}")
                first += 30
            assert len(writers) >= 2, f"only workers {writers} took {first} writes"

            for pid, samples in _settled_scrapes(server, workers, first, 0).items():
                where = f"(worker {pid})"
                assert value(samples, "shimmie_events_appended_total", event_name="SONG_CREATED") == first, (
                    where
                )
                assert value(samples, "shimmie_append_seconds_count", store=backend) == first, where
                assert value(samples, "shimmie_last_stored_position") == first, where
                # Each worker replayed the empty store at its start: nothing.
                assert value(samples, "shimmie_replay_events_total") == 0, where

            # A worker killed outright: its counts stay in the totals, its position leaves the gauges.
            victim = next(iter(writers))
            os.kill(victim, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while victim in server.worker_pids() or len(server.worker_pids()) < 3:
                assert time.monotonic() < deadline, "gunicorn did not replace the killed worker"
                time.sleep(0.05)
            # Every worker, the new one included, answers (and so has started) before the next writes.
            server.wait_ready(30)
            workers = server.wait_workers()
            _post_songs(server, 6, "second")
            scrapes = _settled_scrapes(server, workers, first + 6, first)
            for pid, samples in scrapes.items():
                where = f"(worker {pid})"
                assert (
                    value(samples, "shimmie_events_appended_total", event_name="SONG_CREATED") == first + 6
                ), where
                assert value(samples, "shimmie_append_seconds_count", store=backend) == first + 6, where
                assert value(samples, "shimmie_last_stored_position") == first + 6, where
                assert value(samples, "shimmie_last_handled_position") == first + 6, where
                assert value(samples, "shimmie_follower_lag_events") == 0, where
                # The new worker replayed the songs stored before it started.
                assert value(samples, "shimmie_replay_events_total") == first, where
            live = {p.name for p in directory.glob("gauge_live*.db")}
            assert not any(name.endswith(f"_{victim}.db") for name in live), live


#: Run before each script below: ``metrics_app(name, **config)`` is a stack and an app with
#: metrics on and the admin API at ``/admin``; ``record(stack, app, stream, count)`` appends.
METRICS_APP = """
from flask import Flask
from flask_shimmie import ShimmieStack

def metrics_app(name, **config):
    stack = ShimmieStack()
    app = Flask(name)
    app.config.update(SHIMMIE_ADMIN_URL="/admin", SHIMMIE_METRICS=True, **config)
    stack.init_app(app)
    return stack, app

def record(stack, app, stream, count):
    with app.app_context():
        for _ in range(count):
            stack.record_unchecked_event(stream, "E", {})
"""


@pytest.fixture
def multiproc_dir(tmp_path: Path) -> Path:
    """An empty ``PROMETHEUS_MULTIPROC_DIR``."""
    directory = tmp_path / "prometheus"
    directory.mkdir()
    return directory


def run_with_files(script: str, directory: Path) -> str:
    """Run :data:`METRICS_APP`, then ``script``, with ``directory`` as ``PROMETHEUS_MULTIPROC_DIR``."""
    return run_python(METRICS_APP + textwrap.dedent(script), child_env({MULTIPROC_ENV: str(directory)}))


def collected(directory: Path) -> Samples:
    """What prometheus_client's own collector reads from ``directory``."""
    reader = """
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        print(generate_latest(registry).decode())
        """
    return parse(run_python(reader, child_env({MULTIPROC_ENV: str(directory)})))


def test_counts_reach_the_files_at_exit_and_a_forked_child_sends_only_its_own(multiproc_dir: Path) -> None:
    script = """
        import os, sys
        stack, app = metrics_app("writer")
        record(stack, app, "parent", 2)
        child = os.fork()
        if child == 0:
            record(stack, app, "child", 3)
            sys.exit(0)  # no scrape, no follower: only the exit sends the counts
        os.waitpid(child, 0)
        """
    run_with_files(script, multiproc_dir)
    samples = collected(multiproc_dir)
    assert value(samples, "shimmie_events_appended_total", event_name="E") == 5
    assert value(samples, "shimmie_append_seconds_count", store="memory") == 5


def test_a_multiprocessing_workers_counts_reach_the_files_though_it_ends_with_os_exit(
    multiproc_dir: Path,
) -> None:
    # granian's workers are multiprocessing children: they end with os._exit(), without atexit.
    script = """
        import multiprocessing

        def work():
            stack, app = metrics_app("worker")
            record(stack, app, "worker", 4)

        if __name__ == "__main__":
            worker = multiprocessing.get_context("fork").Process(target=work)
            worker.start()
            worker.join(30)
            assert worker.exitcode == 0, worker.exitcode
        """
    run_with_files(script, multiproc_dir)
    assert value(collected(multiproc_dir), "shimmie_events_appended_total", event_name="E") == 4


def test_a_scrape_leaves_out_a_file_another_worker_is_creating(multiproc_dir: Path) -> None:
    # A worker opens its values file, then sizes it: a scrape in between used to answer 500.
    (multiproc_dir / "counter_999999.db").touch()
    script = """
        stack, app = metrics_app("scraped", SHIMMIE_METRICS_PUBLIC=True)
        record(stack, app, "s", 1)
        reply = app.test_client().get("/admin/metrics")
        print(reply.status_code)
        print(reply.get_data(as_text=True))
        """
    out = run_with_files(script, multiproc_dir)
    status, _, text = out.partition("\n")
    assert status == "200", out
    assert value(parse(text), "shimmie_events_appended_total", event_name="E") == 1


# -- the cost benchmark -----------------------------------------------------------------------------


def test_the_benchmark_measures_what_metrics_and_tracing_cost_an_append() -> None:
    from benchmarks.cli import QUICK, backends_of, parse_args, run
    from benchmarks.metrics_cost import M1, M2, M3, M4

    assert backends_of(parse_args(["metrics"]).targets) == ([], False)
    settings = replace(QUICK, duration=0.04, warmup=0.01, repeats=1)

    rows = run([], settings, metrics=True)

    assert [(row.scenario, row.backend) for row in rows] == [
        (M1, "memory"),
        (M1, "sqlite"),
        (M2, "sqlite"),
        (M3, "memory"),
        (M4, "memory"),
    ]
    for row in rows:
        assert row.ratio is not None and row.ratio > 0, row
        assert "µs CPU/append" in row.ours, row
    assert [row.holds is None for row in rows] == [False, False, False, False, True]

"""``X-Seq-Num-Min`` waits only for admitted callers of a matched route, boundedly, within a deadline.

In-process tests use a small app: an open view, a guarded one (``@authorize``) and the admin API,
tokens ``Bearer user`` and ``Bearer admin``. The server tests run example_songs under gunicorn
(gthread) and flood it with requests that ask for a position that never comes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from flask import Blueprint, Flask
from werkzeug.test import TestResponse

from flask_shimmie import ConfigurationError, Event, ShimmieStack, authorize, current_stack
from tests.helpers import ADMIN, USER, add_guarded_views, add_open_view, append_raw, token_app
from tests.serving import GunicornServer, Reply, run_threads, serving
from tests.serving import request as http_request

NEVER = "999999999"


def build(config: Mapping[str, Any] | None = None) -> tuple[Flask, ShimmieStack]:
    bp = Blueprint("waits", __name__)
    add_open_view(bp)
    add_guarded_views(bp)

    @bp.post("/write")
    @authorize(lambda identity: True)
    def write() -> tuple[dict[str, Any], int]:
        event = current_stack.record_unchecked_event("w", "WRITTEN", {})
        return {"sequence_num": event.sequence_num}, 201

    return token_app("Waits", "/w", bp, {"SHIMMIE_SEQ_WAIT_TIMEOUT": 2.0, **(config or {})})


@pytest.fixture
def app() -> Iterator[Flask]:
    app, stack = build()
    yield app
    stack.shutdown(app)


def timed(call: Callable[[], TestResponse]) -> tuple[TestResponse, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def waiting(headers: Mapping[str, str] | None = None) -> dict[str, str]:
    return {"X-Seq-Num-Min": NEVER, **(headers or {})}


@pytest.mark.parametrize(
    ("method", "path", "headers", "code"),
    [
        pytest.param("GET", "/nope", USER, 404, id="unknown-path"),
        pytest.param("GET", "/w/write", USER, 405, id="wrong-method"),
        pytest.param("GET", "/w/guarded", {}, 401, id="no-identity"),
        pytest.param("GET", "/w/admins", USER, 403, id="refused"),
        pytest.param("POST", "/w/write", {}, 401, id="command-no-identity"),
        pytest.param("GET", "/admin/events", {}, 401, id="admin-no-identity"),
        pytest.param("GET", "/admin/events", USER, 403, id="admin-refused"),
        pytest.param("POST", "/admin/replay", USER, 403, id="admin-command-refused"),
    ],
)
def test_unmatched_or_refused_requests_never_wait(
    app: Flask, method: str, path: str, headers: dict[str, str], code: int
) -> None:
    response, elapsed = timed(lambda: app.test_client().open(path, method=method, headers=waiting(headers)))
    assert response.status_code == code, response.get_data(as_text=True)
    assert response.get_json()["code"] == code
    assert elapsed < 1.0, f"{method} {path} waited {elapsed:.2f}s before its {code}"


def test_an_admitted_caller_waits_until_the_timeout(app: Flask) -> None:
    for path, headers in [("/w/guarded", USER), ("/w/open", {}), ("/admin/events", ADMIN)]:
        started = time.monotonic()
        response = app.test_client().get(path, headers=waiting(headers))
        elapsed = time.monotonic() - started
        assert response.status_code == 503, response.get_data(as_text=True)
        assert NEVER in response.get_json()["message"]
        assert 1.9 <= elapsed < 4.0, (path, elapsed)


def test_an_admitted_caller_is_answered_once_the_position_arrives(app: Flask) -> None:
    state = app.extensions["shimmie"]
    with app.app_context():
        state.ready()

    def other_process() -> None:
        time.sleep(0.2)
        append_raw(state.event_store, "elsewhere", "WRITTEN")

    thread = threading.Thread(target=other_process)
    thread.start()
    try:
        response = app.test_client().get("/w/guarded", headers={**USER, "X-Seq-Num-Min": "1"})
    finally:
        thread.join(5)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["X-Seq-Num"] == "1"


def test_an_automatic_options_answer_never_waits(app: Flask) -> None:
    response, elapsed = timed(lambda: app.test_client().options("/w/guarded", headers=waiting()))
    assert response.status_code == 200 and "GET" in response.headers["Allow"]
    assert elapsed < 1.0


def test_over_the_bound_a_waiter_is_refused_at_once() -> None:
    app, stack = build({"SHIMMIE_MAX_SEQ_WAITERS": 1, "SHIMMIE_SEQ_WAIT_TIMEOUT": 5.0})
    try:
        with app.app_context():
            stack.startup()
        first: list[TestResponse] = []
        waiter = threading.Thread(
            target=lambda: first.append(
                app.test_client().get("/w/guarded", headers={**USER, "X-Seq-Num-Min": "1"})
            )
        )
        waiter.start()
        state = app.extensions["shimmie"]
        try:
            time.sleep(0.3)  # the first request now holds the only slot
            refused, elapsed = timed(lambda: app.test_client().get("/w/open", headers={"X-Seq-Num-Min": "1"}))
            assert refused.status_code == 503, refused.get_data(as_text=True)
            assert (
                refused.get_json()["code"] == 503
                and "1 requests already wait" in refused.get_json()["message"]
            )
            assert refused.headers["Retry-After"] == "1"
            assert elapsed < 1.0, elapsed
            # Requests that need no wait are not refused.
            assert app.test_client().get("/w/open").status_code == 200
            append_raw(state.event_store, "elsewhere", "WRITTEN")
        finally:
            waiter.join(5)
        assert first and first[0].status_code == 200, (
            first[0].get_data(as_text=True) if first else "no answer"
        )
        # The slot was given back: the next waiter is served.
        assert app.test_client().get("/w/open", headers={"X-Seq-Num-Min": "1"}).status_code == 200
    finally:
        stack.shutdown(app)


def test_a_commands_catch_up_counts_against_its_wait() -> None:
    app, stack = build({"SHIMMIE_SEQ_WAIT_TIMEOUT": 1.0})

    def slow(event: Event) -> None:
        time.sleep(1.0)

    stack.subscribe("SLOW", slow)
    try:
        with app.app_context():
            stack.startup()
        append_raw(app.extensions["shimmie"].event_store, "s", "SLOW")
        response, elapsed = timed(
            lambda: app.test_client().post("/w/write", headers={**USER, "X-Seq-Num-Min": NEVER})
        )
        assert response.status_code == 503, response.get_data(as_text=True)
        # The catch-up took the whole budget: no second second of waiting after it.
        assert 1.0 <= elapsed < 1.6, elapsed
    finally:
        stack.shutdown(app)


def test_max_seq_waiters_default_and_validation() -> None:
    app, stack = build()
    assert app.config["SHIMMIE_MAX_SEQ_WAITERS"] == 16
    assert app.extensions["shimmie"].settings.max_seq_waiters == 16
    for bad in (0, -1, 1.5, "4", True, None):
        with pytest.raises(ConfigurationError, match="SHIMMIE_MAX_SEQ_WAITERS"):
            build({"SHIMMIE_MAX_SEQ_WAITERS": bad})


# -- against a real server ---------------------------------------------------------------------

#: The server's wait budget and bound: small, so the flood would visibly hold its threads.
SERVER_TIMEOUT = 3
SERVER_WAITERS = 2
THREADS = 4


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornServer]:
    log = tmp_path_factory.mktemp("seq_wait") / "gunicorn.log"
    env = {
        "FLASK_SHIMMIE_SEQ_WAIT_TIMEOUT": str(SERVER_TIMEOUT),
        "FLASK_SHIMMIE_MAX_SEQ_WAITERS": str(SERVER_WAITERS),
    }
    with serving("memory://", log, workers=1, worker_class="gthread", threads=THREADS, env=env) as running:
        yield running


def _send_all(server: GunicornServer, requests: list[tuple[str, str, dict[str, str]]]) -> list[Reply]:
    replies: list[Reply] = []
    lock = threading.Lock()

    def one(method: str, path: str, headers: dict[str, str]) -> Callable[[], None]:
        def run() -> None:
            reply = http_request(server.base_url, method, path, headers=headers, timeout=60)
            with lock:
                replies.append(reply)

        return run

    run_threads([one(*r) for r in requests], timeout=90)
    return replies


def test_a_flood_of_unauthorized_waiting_requests_does_not_delay_a_reader(server: GunicornServer) -> None:
    anonymous = {"Authorization": "", "X-Seq-Num-Min": NEVER}
    reader = {"Authorization": "Bearer reader-token", "X-Seq-Num-Min": NEVER}
    flood = [("GET", "/nope", anonymous), ("GET", "/v1/songs", anonymous), ("POST", "/v1/songs", reader)] * 17
    flood_replies: list[Reply] = []
    flooding = threading.Thread(target=lambda: flood_replies.extend(_send_all(server, flood)))
    flooding.start()
    try:
        time.sleep(0.2)  # the flood is in
        reply = http_request(
            server.base_url, "GET", "/v1/songs", headers={"Authorization": "Bearer reader-token"}
        )
    finally:
        flooding.join(120)
    assert reply.status == 200, reply.describe()
    # Before, each flood request held one of the 4 threads for SHIMMIE_SEQ_WAIT_TIMEOUT (3 s).
    assert reply.elapsed < 2.0, f"the reader waited {reply.elapsed:.2f}s behind the flood"
    assert len(flood_replies) == len(flood)
    assert sorted({r.status for r in flood_replies}) == [401, 403, 404], [
        r.describe() for r in flood_replies
    ][:5]
    slowest = max(flood_replies, key=lambda r: r.elapsed)
    assert slowest.elapsed < 2.0, slowest.describe()
    assert all(r.header("X-Seq-Num") is None for r in flood_replies)


def test_authorized_waiters_past_the_bound_get_503_at_once(server: GunicornServer) -> None:
    reader = {"Authorization": "Bearer reader-token", "X-Seq-Num-Min": NEVER}
    replies = _send_all(server, [("GET", "/v1/songs", reader)] * (SERVER_WAITERS + 3))
    assert all(r.status == 503 and r.json()["code"] == 503 for r in replies), [r.describe() for r in replies]
    refused = [r for r in replies if r.header("Retry-After") == "1"]
    waited = [r for r in replies if r.header("Retry-After") is None]
    assert len(waited) <= SERVER_WAITERS, [r.describe() for r in waited]
    assert len(refused) >= 3, [r.describe() for r in replies]
    assert all(r.elapsed < 1.5 for r in refused), [r.describe() for r in refused]
    assert all(r.elapsed >= SERVER_TIMEOUT - 0.2 for r in waited), [r.describe() for r in waited]

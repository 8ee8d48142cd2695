"""``GET /admin/events/stream``: Server-Sent Events of the stored and the live events.

Most tests serve the app for real (werkzeug's threaded server in this process, so the memory store
works) and read the stream with :class:`tests.sse_client.SseClient`; the refusals (400, 401, 403)
use the test client, since they end before any streaming.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, request

from flask_shimmie import ConfigurationError, Event, ShimmieStack
from flask_shimmie.sse import format_event
from tests.backends import fresh_store_url, require_backend
from tests.sse_client import LiveServer, SseClient, SseMessage

STREAM = "/admin/events/stream"
ADMIN = {"Authorization": "Bearer admin"}
USER = {"Authorization": "Bearer user"}


@pytest.fixture
def tokens() -> dict[str, dict[str, Any]]:
    """The tokens the app accepts; a test may revoke one by deleting it."""
    return {"admin": {"roles": ["admin"]}, "user": {"roles": []}}


@pytest.fixture
def make_sse_app(
    stack: ShimmieStack, make_app: Callable[..., Flask], tokens: dict[str, dict[str, Any]]
) -> Callable[..., Flask]:
    """An app with bearer tokens, the admin API at /admin and quick heartbeats."""

    @stack.authenticator
    def authenticate() -> dict[str, Any] | None:
        return tokens.get(request.headers.get("Authorization", "").removeprefix("Bearer "))

    stack.admin_authorizer(lambda identity: "admin" in identity["roles"])

    def make(**config: Any) -> Flask:
        return make_app(**{"SHIMMIE_ADMIN_URL": "/admin", "SHIMMIE_SSE_HEARTBEAT": 0.2, **config})

    return make


@pytest.fixture
def sse_app(make_sse_app: Callable[..., Flask]) -> Flask:
    return make_sse_app()


@pytest.fixture
def live(sse_app: Flask) -> Iterator[LiveServer]:
    with LiveServer(sse_app) as server:
        yield server


def record(app: Flask, stack: ShimmieStack, count: int, *, stream: str = "s", name: str = "CREATED") -> None:
    with app.app_context():
        for n in range(count):
            stack.record_unchecked_event(stream, name, {"n": n})


def stored(app: Flask, stack: ShimmieStack, **filters: Any) -> list[Event]:
    with app.app_context():
        return stack.read_events(0, **filters)


def as_json(messages: list[SseMessage]) -> list[dict[str, Any]]:
    return [message.json() for message in messages]


# -- the messages ---------------------------------------------------------------------------------


def test_a_stream_sends_the_stored_events_then_the_live_ones(
    sse_app: Flask, stack: ShimmieStack, live: LiveServer
) -> None:
    record(sse_app, stack, 3)
    with SseClient(live.base_url, f"{STREAM}?after=1", ADMIN) as client:
        assert client.status == 200
        assert client.header["content-type"].startswith("text/event-stream")
        assert client.header["cache-control"] == "no-cache"
        opening = client.next_message()
        assert opening is not None and (opening.id, opening.retry, opening.data) == ("1", "2000", None)
        first = client.events(2)
        record(sse_app, stack, 2, stream="t", name="RENAMED")
        later = client.events(2)
    expected = [event.to_json() for event in stored(sse_app, stack)[1:]]
    assert as_json(first + later) == expected
    assert [(m.id, m.event) for m in first + later] == [
        ("2", "CREATED"),
        ("3", "CREATED"),
        ("4", "RENAMED"),
        ("5", "RENAMED"),
    ]


def test_without_a_position_a_stream_starts_after_the_last_stored_event(
    sse_app: Flask, stack: ShimmieStack, live: LiveServer
) -> None:
    record(sse_app, stack, 4)
    with SseClient(live.base_url, STREAM, ADMIN) as client:
        opening = client.next_message()
        # The opening message names where it starts, so a reconnection before any event resumes there.
        assert opening is not None and opening.id == "4" and opening.data is None
        record(sse_app, stack, 1)
        (event,) = client.events(1)
    assert event.id == "5"


def test_last_event_id_wins_over_after(sse_app: Flask, stack: ShimmieStack, live: LiveServer) -> None:
    record(sse_app, stack, 5)
    headers = {**ADMIN, "Last-Event-ID": "3"}
    with SseClient(live.base_url, f"{STREAM}?after=1", headers) as client:
        assert [m.id for m in client.events(2)] == ["4", "5"]


def test_filters_keep_one_stream_and_one_event_name(
    sse_app: Flask, stack: ShimmieStack, live: LiveServer
) -> None:
    with sse_app.app_context():
        for n in range(12):
            stack.record_unchecked_event(f"s{n % 3}", "CREATED" if n % 2 else "RENAMED", {"n": n})
    path = f"{STREAM}?after=0&stream=s1&type=CREATED"
    wanted = [e.sequence_num for e in stored(sse_app, stack, stream_ids="s1", event_names="CREATED")]
    assert wanted == [2, 8]
    with SseClient(live.base_url, path, ADMIN) as client:
        assert [int(m.id or 0) for m in client.events(2)] == wanted
        record(sse_app, stack, 3, stream="s2", name="CREATED")  # filtered out
        record(sse_app, stack, 1, stream="s1", name="CREATED")
        (event,) = client.events(1)
    assert event.id == "16" and event.json()["stream_id"] == "s1"


def test_an_idle_stream_sends_heartbeat_comments(live: LiveServer) -> None:
    with SseClient(live.base_url, STREAM, ADMIN) as client:
        client.next_message()
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            client.next_message(timeout=1.0)  # no event comes...
        assert time.monotonic() - started >= 0.9
        assert 3 <= client.comments.count("heartbeat") <= 7  # ...but one comment every 0.2 s


def test_an_event_name_with_a_line_break_is_sent_without_an_event_line() -> None:
    event = Event(7, "s", 1, "e", "BAD\nid: 99", {"text": "two\nlines"}, {}, _now())
    message = format_event(event)
    assert message.startswith("id: 7\ndata: {") and message.endswith("}\n\n")
    assert message.count("\n") == 3  # id, data, the blank line: nothing the name could inject


def _now() -> Any:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)


# -- bad input and access ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "headers", "names"),
    [
        ("?after=abc", {}, "after"),
        ("?after=-1", {}, "after"),
        ("?after=1e3", {}, "after"),
        ("", {"Last-Event-ID": "x7"}, "Last-Event-ID"),
        ("?stream=" + "s" * 256, {}, "stream"),
    ],
)
def test_a_malformed_position_or_filter_is_a_400(
    sse_app: Flask, query: str, headers: dict[str, str], names: str
) -> None:
    response = sse_app.test_client().get(STREAM + query, headers={**ADMIN, **headers})
    assert response.status_code == 400
    body = response.get_json()
    assert body["code"] == 400 and body["status"] == "Bad Request" and names in body["message"]


def test_a_huge_position_is_capped_not_refused(sse_app: Flask, stack: ShimmieStack, live: LiveServer) -> None:
    with SseClient(live.base_url, f"{STREAM}?after={'9' * 400}", ADMIN) as client:
        opening = client.next_message()
    assert client.status == 200 and opening is not None and opening.id == str(2**63 - 1)


def test_the_stream_needs_the_admin_authorizer(
    stack: ShimmieStack, make_app: Callable[..., Flask], sse_app: Flask
) -> None:
    client = sse_app.test_client()
    assert client.get(STREAM).status_code == 401
    assert client.get(STREAM, headers=USER).status_code == 403
    closed = ShimmieStack()
    closed.authenticator(lambda: {"roles": ["admin"]})
    app = Flask("closed")
    app.config.update(SHIMMIE_ADMIN_URL="/admin")
    closed.init_app(app)
    try:
        response = app.test_client().get(STREAM)
        assert response.status_code == 403 and "admin_authorizer" in response.get_json()["message"]
    finally:
        closed.shutdown(app)


def _record_with_pii(app: Flask, stack: ShimmieStack) -> None:
    with app.app_context():
        stack.record_unchecked_event(
            "p", "SIGNED_UP", {"name": "Ada", "email": "ada@example.com"}, pii_fields=["email"]
        )
        stack.record_unchecked_event(
            "q", "SIGNED_UP", {"name": "Bob", "email": "bob@example.com"}, pii_fields=["email"]
        )
        stack.erase_pii("q")


def test_admins_get_the_pii_merged(sse_app: Flask, stack: ShimmieStack, live: LiveServer) -> None:
    _record_with_pii(sse_app, stack)
    with SseClient(live.base_url, f"{STREAM}?after=0", ADMIN) as client:
        ada, bob, _erasure = as_json(client.events(3))
    assert ada["data"] == {"name": "Ada", "email": "ada@example.com"} and not ada["pii_erased"]
    assert bob["data"] == {"name": "Bob", "email": ""} and bob["pii_erased"]


def test_with_access_for_any_identity_pii_goes_only_to_admins(
    make_sse_app: Callable[..., Flask], stack: ShimmieStack
) -> None:
    app = make_sse_app(SHIMMIE_SSE_ACCESS="authenticated")
    _record_with_pii(app, stack)
    assert app.test_client().get(STREAM).status_code == 401
    with LiveServer(app) as live:
        with SseClient(live.base_url, f"{STREAM}?after=0", USER) as client:
            ada, bob, _erasure = as_json(client.events(3))
        with SseClient(live.base_url, f"{STREAM}?after=0", ADMIN) as admin:
            admin_ada = admin.events(1)[0].json()
    assert ada["data"] == {"name": "Ada", "email": ""} and ada["pii_fields"] == ["email"]
    assert not ada["pii_erased"]  # withheld, not erased
    assert bob["data"] == {"name": "Bob", "email": ""} and bob["pii_erased"]
    assert admin_ada["data"]["email"] == "ada@example.com"


def test_a_stream_ends_when_its_caller_is_no_longer_admitted(
    sse_app: Flask, stack: ShimmieStack, live: LiveServer, tokens: dict[str, dict[str, Any]]
) -> None:
    with SseClient(live.base_url, STREAM, ADMIN) as client:
        client.next_message()
        tokens["admin"]["roles"] = []  # demoted: checked again at the next heartbeat
        started = time.monotonic()
        assert client.next_message(timeout=5) is None
        assert time.monotonic() - started < 2
    with SseClient(live.base_url, STREAM, ADMIN) as again:
        assert again.status == 403


def test_the_settings_are_checked(make_sse_app: Callable[..., Flask]) -> None:
    for key, value in [
        ("SHIMMIE_SSE_HEARTBEAT", 0),
        ("SHIMMIE_SSE_HEARTBEAT", "15"),
        ("SHIMMIE_SSE_MAX_CLIENTS", -1),
        ("SHIMMIE_SSE_MAX_CLIENTS", True),
        ("SHIMMIE_SSE_ACCESS", "everyone"),
    ]:
        with pytest.raises(ConfigurationError, match=key):
            make_sse_app(**{key: value})


# -- the bound on open streams ------------------------------------------------------------------------


def test_past_the_bound_a_stream_is_refused_with_503_until_one_closes(
    make_sse_app: Callable[..., Flask],
) -> None:
    app = make_sse_app(SHIMMIE_SSE_MAX_CLIENTS=2)
    with LiveServer(app) as live:
        first = SseClient(live.base_url, STREAM, ADMIN)
        second = SseClient(live.base_url, STREAM, ADMIN)
        with SseClient(live.base_url, STREAM, ADMIN) as third:
            assert third.status == 503
            assert third.header["retry-after"] == "5"
            body = third.body()
            assert body["code"] == 503 and "SHIMMIE_SSE_MAX_CLIENTS" in body["message"]
        assert (first.status, second.status) == (200, 200)
        first.drop()  # noticed at the next write (a heartbeat), which frees its slot
        deadline = time.monotonic() + 5
        while True:
            with SseClient(live.base_url, STREAM, ADMIN) as fourth:
                if fourth.status == 200:
                    break
            assert time.monotonic() < deadline, "the dropped stream's slot was never given back"
            time.sleep(0.1)
        second.close()


def test_a_bound_of_zero_serves_no_stream(make_sse_app: Callable[..., Flask]) -> None:
    app = make_sse_app(SHIMMIE_SSE_MAX_CLIENTS=0)
    assert app.test_client().get(STREAM, headers=ADMIN).status_code == 503


# -- resuming after a dropped connection, with writers at work ---------------------------------------


def read_with_drops(base_url: str, total: int, seed: int, headers: dict[str, str]) -> list[SseMessage]:
    """Read the stream from the start, cutting the connection every few events and resuming with
    ``Last-Event-ID`` = the last id seen, until ``total`` events came."""
    import random

    rng = random.Random(seed)
    received: list[SseMessage] = []
    last: str | None = None
    drops = 0
    while len(received) < total:
        resume = {"Last-Event-ID": last} if last is not None else {}
        client = SseClient(
            base_url, STREAM if last is not None else f"{STREAM}?after=0", {**headers, **resume}
        )
        assert client.status == 200, client.body()
        opening = client.next_message()
        assert opening is not None and opening.id == (last or "0")
        batch = client.events(min(rng.randint(1, 25), total - len(received)), timeout=20)
        client.drop()
        drops += 1
        received.extend(batch)
        last = batch[-1].id
    assert drops >= 5
    return received


def check_exactly_once(received: list[SseMessage], events: list[Event]) -> None:
    ids = [int(message.id or 0) for message in received]
    assert ids == list(range(1, len(events) + 1)), "a gap or a repeat"
    assert [m.json()["event_id"] for m in received] == [event.event_id for event in events]
    assert [m.event for m in received] == [event.event_name for event in events]


@pytest.mark.parametrize(
    "backend", ["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_a_resumed_stream_gets_exactly_the_missing_events_while_writers_write(
    backend: str, make_sse_app: Callable[..., Flask], stack: ShimmieStack, tmp_path: Path
) -> None:
    require_backend(backend)
    writers, each = 4, 60
    with fresh_store_url(backend, tmp_path) as url:
        app = make_sse_app(SHIMMIE_EVENT_STORE=url)
        failures: list[BaseException] = []

        def write(writer: int) -> None:
            try:
                with app.app_context():
                    for n in range(each):
                        stack.record_unchecked_event(f"w{writer}", "WROTE", {"n": n})
                        time.sleep(0.002)
            except BaseException as error:
                failures.append(error)

        with app.app_context():
            stack.startup()
        with LiveServer(app) as live:
            threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
            for thread in threads:
                thread.start()
            received = read_with_drops(live.base_url, writers * each, seed=7, headers=ADMIN)
            for thread in threads:
                thread.join(30)
        assert not failures
        check_exactly_once(received, stored(app, stack))

"""Stream ids fit in one URL path segment, and operations on an existing stream refuse unknown ones.

New stream ids with a "/" or a control character are refused where they are recorded (the Python
API, a view, ``flask shimmie import``); the admin stream routes take one path segment; erasing the
PII of a stream that has no events is a 404 / :class:`StreamNotFoundError` that records nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from flask import Blueprint, Flask, request
from werkzeug.exceptions import NotFound

from flask_shimmie import (
    NO_STREAM,
    InvalidEventError,
    NewEvent,
    ShimmieError,
    ShimmieStack,
    StreamNotFoundError,
    current_stack,
)
from tests.helpers import append_raw

ADMIN = {"Authorization": "Bearer admin"}

#: Ids a route segment cannot carry, and what the refusal names.
REFUSED_IDS = [
    pytest.param("a/b", "'/'", id="slash"),
    pytest.param("0/erase-pii", "'/'", id="route-lookalike"),
    pytest.param("/", "'/'", id="only-slash"),
    pytest.param("line\nbreak", "U+000A", id="newline"),
    pytest.param("carriage\rreturn", "U+000D", id="cr"),
    pytest.param("nul\x00", "NUL", id="nul"),
    pytest.param("tab\there", "U+0009", id="tab"),
    pytest.param("del\x7f", "U+007F", id="del"),
    pytest.param("next\x85line", "U+0085", id="c1-nel"),
]


@pytest.fixture
def admin_app(stack: ShimmieStack, make_app: Callable[..., Flask]) -> Flask:
    stack.authenticator(
        lambda: {"admin": True} if request.headers.get("Authorization") == ADMIN["Authorization"] else None
    )
    stack.admin_authorizer(lambda identity: True)
    bp = Blueprint("streams", __name__)

    @bp.post("/<path:stream_id>")
    def add(stream_id: str) -> tuple[dict[str, Any], int]:
        event = current_stack.record_event(stream_id, "ADDED", {}, expected_version=NO_STREAM)
        return {"stream_id": event.stream_id}, 201

    stack.mount_processor("Streams", "/streams", bp)
    return make_app(SHIMMIE_ADMIN_URL="/admin")


def count(app: Flask) -> int:
    with app.app_context():
        return len(current_stack.read_events())


@pytest.mark.parametrize(("stream_id", "named"), REFUSED_IDS)
def test_a_stream_id_a_route_segment_cannot_carry_is_refused(
    app: Flask, stack: ShimmieStack, stream_id: str, named: str
) -> None:
    attempts = [
        lambda: stack.record_event(stream_id, "E", {}, expected_version=NO_STREAM),
        lambda: stack.record_unchecked_event(stream_id, "E", {}),
        lambda: stack.record_unchecked_events([NewEvent("fine", "E", {}), NewEvent(stream_id, "E", {})]),
        lambda: stack.record_events([NewEvent(stream_id, "E", {})], expected_versions={stream_id: NO_STREAM}),
    ]
    for attempt in attempts:
        with pytest.raises(InvalidEventError, match="stream.id must not contain") as refused:
            attempt()
        assert named in str(refused.value)
    assert stack.read_events() == []


def test_over_http_such_a_stream_id_is_a_400_and_records_nothing(admin_app: Flask) -> None:
    client = admin_app.test_client()
    response = client.post("/streams/a/b")
    assert response.status_code == 400
    body = response.get_json()
    assert body["code"] == 400 and "stream_id must not contain '/'" in body["message"]
    assert count(admin_app) == 0
    assert client.post("/streams/fine").status_code == 201


def test_ids_with_other_odd_characters_are_still_recorded(app: Flask, stack: ShimmieStack) -> None:
    for stream_id in ("a b", "é", "\U0001f3b5", "%2F", "a\\b", "\u2028", "?#&", "  "):
        assert stack.record_unchecked_event(stream_id, "E", {}).stream_id == stream_id


def test_a_legacy_stream_id_stays_readable_and_erasable(app: Flask, stack: ShimmieStack) -> None:
    """A stream recorded before the rule (here: behind the stack's back) is read and erased as before."""
    store = app.extensions["shimmie"].event_store
    append_raw(store, "legacy/1", "JOINED", {"n": 1})
    assert [e.stream_id for e in stack.history("legacy/1")["history"]] == ["legacy/1"]
    assert stack.erase_pii("legacy/1") == 0
    assert [e.event_name for e in stack.history("legacy/1")["history"]] == ["JOINED", "shimmie.pii_erased"]
    with pytest.raises(InvalidEventError):
        stack.record_unchecked_event("legacy/1", "MORE", {})


# -- erasing an unknown stream ---------------------------------------------------------------------


def test_erase_pii_of_an_unknown_stream_raises_and_records_nothing(app: Flask, stack: ShimmieStack) -> None:
    stack.record_unchecked_event("known", "E", {"who": "x"}, pii_fields=["who"])
    with pytest.raises(StreamNotFoundError) as raised:
        stack.erase_pii("unknown")
    assert isinstance(raised.value, ShimmieError) and isinstance(raised.value, NotFound)
    assert raised.value.code == 404 and raised.value.stream_id == "unknown"
    assert "'unknown'" in str(raised.value)
    assert [e.event_name for e in stack.read_events()] == ["E"]
    assert stack.erase_pii("known") == 1


def test_admin_erase_pii_of_an_unknown_stream_is_404(admin_app: Flask) -> None:
    client = admin_app.test_client()
    response = client.post("/admin/streams/never-was/erase-pii", headers=ADMIN)
    assert response.status_code == 404
    body = response.get_json()
    assert body["code"] == 404 and "'never-was'" in body["message"]
    assert count(admin_app) == 0


def test_admin_stream_routes_take_one_path_segment(admin_app: Flask) -> None:
    client = admin_app.test_client()
    assert client.post("/streams/0").status_code == 201
    # Once "0/erase-pii" matched GET /streams/<path>: the history of a stream of that name.
    response = client.get("/admin/streams/0/erase-pii", headers=ADMIN)
    assert response.status_code == 405 and response.get_json()["code"] == 405
    for path in ("/admin/streams/0/x", "/admin/streams/0/x/erase-pii"):
        assert client.get(path, headers=ADMIN).status_code == 404, path
        assert client.post(path, headers=ADMIN).status_code in (404, 405), path
    assert count(admin_app) == 1
    odd = "a b%é"
    assert client.post(f"/streams/{quote(odd)}").status_code == 201
    events = client.get(f"/admin/streams/{quote(odd, safe='')}", headers=ADMIN).get_json()["events"]
    assert [e["stream_id"] for e in events] == [odd]
    erased = client.post(f"/admin/streams/{quote(odd, safe='')}/erase-pii", headers=ADMIN)
    assert erased.status_code == 200 and erased.get_json() == {"erased_events": 0}


def _invoke(app: Flask, *args: str) -> tuple[int, str]:
    result = app.test_cli_runner().invoke(args=["shimmie", *args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_cli_erase_pii_of_an_unknown_stream_fails_clearly(app: Flask, stack: ShimmieStack) -> None:
    stack.record_unchecked_event("known", "E", {})
    code, out = _invoke(app, "erase-pii", "unknown", "--yes")
    assert code == 1 and "No stream 'unknown'" in out and "Traceback" not in out
    assert [e.event_name for e in stack.read_events()] == ["E"]


# -- import ----------------------------------------------------------------------------------------


def _line(stream_id: str, event_id: str) -> str:
    return json.dumps(
        {
            "stream_id": stream_id,
            "event_name": "E",
            "event_id": event_id,
            "data": {},
            "recorded_at": "2024-01-01T00:00:00+00:00",
        }
    )


@pytest.mark.parametrize(("stream_id", "named"), REFUSED_IDS)
def test_import_refuses_such_a_stream_id_naming_the_line(
    make_app: Callable[..., Flask], tmp_path: Path, stream_id: str, named: str
) -> None:
    app = make_app()
    dump = tmp_path / "events.jsonl"
    good = _line("fine", "12345678-1234-5678-1234-567812345678")
    dump.write_text(good + "\n" + _line(stream_id, "12345678-1234-5678-1234-567812349999") + "\n")
    code, out = _invoke(app, "import", str(dump))
    assert code == 1 and "Line 2: stream_id must not contain" in out and named in out, out
    assert count(app) == 0

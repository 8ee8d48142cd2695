"""Input the stack parses itself: numbers too large for ``int()`` and JSON objects that repeat a key.

Every integer query parameter, header and command-line option is parsed with a length bound
(a 400, a usage error, or capped where positions are capped), never a 500; a JSON body or an
import line whose object repeats a key is refused, naming the key (and the line).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Blueprint, Flask
from flask.testing import FlaskClient

from flask_shimmie import current_stack
from tests.helpers import ADMIN, USER, add_open_view, add_things_view, stored, token_app


@pytest.fixture
def app() -> Iterator[Flask]:
    bp = Blueprint("limits", __name__)
    add_open_view(bp)
    add_things_view(bp)
    app, stack = token_app("Limits", "/v1", bp)
    yield app
    stack.shutdown(app)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


# -- huge numbers ----------------------------------------------------------------------------------


def test_huge_numbers_in_admin_queries_are_capped_or_400(app: Flask, client: FlaskClient) -> None:
    with app.app_context():
        current_stack.record_unchecked_event("s1", "E", {})
        current_stack.record_unchecked_event("s1", "E", {})
    huge = "9" * 5000
    response = client.get(f"/admin/events?after={huge}", headers=ADMIN)
    assert response.status_code == 200 and response.get_json() == {"events": [], "next_after": None}
    response = client.get(f"/admin/events?after={'0' * 5000}1", headers=ADMIN)
    assert [e["sequence_num"] for e in response.get_json()["events"]] == [2]
    for query in (f"limit={huge}", f"limit={'0' * 5000}", f"after=-{huge}", f"after={huge}x"):
        response = client.get(f"/admin/events?{query}", headers=ADMIN)
        assert response.status_code == 400, (query[:20], response.get_data(as_text=True)[:200])
        body = response.get_json()
        assert body["code"] == 400 and len(body["message"]) < 200
    response = client.get("/v1/open", headers={"X-Seq-Num-Min": huge})
    assert response.status_code == 400 and len(response.get_json()["message"]) < 200


def _invoke(app: Flask, *args: str, input: str | None = None) -> tuple[int, str]:
    result = app.test_cli_runner().invoke(args=["shimmie", *args], input=input)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_huge_numbers_on_the_command_line_are_refused_briefly_or_capped(app: Flask) -> None:
    with app.app_context():
        current_stack.record_unchecked_event("s1", "E", {})
    huge = "9" * 5000
    for args in (["events", "--after", huge], ["events", "--limit", huge], ["replay", "--from", huge]):
        code, out = _invoke(app, *args)
        assert code == 2 and "at most 100 digits" in out and len(out) < 600, (args[:2], out[:300])
    big = str(10**30)
    code, out = _invoke(app, "events", "--after", big)
    assert code == 0 and out == ""
    code, out = _invoke(app, "events", "--limit", big, "--json")
    assert code == 0 and len(out.strip().splitlines()) == 1
    code, out = _invoke(app, "replay", "--from", big)
    assert code == 0 and "Replayed 0 events" in out


GOOD_LINE = json.dumps(
    {
        "stream_id": "s1",
        "event_name": "E",
        "event_id": "12345678-1234-5678-1234-567812345678",
        "data": {"n": 1},
        "recorded_at": "2024-01-01T00:00:00+00:00",
    }
)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        pytest.param(
            GOOD_LINE.replace('"data"', f'"schema_version": {2**31}, "data"'), "schema_version", id="big"
        ),
        pytest.param(GOOD_LINE.replace('"data"', '"schema_version": 0, "data"'), "schema_version", id="zero"),
        pytest.param(GOOD_LINE.replace('"n": 1', '"n": ' + "9" * 5000), "not valid JSON", id="5000-digits"),
    ],
)
def test_import_refuses_out_of_range_numbers_naming_the_line(
    app: Flask, tmp_path: Path, line: str, reason: str
) -> None:
    path = tmp_path / "dump.jsonl"
    path.write_text(GOOD_LINE.replace("1234-5678", "1234-9999") + "\n" + line + "\n")
    code, out = _invoke(app, "import", str(path))
    assert code == 1 and "Line 2:" in out and reason in out and len(out) < 600, out[:300]
    assert stored(app) == 0


# -- JSON objects that repeat a key ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ('{"version": 99, "version": 1}', "version"),
        ('{"a": {"b": 1, "c": 2, "b": 3}}', "b"),
        ('{"list": [{"ok": 1}, {"x": 1, "x": 1}]}', "x"),
        ('{"": 1, "": 2}', ""),
    ],
)
def test_a_body_repeating_a_key_is_400_naming_it(
    app: Flask, client: FlaskClient, body: str, key: str
) -> None:
    response = client.post("/v1/things/t1", data=body, content_type="application/json", headers=USER)
    assert response.status_code == 400, response.get_data(as_text=True)
    message = response.get_json()["message"]
    assert repr(key) in message and "more than once" in message
    assert stored(app) == 0


def test_a_body_without_repeated_keys_is_recorded(client: FlaskClient) -> None:
    body = '{"a": {"b": 1}, "b": {"a": [{"b": 2}, {"b": 3}]}}'
    response = client.post("/v1/things/t1", data=body, content_type="application/json", headers=USER)
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.get_json()["data"] == json.loads(body)


def test_import_refuses_a_line_repeating_a_key(app: Flask, tmp_path: Path) -> None:
    line = (
        '{"stream_id": "s1", "event_name": "E", "event_id": "12345678-1234-5678-1234-567812345678", '
        '"data": {"v": 1, "v": 2}, "recorded_at": "2024-01-01T00:00:00+00:00"}'
    )
    path = tmp_path / "dump.jsonl"
    path.write_text(line.replace('"v": 1, "v": 2', '"v": 1') + "\n" + line + "\n")
    code, out = _invoke(app, "import", str(path))
    assert code == 1 and "Line 2:" in out and "'v' appears more than once" in out, out
    assert stored(app) == 0

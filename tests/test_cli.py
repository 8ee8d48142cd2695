"""The `flask shimmie` command group."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from flask_shimmie import Event, Model, ShimmieStack, subscribe
from tests.helpers import Journal


def _invoke(app: Flask, *args: str, input: str | None = None) -> tuple[int, str]:
    result = app.test_cli_runner().invoke(args=["shimmie", *args], input=input)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


@pytest.fixture
def sqlite_app(make_app: Callable[..., Flask], tmp_path: Path) -> Flask:
    return make_app(SHIMMIE_EVENT_STORE=f"sqlite:///{tmp_path}/events.db")


def _seed(app: Flask, stack: ShimmieStack) -> None:
    with app.app_context():
        stack.record_unchecked_event("song-1", "SONG_CREATED", {"title": "A"})
        stack.record_unchecked_event(
            "song-2", "SONG_CREATED", {"title": "B", "who": "bob"}, pii_fields=["who"]
        )
        stack.record_unchecked_event("song-1", "SONG_RENAMED", {"title": "A2"})


def test_init_db_creates_and_is_idempotent(sqlite_app: Flask, tmp_path: Path) -> None:
    code, out = _invoke(sqlite_app, "init-db")
    assert code == 0 and "Event store ready: sqlite:///" in out
    assert (tmp_path / "events.db").exists()
    assert _invoke(sqlite_app, "init-db")[0] == 0


def test_events_lists_filters_and_pages(app: Flask, stack: ShimmieStack) -> None:
    _seed(app, stack)
    code, out = _invoke(app, "events")
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 3 and "SONG_RENAMED" in lines[2] and '"title":"A2"' in lines[2]
    assert len(_invoke(app, "events", "--stream", "song-1")[1].strip().splitlines()) == 2
    assert len(_invoke(app, "events", "--type", "SONG_CREATED")[1].strip().splitlines()) == 2
    after = _invoke(app, "events", "--after", "1", "--json")[1].strip().splitlines()
    assert [json.loads(line)["sequence_num"] for line in after] == [2, 3]
    first = _invoke(app, "events", "--limit", "1", "--json")[1].strip().splitlines()
    record = json.loads(first[0])
    assert set(record) >= set(Event.__dataclass_fields__) - {"pii_fields"}
    assert record["sequence_num"] == 1 and record["event_name"] == "SONG_CREATED"


def test_history_shows_one_stream(app: Flask, stack: ShimmieStack) -> None:
    _seed(app, stack)
    code, out = _invoke(app, "history", "song-1")
    assert code == 0 and len(out.strip().splitlines()) == 2
    assert "No events" in _invoke(app, "history", "nope")[1]


def test_stats(app: Flask, stack: ShimmieStack) -> None:
    _seed(app, stack)
    code, out = _invoke(app, "stats")
    assert code == 0
    assert "Events:         3" in out and "Streams:        2" in out and "Last position:  3" in out
    assert "SONG_CREATED: 2" in out and "memory://" in out


def test_replay_reports_count_and_rate(sqlite_app: Flask, stack: ShimmieStack) -> None:
    _seed(sqlite_app, stack)
    code, out = _invoke(sqlite_app, "replay")
    assert code == 0 and "Replayed 3 events" in out and "events/s" in out and "Journal" in out
    code, out = _invoke(sqlite_app, "replay", "--from", "3")
    assert code == 0 and "Replayed 1 events" in out


def test_replay_failure_exits_non_zero_naming_event_and_model(
    make_app: Callable[..., Flask], stack: ShimmieStack, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/events.db"
    first = make_app(SHIMMIE_EVENT_STORE=url)
    _seed(first, stack)
    stack.shutdown(first)

    class Broken(Model):
        @subscribe("SONG_RENAMED")
        def renamed(self, event: Event) -> None:
            raise ValueError("no renames")

    stack.register_model(Broken)
    fresh = make_app(SHIMMIE_EVENT_STORE=url)
    code, out = _invoke(fresh, "replay")
    assert code != 0
    assert "event 3" in out and "Broken.renamed" in out and "no renames" in out


def test_erase_pii(app: Flask, stack: ShimmieStack) -> None:
    _seed(app, stack)
    code, out = _invoke(app, "erase-pii", "song-2", "--yes")
    assert code == 0 and "Erased the PII of 1 events" in out
    with app.app_context():
        created = stack.history("song-2")["history"][0]
        assert created.pii_erased and created.data["who"] == ""


def test_export_import_round_trip_between_backends(
    make_app: Callable[..., Flask], stack: ShimmieStack, sqlite_app: Flask, tmp_path: Path
) -> None:
    # No app context may be pushed around the CLI calls: the runner would use it.
    app = make_app()
    _seed(app, stack)
    dump = tmp_path / "events.jsonl"
    assert _invoke(app, "export", "--with-pii", str(dump))[0] == 0
    lines = dump.read_text().splitlines()
    assert len(lines) == 3
    second = json.loads(lines[1])
    assert second["data"]["who"] == "bob" and second["pii_fields"] == ["who"]
    code, out = _invoke(sqlite_app, "import", str(dump))
    assert code == 0 and "Imported 3 events (0 already present)" in out
    assert "Imported 0 events (3 already present)" in _invoke(sqlite_app, "import", str(dump))[1]
    with app.app_context():
        source = stack.read_events()
        models_before = [(e.sequence_num, e.data) for e in stack.model(Journal).events]
    with sqlite_app.app_context():
        copied = stack.read_events()
        assert [(e.event_id, e.stream_id, e.stream_version, e.data, e.recorded_at) for e in copied] == [
            (e.event_id, e.stream_id, e.stream_version, e.data, e.recorded_at) for e in source
        ]
        assert [(e.sequence_num, e.data) for e in stack.model(Journal).events] == models_before
        raw = sqlite_app.extensions["shimmie"].event_store.read(0)
        assert raw[1].data == {"title": "B", "who": ""}  # PII stored apart again


def test_export_without_pii_anonymises(app: Flask, stack: ShimmieStack) -> None:
    _seed(app, stack)
    code, out = _invoke(app, "export", "-")
    assert code == 0
    record = json.loads([line for line in out.splitlines() if line.startswith("{")][1])
    assert record["data"]["who"] == "" and record["pii_erased"] is True


def test_import_stops_at_a_malformed_line_and_imports_nothing(app: Flask, stack: ShimmieStack) -> None:
    good = {
        "stream_id": "s",
        "event_name": "E",
        "event_id": "0b6f2b0e-5b7d-4a83-9a5e-0c4b8e0c1a11",
        "data": {},
        "meta": {},
        "recorded_at": "2026-01-01T00:00:00+00:00",
    }
    text = json.dumps(good) + "\n" + json.dumps({**good, "data": "not an object"}) + "\n"
    code, out = _invoke(app, "import", "-", input=text)
    assert code != 0 and "Line 2" in out and "Nothing of its batch was imported" in out
    with app.app_context():
        assert stack.read_events() == []


def test_import_in_batches_keeps_earlier_batches(app: Flask, stack: ShimmieStack) -> None:
    lines = [
        json.dumps(
            {
                "stream_id": "s",
                "event_name": "E",
                "event_id": f"0b6f2b0e-5b7d-4a83-9a5e-0c4b8e0c1a1{i}",
                "data": {"i": i},
                "meta": {},
                "recorded_at": "2026-01-01T00:00:00+00:00",
            }
        )  # fmt: skip
        for i in range(3)
    ]
    text = "\n".join([*lines, "{broken"]) + "\n"
    code, out = _invoke(app, "import", "-", "--batch-size", "2", input=text)
    assert code != 0 and "Line 4" in out
    with app.app_context():
        assert [e.data["i"] for e in stack.read_events()] == [0, 1]


def test_events_follow_prints_new_events_as_they_are_stored(
    make_app: Callable[..., Flask], stack: ShimmieStack, tmp_path: Path
) -> None:
    import os
    import queue
    import subprocess
    import sys
    import threading
    import time

    url = f"sqlite:///{tmp_path}/events.db"
    app = make_app(SHIMMIE_EVENT_STORE=url)
    _seed(app, stack)
    env = {**os.environ, "FLASK_SHIMMIE_EVENT_STORE": url, "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable,
        "-m",
        "flask",
        "--app",
        "example_songs",
        "shimmie",
        "events",
        "--follow",
        "--json",
    ]
    follower = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    lines: queue.Queue[str] = queue.Queue()
    assert follower.stdout is not None
    stdout = follower.stdout
    threading.Thread(target=lambda: [lines.put(line) for line in stdout], daemon=True).start()
    try:
        seen = [json.loads(lines.get(timeout=30))["sequence_num"] for _ in range(3)]
        assert seen == [1, 2, 3]
        time.sleep(0.3)  # it is now waiting for news
        with app.app_context():
            stack.record_unchecked_event("song-3", "SONG_CREATED", {"title": "C"})
        assert json.loads(lines.get(timeout=5))["stream_id"] == "song-3"
    finally:
        follower.terminate()
        follower.wait(10)

"""The example's writes decide on a loaded song and record against its version: exact interleavings.

The race tests (``tests/test_example_races.py``) run real requests at once against gunicorn; here
the other write is made to land at the worst moment, every time, by wrapping the stack's calls
the views make: right after a view loaded the song, or right after it recorded its own event.

- A write between a view's load and its record makes it answer 409 and record nothing: no second
  ``SONG_DELETED``, no erasure of a song that stays, no rename of what the client did not see.
- A DELETE committed right after a rename does not turn the rename's answer into a 404: the PUT
  answers the renamed song from its own event.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from example_songs import stack
from flask_shimmie import Event, Loaded
from tests.songs_fixtures import app as app
from tests.songs_fixtures import client as client

SUBMITTER = {"name": "Sam Secret", "email": "sam.secret@example.com"}


def post_song(client: FlaskClient) -> str:
    body = {"title": "Blue", "artist": "Joni Mitchell", "year": "1971", "submitted_by": SUBMITTER}
    response = client.post("/v1/songs", json=body)
    assert response.status_code == 201, response.get_data(as_text=True)
    return str(response.headers["Location"]).rsplit("/", 1)[1]


def events(app: Flask, song_id: str) -> list[Event]:
    with app.app_context():
        return list(stack.history(song_id)["history"])


def after_load(monkeypatch: pytest.MonkeyPatch, meanwhile: Callable[[str], Any]) -> None:
    """Run ``meanwhile(stream_id)`` right after a view loads an entry (as another request would)."""
    load = stack.load

    def load_then_write(model_cls: Any, stream_id: str) -> Loaded | None:
        loaded = load(model_cls, stream_id)
        meanwhile(stream_id)
        return loaded

    monkeypatch.setattr(stack, "load", load_then_write)


def another_delete(stream_id: str) -> None:
    stack.record_unchecked_event(stream_id, "SONG_DELETED", {})


def another_rename(stream_id: str) -> None:
    stack.record_unchecked_event(stream_id, "SONG_RENAMED", {"title": "Someone else's"})


def test_a_delete_that_lost_the_race_is_409_and_records_nothing(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    song_id = post_song(client)
    after_load(monkeypatch, another_delete)
    response = client.delete(f"/v1/songs/{song_id}")
    assert response.status_code == 409, response.get_data(as_text=True)
    assert response.get_json()["conflicts"] == [{"stream_id": song_id, "expected": 1, "actual": 2}]
    assert [e.event_name for e in events(app, song_id)] == ["SONG_CREATED", "SONG_DELETED"]


def test_a_refused_delete_erases_nothing(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    song_id = post_song(client)
    after_load(monkeypatch, another_rename)
    assert client.delete(f"/v1/songs/{song_id}").status_code == 409
    monkeypatch.undo()
    song = client.get(f"/v1/songs/{song_id}").get_json()
    assert (song["title"], song["submitted_by"]) == ("Someone else's", SUBMITTER)
    assert [e.event_name for e in events(app, song_id)] == ["SONG_CREATED", "SONG_RENAMED"]


def test_a_rename_decided_on_a_song_being_deleted_is_409(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    song_id = post_song(client)
    after_load(monkeypatch, another_delete)
    response = client.put(f"/v1/songs/{song_id}", json={"title": "River", "version": 1})
    assert response.status_code == 409, response.get_data(as_text=True)
    assert "SONG_RENAMED" not in [e.event_name for e in events(app, song_id)]


def test_a_stale_erasure_of_the_submitter_is_409_and_erases_nothing(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    song_id = post_song(client)
    after_load(monkeypatch, another_rename)
    response = client.delete(f"/v1/songs/{song_id}/submitter")
    assert response.status_code == 409, response.get_data(as_text=True)
    monkeypatch.undo()
    assert client.get(f"/v1/songs/{song_id}").get_json()["submitted_by"] == SUBMITTER
    assert client.delete(f"/v1/songs/{song_id}/submitter").get_json() == {"erased_events": 1}


def test_a_stored_rename_answers_200_even_when_a_delete_lands_right_after(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    song_id = post_song(client)
    record_event = stack.record_event

    def record_then_delete(*args: Any, **kwargs: Any) -> Event:
        event = record_event(*args, **kwargs)
        if event.event_name == "SONG_RENAMED":
            another_delete(event.stream_id)
        return event

    monkeypatch.setattr(stack, "record_event", record_then_delete)
    response = client.put(f"/v1/songs/{song_id}", json={"title": "River", "version": 1})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json() == {
        "id": song_id,
        "title": "River",
        "artist": "Joni Mitchell",
        "year": "1971",
        "version": 2,
        "submitted_by": SUBMITTER,
    }
    assert [e.event_name for e in events(app, song_id)] == ["SONG_CREATED", "SONG_RENAMED", "SONG_DELETED"]

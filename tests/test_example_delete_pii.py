"""Deleting a song erases its submitter's personal data: nothing personal outlives the song.

``DELETE /v1/songs/<id>`` records ``SONG_DELETED`` against the version it loaded, then erases the
stream's PII. Afterwards the e-mail address is in no read path (the model, ``GET /v1/songs``, the
admin API, ``stack.history``, ``read_events``, a replay) and in no table. When the erasure fails
after the delete was stored, the DELETE answers the error and ``DELETE /v1/songs/<id>/submitter``
(which works on a deleted song) finishes it. Run on every backend.
"""

from __future__ import annotations

import json

import pytest
from flask import Flask

import example_songs
from example_songs import SongList
from flask_shimmie import StoreUnavailableError
from flask_shimmie.state import AppState
from tests.helpers import songs_app
from tests.pii_backends import Backend, MadeApps, assert_absent

GONE = {"name": "Gina Gone-Secret", "email": "gina.gone@example.com"}
KEPT = {"name": "Kim Kept", "email": "kim.kept@example.com"}
GONE_SECRETS = ("Gina Gone-Secret", "gina.gone@example.com")


def songs_on(backend: Backend, made_apps: MadeApps) -> Flask:
    app = songs_app({"TESTING": True, **backend.config("separate")})
    made_apps.append((example_songs.stack, app))
    return app


def post(app: Flask, title: str, submitter: dict[str, str]) -> str:
    song = {"title": title, "artist": "Someone", "year": "1999", "submitted_by": submitter}
    response = app.test_client().post("/v1/songs", json=song)
    assert response.status_code == 201, response.get_data(as_text=True)
    return str(response.headers["Location"]).rsplit("/", 1)[1]


def every_read_path(app: Flask, song_id: str) -> str:
    """What the app shows of ``song_id`` and of every song, everywhere it can be read, as text."""
    client = app.test_client()
    stack = example_songs.stack
    with app.app_context():
        model = stack.model(SongList)
        shown = [
            repr(vars(model)),
            json.dumps(client.get("/v1/songs?limit=1000").get_json()),
            client.get(f"/v1/songs/{song_id}").get_data(as_text=True),
            client.get(f"/admin/streams/{song_id}").get_data(as_text=True),
            client.get("/admin/events?limit=1000").get_data(as_text=True),
            json.dumps([e.to_json() for e in stack.history(song_id)["history"]]),
            json.dumps([e.to_json() for e in stack.read_events()]),
        ]
    return "\n".join(shown)


def test_deleting_a_song_erases_its_submitter_from_every_read_path(
    pii_backend: Backend, made_apps: MadeApps
) -> None:
    app = songs_on(pii_backend, made_apps)
    client = app.test_client()
    song_id = post(app, "Gone Song", GONE)
    kept_id = post(app, "Kept Song", KEPT)
    assert GONE["email"] in every_read_path(app, song_id)

    response = client.delete(f"/v1/songs/{song_id}")
    assert response.status_code == 204, response.get_data(as_text=True)

    shown = every_read_path(app, song_id)
    for secret in GONE_SECRETS:
        assert secret not in shown
    assert KEPT["email"] in shown  # the other song's submitter is untouched
    with app.app_context():
        events = example_songs.stack.history(song_id)["history"]
        assert [e.event_name for e in events] == ["SONG_CREATED", "SONG_DELETED", "shimmie.pii_erased"]
        assert events[0].pii_erased and events[0].data["submitted_by"] == {"name": "", "email": ""}
        assert events[-1].data == {"erased_events": 1}
        # A replay builds the models from the erased events.
        example_songs.stack.replay()
        assert GONE["email"] not in repr(vars(example_songs.stack.model(SongList)))
    assert_absent(pii_backend.raw_pii_rows(app) + pii_backend.raw_event_rows(app), *GONE_SECRETS)
    assert client.get(f"/v1/songs/{kept_id}").get_json()["submitted_by"] == KEPT


def test_a_delete_whose_erasure_failed_is_finished_by_erasing_the_submitter(
    pii_backend: Backend, made_apps: MadeApps, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = songs_on(pii_backend, made_apps)
    client = app.test_client()
    song_id = post(app, "Half Deleted", GONE)
    state: AppState = app.extensions["shimmie"]
    assert state.pii_store is not None
    original = state.pii_store.erase_stream

    def unreachable(stream_id: str) -> int:
        raise StoreUnavailableError("The PII store cannot be reached.")

    monkeypatch.setattr(state.pii_store, "erase_stream", unreachable)
    response = client.delete(f"/v1/songs/{song_id}")
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.get_json()["code"] == 503
    monkeypatch.setattr(state.pii_store, "erase_stream", original)

    # The song is gone; its submitter is not yet.
    assert client.get(f"/v1/songs/{song_id}").status_code == 404
    assert GONE["email"] in client.get(f"/admin/streams/{song_id}").get_data(as_text=True)
    assert client.delete(f"/v1/songs/{song_id}").status_code == 404

    erased = client.delete(f"/v1/songs/{song_id}/submitter")
    assert erased.status_code == 200, erased.get_data(as_text=True)
    assert erased.get_json() == {"erased_events": 1}
    shown = every_read_path(app, song_id)
    for secret in GONE_SECRETS:
        assert secret not in shown
    assert_absent(pii_backend.raw_pii_rows(app), *GONE_SECRETS)

    # Erasing a deleted song again is harmless; a song that never was is 404.
    assert client.delete(f"/v1/songs/{song_id}/submitter").get_json() == {"erased_events": 0}
    missing = client.delete("/v1/songs/never-was/submitter")
    assert missing.status_code == 404 and missing.get_json()["message"] == "No song never-was."

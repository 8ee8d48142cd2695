"""example_songs' reactor (notify-new-songs) and projection (songs-by-artist), on every backend."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from example_songs import stack
from example_songs.notifications import LogNotifier
from flask_shimmie.follower import Follower
from tests.backends import BACKENDS, FreshDatabases, require_backend
from tests.helpers import songs_app


class Recorder:
    """A notifier that keeps what it was given, once per key."""

    def __init__(self) -> None:
        self.sent: dict[str, str] = {}

    def notify(self, key: str, message: str) -> None:
        self.sent.setdefault(key, message)


@pytest.fixture(params=BACKENDS)
def songs(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``(app, notifier)``: the songs app on a fresh store of each backend, with a recording notifier."""
    require_backend(request.param)
    monkeypatch.setattr(Follower, "start", lambda self: None)
    databases = FreshDatabases(request.param, tmp_path)
    notifier = Recorder()
    app = songs_app(
        {"TESTING": True, "SHIMMIE_EVENT_STORE": databases.url("songs"), "SONGS_NOTIFIER": notifier}
    )
    try:
        yield app, notifier
    finally:
        stack.shutdown(app)
        databases.drop()


def _post(app: Flask, title: str, artist: str, year: Any = "1956") -> str:
    response = app.test_client().post("/v1/songs", json={"title": title, "artist": artist, "year": year})
    assert response.status_code == 201, response.get_data(as_text=True)
    return str(response.headers["Location"]).rsplit("/", 1)[1]


def _run(app: Flask) -> dict[str, int]:
    with app.app_context():
        return stack.run_subscriptions()


def test_songs_by_artist_is_served_from_its_table(songs: Any) -> None:
    app, _ = songs
    client = app.test_client()
    hound = _post(app, "Hound Dog", "Elvis")
    _post(app, "Imagine", "John Lennon", 1971)
    tender = _post(app, "Love Me Tender", "Elvis")
    assert client.get("/v1/artists/Elvis/songs").get_json() == []  # built asynchronously
    assert _run(app) == {"notify-new-songs": 3, "songs-by-artist": 3}
    elvis = client.get("/v1/artists/Elvis/songs")
    assert elvis.status_code == 200
    assert elvis.get_json() == [
        {"id": hound, "title": "Hound Dog", "artist": "Elvis", "year": "1956"},
        {"id": tender, "title": "Love Me Tender", "artist": "Elvis", "year": "1956"},
    ]
    assert client.get("/v1/artists/John Lennon/songs").get_json()[0]["year"] == 1971
    version = client.get(f"/v1/songs/{hound}").get_json()["version"]
    assert (
        client.put(f"/v1/songs/{hound}", json={"title": "Hound Dog (live)", "version": version}).status_code
        == 200
    )
    assert client.delete(f"/v1/songs/{tender}").status_code == 204
    _run(app)
    assert [s["title"] for s in client.get("/v1/artists/Elvis/songs").get_json()] == ["Hound Dog (live)"]
    assert client.get("/v1/artists/Nobody/songs").get_json() == []


def test_the_artist_route_needs_an_identity(songs: Any) -> None:
    app, _ = songs
    response = app.test_client().get("/v1/artists/Elvis/songs", headers={"Authorization": ""})
    assert response.status_code == 401 and response.get_json()["code"] == 401


def test_notify_new_songs_tells_the_notifier_once_per_song(songs: Any) -> None:
    app, notifier = songs
    _post(app, "Hound Dog", "Elvis")
    _run(app)
    with app.app_context():
        (created,) = stack.read_events(event_names="SONG_CREATED")
    assert notifier.sent == {created.event_id: "New song: Hound Dog by Elvis (1956)"}
    # Handled again (a reset, or a crash before the position was saved): still one notification.
    assert (
        app.test_cli_runner().invoke(args=["shimmie", "subscriptions", "reset", "notify-new-songs"]).exit_code
        == 0
    )
    assert _run(app)["notify-new-songs"] == 1
    assert len(notifier.sent) == 1


def test_the_default_notifier_logs_each_key_once(caplog: pytest.LogCaptureFixture) -> None:
    notifier = LogNotifier(remember=2)
    with caplog.at_level(logging.INFO, logger="example_songs.notifications"):
        for key in ("a", "a", "b", "c", "a"):
            notifier.notify(key, f"message {key}")
    assert [r.getMessage() for r in caplog.records] == [
        "Notification a: message a",
        "Notification b: message b",
        "Notification c: message c",
        "Notification a: message a",  # forgotten: it remembers the last 2 keys only
    ]

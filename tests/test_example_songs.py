"""The songs example end to end, through ``create_app`` and the Flask test client."""

from __future__ import annotations

import copy
import threading
import uuid
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from example_songs import SongList, stack
from tests.helpers import songs_app
from tests.songs_fixtures import app as app
from tests.songs_fixtures import client as client

SONG_FIELDS = {"id", "title", "artist", "year", "version"}


def all_events(app: Flask) -> list[Any]:
    with app.app_context():
        return stack.read_events()


def history(app: Flask, song_id: str) -> list[Any]:
    with app.app_context():
        return list(stack.history(song_id)["history"])


def json_error(response: TestResponse, code: int | None = None) -> dict[str, Any]:
    """Check the stack's JSON error shape (any 4xx when ``code`` is None) and return the body."""
    if code is None:
        assert 400 <= response.status_code < 500, response.get_data(as_text=True)
    else:
        assert response.status_code == code, response.get_data(as_text=True)
    assert response.mimetype == "application/json", response.get_data(as_text=True)
    body = response.get_json()
    assert isinstance(body, dict)
    assert body["code"] == response.status_code
    assert body["status"] == HTTPStatus(response.status_code).phrase
    assert isinstance(body["message"], str) and body["message"]
    return body


def post_song(client: FlaskClient, **song: Any) -> str:
    """POST a song; return its id (from the Location header)."""
    response = client.post("/v1/songs", json=song)
    assert response.status_code == 201, response.get_data(as_text=True)
    location = response.headers["Location"]
    assert location.startswith("/v1/songs/")
    return location.rsplit("/", 1)[1]


# -- create and read ------------------------------------------------------------------------------


def test_post_answers_201_created_with_a_location_pointing_at_the_song(
    app: Flask, client: FlaskClient
) -> None:
    response = client.post("/v1/songs", json={"title": "Blue", "artist": "Joni Mitchell", "year": "1971"})
    assert response.status_code == 201
    assert response.get_data(as_text=True) == "Created"
    location = response.headers["Location"]
    assert location.startswith("/v1/songs/")
    song_id = location.rsplit("/", 1)[1]
    uuid.UUID(song_id)

    song = client.get(location)
    assert song.status_code == 200
    assert song.get_json() == {
        "id": song_id,
        "title": "Blue",
        "artist": "Joni Mitchell",
        "year": "1971",
        "version": 1,
    }
    events = history(app, song_id)
    assert [(e.event_name, e.stream_version) for e in events] == [("SONG_CREATED", 1)]
    assert events[0].data == {"title": "Blue", "artist": "Joni Mitchell", "year": "1971"}


def test_list_in_the_order_posted_with_year_as_given(client: FlaskClient) -> None:
    assert client.get("/v1/songs").get_json() == []
    posted = [
        {"title": "Zebra", "artist": "Beach House", "year": "2010"},
        {"title": "Aja", "artist": "Steely Dan", "year": 1977},
        {"title": "Music", "artist": "Madonna", "year": "2000"},
    ]
    ids = [post_song(client, **song) for song in posted]
    assert len(set(ids)) == 3

    listing = client.get("/v1/songs")
    assert listing.status_code == 200
    songs = listing.get_json()
    assert isinstance(songs, list)
    assert [set(song) for song in songs] == [SONG_FIELDS] * 3
    assert songs == [{"id": i, **song, "version": 1} for i, song in zip(ids, posted, strict=True)]
    assert isinstance(songs[0]["year"], str) and isinstance(songs[1]["year"], int)


def test_get_unknown_song_is_404_json(client: FlaskClient) -> None:
    post_song(client, title="Blue", artist="Joni Mitchell", year="1971")
    missing = str(uuid.uuid4())
    body = json_error(client.get(f"/v1/songs/{missing}"), 404)
    assert missing in body["message"]


# -- rename ---------------------------------------------------------------------------------------


def test_rename_with_the_right_version_answers_the_renamed_song(app: Flask, client: FlaskClient) -> None:
    song_id = post_song(client, title="Blue", artist="Joni Mitchell", year="1971")
    response = client.put(f"/v1/songs/{song_id}", json={"title": "River", "version": 1})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json() == {
        "id": song_id,
        "title": "River",
        "artist": "Joni Mitchell",
        "year": "1971",
        "version": 2,
    }
    assert client.get(f"/v1/songs/{song_id}").get_json()["title"] == "River"
    events = history(app, song_id)
    assert [(e.event_name, e.stream_version, e.data) for e in events][1:] == [
        ("SONG_RENAMED", 2, {"title": "River"})
    ]


def test_rename_with_a_stale_version_is_409_and_records_nothing(app: Flask, client: FlaskClient) -> None:
    song_id = post_song(client, title="Blue", artist="Joni Mitchell", year="1971")
    assert client.put(f"/v1/songs/{song_id}", json={"title": "River", "version": 1}).status_code == 200
    before = history(app, song_id)

    body = json_error(client.put(f"/v1/songs/{song_id}", json={"title": "Stale", "version": 1}), 409)
    assert body["conflicts"] == [{"stream_id": song_id, "expected": 1, "actual": 2}]

    assert history(app, song_id) == before
    assert len(before) == 2
    song = client.get(f"/v1/songs/{song_id}").get_json()
    assert (song["title"], song["version"]) == ("River", 2)


@pytest.mark.parametrize(
    "body",
    [
        {"title": "No version"},
        {"version": 1},
        {"title": "", "version": 1},
        {"title": "Text version", "version": "1"},
        {"title": "Zero", "version": 0},
        ["River", 1],
    ],
)
def test_rename_with_a_bad_body_is_422_and_records_nothing(
    app: Flask, client: FlaskClient, body: Any
) -> None:
    song_id = post_song(client, title="Blue", artist="Joni Mitchell", year="1971")
    error = json_error(client.put(f"/v1/songs/{song_id}", json=body), 422)
    assert set(error["errors"]) == {"json"}
    assert len(all_events(app)) == 1


def test_rename_unknown_song_is_404(app: Flask, client: FlaskClient) -> None:
    missing = str(uuid.uuid4())
    json_error(client.put(f"/v1/songs/{missing}", json={"title": "River", "version": 1}), 404)
    assert all_events(app) == []


# -- delete ---------------------------------------------------------------------------------------


def test_delete_answers_204_then_the_song_is_gone(app: Flask, client: FlaskClient) -> None:
    keep = post_song(client, title="Aja", artist="Steely Dan", year=1977)
    song_id = post_song(client, title="Blue", artist="Joni Mitchell", year="1971")
    response = client.delete(f"/v1/songs/{song_id}")
    assert response.status_code == 204
    assert response.get_data() == b""

    json_error(client.get(f"/v1/songs/{song_id}"), 404)
    assert [song["id"] for song in client.get("/v1/songs").get_json()] == [keep]
    json_error(client.delete(f"/v1/songs/{song_id}"), 404)
    # The delete, then the erasure of whatever personal data the song had (none here).
    events = history(app, song_id)
    assert [e.event_name for e in events] == ["SONG_CREATED", "SONG_DELETED", "shimmie.pii_erased"]
    assert events[-1].data == {"erased_events": 0}


def test_delete_unknown_song_is_404_and_records_nothing(app: Flask, client: FlaskClient) -> None:
    missing = str(uuid.uuid4())
    body = json_error(client.delete(f"/v1/songs/{missing}"), 404)
    assert missing in body["message"]
    assert all_events(app) == []


# -- bad bodies -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"artist": "Joni Mitchell", "year": "1971"}, id="no-title"),
        pytest.param({"title": "Blue", "year": "1971"}, id="no-artist"),
        pytest.param({"title": "Blue", "artist": "Joni Mitchell"}, id="no-year"),
        pytest.param({}, id="empty-object"),
        pytest.param({"title": 7, "artist": "Joni Mitchell", "year": "1971"}, id="title-int"),
        pytest.param({"title": "Blue", "artist": ["Joni"], "year": "1971"}, id="artist-list"),
        pytest.param({"title": "Blue", "artist": "Joni Mitchell", "year": 19.71}, id="year-float"),
        pytest.param({"title": "Blue", "artist": "Joni Mitchell", "year": True}, id="year-bool"),
        pytest.param({"title": "Blue", "artist": "Joni Mitchell", "year": ""}, id="year-empty"),
        pytest.param({"title": "", "artist": "Joni Mitchell", "year": "1971"}, id="title-empty"),
        pytest.param(
            {"title": "Blue", "artist": "Joni Mitchell", "year": "1971", "submitted_by": {"name": "Ann"}},
            id="submitter-without-email",
        ),
        pytest.param(
            {
                "title": "Blue",
                "artist": "Joni Mitchell",
                "year": "1971",
                "submitted_by": {"name": "Ann", "email": "not-an-email"},
            },
            id="submitter-bad-email",
        ),
    ],
)
def test_post_with_missing_or_mistyped_fields_is_422_and_records_nothing(
    app: Flask, client: FlaskClient, body: dict[str, Any]
) -> None:
    error = json_error(client.post("/v1/songs", json=body), 422)
    assert error["errors"], error
    assert all_events(app) == []
    assert client.get("/v1/songs").get_json() == []


def test_post_with_a_json_array_is_4xx_json_and_records_nothing(app: Flask, client: FlaskClient) -> None:
    json_error(client.post("/v1/songs", json=[{"title": "Blue", "artist": "Joni Mitchell", "year": "1971"}]))
    json_error(client.post("/v1/songs", json="Blue"))
    assert all_events(app) == []


def test_post_without_a_json_content_type_is_4xx_json_and_records_nothing(
    app: Flask, client: FlaskClient
) -> None:
    json_error(
        client.post(
            "/v1/songs",
            data='{"title": "Blue", "artist": "Joni Mitchell", "year": "1971"}',
            content_type="text/plain",
        )
    )
    json_error(client.post("/v1/songs", data={"title": "Blue", "artist": "Joni Mitchell", "year": "1971"}))
    assert all_events(app) == []


def test_post_with_malformed_json_is_400_json_and_records_nothing(app: Flask, client: FlaskClient) -> None:
    body = json_error(
        client.post("/v1/songs", data='{"title": "Blue",', content_type="application/json"), 400
    )
    assert "JSON" in body["message"]
    assert all_events(app) == []


# -- personal data --------------------------------------------------------------------------------


def test_submitter_pii_is_listed_then_erased_for_good(app: Flask, client: FlaskClient) -> None:
    submitter = {"name": "Ann Example", "email": "ann@example.com"}
    song_id = post_song(client, title="Blue", artist="Joni Mitchell", year="1971", submitted_by=submitter)
    other_id = post_song(
        client,
        title="Aja",
        artist="Steely Dan",
        year=1977,
        submitted_by={"name": "Bo", "email": "bo@example.com"},
    )

    listed = {song["id"]: song for song in client.get("/v1/songs").get_json()}
    assert listed[song_id]["submitted_by"] == submitter

    # The PII never reaches the event store itself.
    state = app.extensions["shimmie"]
    raw = [e for e in state.event_store.read(0, stream_ids=[song_id])]
    assert "ann@example.com" not in repr([e.data for e in raw])

    response = client.delete(f"/v1/songs/{song_id}/submitter")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json() == {"erased_events": 1}

    listed = {song["id"]: song for song in client.get("/v1/songs").get_json()}
    assert listed[song_id]["submitted_by"] == {"name": "", "email": ""}
    assert listed[song_id]["title"] == "Blue"
    assert listed[other_id]["submitted_by"] == {"name": "Bo", "email": "bo@example.com"}

    events = history(app, song_id)
    assert listed[song_id]["version"] == len(events) == 2
    created = events[0]
    assert created.event_name == "SONG_CREATED"
    assert created.pii_erased is True
    assert created.data["submitted_by"] == {"name": "", "email": ""}
    assert events[-1].event_name == "shimmie.pii_erased"
    assert events[-1].data == {"erased_events": 1}
    assert history(app, other_id)[0].pii_erased is False

    # The listed version is the one a rename must name.
    renamed = client.put(f"/v1/songs/{song_id}", json={"title": "River", "version": 2})
    assert renamed.status_code == 200, renamed.get_data(as_text=True)
    assert renamed.get_json()["submitted_by"] == {"name": "", "email": ""}

    # A replay from the store gives the same (erased) listing.
    with app.app_context():
        before = copy.deepcopy(stack.model(SongList).all())
        stack.replay()
        assert stack.model(SongList).all() == before


# -- the app factory and its environment ----------------------------------------------------------


def test_create_app_reads_prefixed_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASK_SHIMMIE_SEQ_WAIT_TIMEOUT", "0.3")
    app = songs_app({"TESTING": True})
    assert app.config["SHIMMIE_SEQ_WAIT_TIMEOUT"] == 0.3
    assert isinstance(app.config["SHIMMIE_SEQ_WAIT_TIMEOUT"], float)
    assert app.extensions["shimmie"].settings.seq_wait_timeout == 0.3


def test_config_argument_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASK_SHIMMIE_SEQ_WAIT_TIMEOUT", "0.3")
    app = songs_app({"TESTING": True, "SHIMMIE_SEQ_WAIT_TIMEOUT": 2.5})
    assert app.config["SHIMMIE_SEQ_WAIT_TIMEOUT"] == 2.5


def test_event_store_from_the_environment_is_honoured(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    database = tmp_path / "songs.db"
    monkeypatch.setenv("FLASK_SHIMMIE_EVENT_STORE", f"sqlite:///{database}")
    first = songs_app({"TESTING": True})
    assert first.config["SHIMMIE_EVENT_STORE"] == f"sqlite:///{database}"
    try:
        song_id = post_song(first.test_client(), title="Blue", artist="Joni Mitchell", year="1971")
    finally:
        stack.shutdown(first)
    assert database.exists()

    second = songs_app({"TESTING": True})
    try:
        songs = second.test_client().get("/v1/songs").get_json()
    finally:
        stack.shutdown(second)
    assert [(song["id"], song["title"]) for song in songs] == [(song_id, "Blue")]


# -- concurrency ----------------------------------------------------------------------------------


def test_concurrent_renames_each_succeed_once_per_version(app: Flask) -> None:
    song_id = post_song(app.test_client(), title="Start", artist="Many Hands", year="2024")
    threads_n, rounds = 8, 20
    results: list[list[tuple[int, int, str, dict[str, Any]]]] = [[] for _ in range(threads_n)]
    failures: list[BaseException] = []
    barrier = threading.Barrier(threads_n)

    def renamer(index: int) -> None:
        try:
            client = app.test_client()
            version = client.get(f"/v1/songs/{song_id}").get_json()["version"]
            barrier.wait(5)
            for attempt in range(rounds):
                title = f"t{index}-{attempt}"
                response = client.put(f"/v1/songs/{song_id}", json={"title": title, "version": version})
                body = response.get_json()
                results[index].append((response.status_code, version, title, body))
                if response.status_code == 200:
                    version = body["version"]
                else:
                    version = client.get(f"/v1/songs/{song_id}").get_json()["version"]
        except BaseException as error:  # reported below, in the test thread
            failures.append(error)

    threads = [threading.Thread(target=renamer, args=(i,)) for i in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not failures, failures
    answers = [answer for per_thread in results for answer in per_thread]
    assert len(answers) == threads_n * rounds

    successes = [(version, title, body) for status, version, title, body in answers if status == 200]
    others = [(status, body) for status, _, _, body in answers if status != 200]
    assert successes
    for status, body in others:
        assert status == 409, body
        assert body["conflicts"][0]["stream_id"] == song_id
    for version, _, body in successes:
        assert body["version"] >= version + 1

    # Each success moved the song from the version it read to exactly the next one.
    renames = [e for e in history(app, song_id) if e.event_name == "SONG_RENAMED"]
    assert len(renames) == len(successes)
    assert [e.stream_version for e in renames] == list(range(2, 2 + len(successes)))
    by_version = {e.stream_version: e.data["title"] for e in renames}
    assert {version + 1: title for version, title, _ in successes} == by_version

    final = app.test_client().get(f"/v1/songs/{song_id}").get_json()
    assert final["version"] == 1 + len(successes)
    assert final["title"] == by_version[1 + len(successes)]

    with app.app_context():
        before = copy.deepcopy(stack.model(SongList).all())
        stack.replay()
        after = stack.model(SongList).all()
    assert after == before
    assert [song["version"] for song in after] == [1 + len(successes)]


def test_songs_need_a_token_and_writes_need_the_editor_role() -> None:
    from example_songs import create_app

    app = create_app({"TESTING": True})
    client = app.test_client()
    song = {"title": "Blue Suede Shoes", "artist": "Carl Perkins", "year": "1956"}
    assert client.get("/v1/songs").status_code == 401
    assert client.get("/v1/songs", headers={"Authorization": "Bearer nope"}).status_code == 401
    reader = {"Authorization": "Bearer reader-token"}
    assert client.get("/v1/songs", headers=reader).get_json() == []
    refused = client.post("/v1/songs", json=song, headers=reader)
    assert refused.status_code == 403 and refused.get_json()["code"] == 403
    editor = {"Authorization": "Bearer editor-token"}
    assert client.post("/v1/songs", json=song, headers=editor).status_code == 201
    with app.app_context():
        assert [e.event_name for e in stack.read_events()] == ["SONG_CREATED"]


def test_the_admin_api_needs_the_admin_role() -> None:
    from example_songs import create_app

    client = create_app({"TESTING": True}).test_client()
    assert client.get("/admin/health").get_json()["status"] == "ok"
    assert client.get("/admin/events").status_code == 401
    assert client.get("/admin/events", headers={"Authorization": "Bearer editor-token"}).status_code == 403
    admin = client.get("/admin/events", headers={"Authorization": "Bearer admin-token"})
    assert admin.status_code == 200 and admin.get_json() == {"events": [], "next_after": None}


def test_tokens_come_from_config() -> None:
    from example_songs import create_app

    app = create_app({"TESTING": True, "SONGS_TOKENS": {"s3cret": {"name": "Ops", "roles": ["editor"]}}})
    client = app.test_client()
    assert client.get("/v1/songs", headers={"Authorization": "Bearer editor-token"}).status_code == 401
    assert client.get("/v1/songs", headers={"Authorization": "Bearer s3cret"}).status_code == 200

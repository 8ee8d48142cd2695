"""The songs example, tested with the shimmie pytest fixture (as ``docs/testing.md`` shows)."""

from __future__ import annotations

from example_songs import SongList
from flask_shimmie import NewEvent
from flask_shimmie.testing import ShimmieTester

HOUND_DOG = {"title": "Hound Dog", "artist": "Elvis", "year": "1952"}


def test_renaming_a_song(shimmie: ShimmieTester) -> None:
    shimmie.given("song-1", "SONG_CREATED", HOUND_DOG)
    shimmie.put("/v1/songs/song-1", json={"title": "Hound Dog (live)", "version": 1}, expect=200)
    (renamed,) = shimmie.recorded("SONG_RENAMED")
    assert renamed.data == {"title": "Hound Dog (live)"}
    assert shimmie.model(SongList).get("song-1")["version"] == 2  # type: ignore[index]


def test_a_stale_rename_records_nothing(shimmie: ShimmieTester) -> None:
    shimmie.given("song-1", "SONG_CREATED", HOUND_DOG)
    shimmie.given("song-1", "SONG_RENAMED", {"title": "Hound Dog!"})
    response = shimmie.put("/v1/songs/song-1", json={"title": "Too late", "version": 1}, expect=409)
    assert response.get_json()["conflicts"] == [{"stream_id": "song-1", "expected": 1, "actual": 2}]
    assert shimmie.recorded() == []


def test_posting_a_song(shimmie: ShimmieTester) -> None:
    response = shimmie.post("/v1/songs", json=HOUND_DOG, expect=201)
    (created,) = shimmie.recorded("SONG_CREATED")
    assert response.headers["Location"] == f"/v1/songs/{created.stream_id}"
    assert shimmie.get(response.headers["Location"]).get_json()["title"] == "Hound Dog"


def test_the_model_alone() -> None:
    model = ShimmieTester.apply(
        SongList(),
        [NewEvent("s1", "SONG_CREATED", HOUND_DOG), NewEvent("s1", "SONG_DELETED", {})],
    )
    assert model.all() == []


def test_deleting_a_song_forgets_its_submitter(shimmie: ShimmieTester) -> None:
    submitter = {"name": "Ann", "email": "ann@example.com"}
    shimmie.given("song-1", "SONG_CREATED", {**HOUND_DOG, "submitted_by": submitter})
    shimmie.delete("/v1/songs/song-1", expect=204)
    assert [e.event_name for e in shimmie.recorded()] == ["SONG_DELETED", "shimmie.pii_erased"]
    with shimmie.app.app_context():
        (created, *_) = shimmie.stack.history("song-1")["history"]
    assert created.pii_erased and created.data["submitted_by"] == {"name": "", "email": ""}


def test_listing_songs_page_by_page(shimmie: ShimmieTester) -> None:
    _, second, third = (shimmie.given(f"song-{n}", "SONG_CREATED", HOUND_DOG) for n in range(3))
    page = shimmie.get("/v1/songs?limit=2")
    assert [song["id"] for song in page.get_json()] == ["song-0", "song-1"]
    # The cursor is the position of the page's last SONG_CREATED.
    assert page.headers["Link"] == f'</v1/songs?after={second.sequence_num}&limit=2>; rel="next"'
    last = shimmie.get(f"/v1/songs?after={second.sequence_num}&limit=2")
    assert [song["id"] for song in last.get_json()] == [third.stream_id]
    assert "Link" not in last.headers

"""The pytest plugin, run through pytester as a user's test suite would use it."""

from __future__ import annotations

import pytest

CONFTEST = """
import pytest
from example_songs import create_app


@pytest.fixture
def app():
    return create_app({"TESTING": True})


@pytest.fixture(autouse=True)
def signed_in(shimmie):
    shimmie.headers["Authorization"] = "Bearer editor-token"
"""


def test_given_when_then_with_the_songs_example(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        """
        from flask_shimmie import NewEvent
        from example_songs import SongList


        def test_create(shimmie):
            shimmie.given("old-song", "SONG_CREATED", {"title": "Old", "artist": "A", "year": "1950"})
            song = {"title": "New", "artist": "B", "year": 1999}
            response = shimmie.post("/v1/songs", json=song, expect=201)
            assert response.get_data(as_text=True) == "Created"
            (created,) = shimmie.recorded("SONG_CREATED")
            assert created.data["title"] == "New"
            assert [s["title"] for s in shimmie.model(SongList).all()] == ["Old", "New"]


        def test_each_test_gets_fresh_stores(shimmie):
            assert shimmie.get("/v1/songs").get_json() == []
            assert shimmie.recorded() == []


        def test_apply_to_a_model_alone(shimmie):
            model = shimmie.apply(SongList(), [
                NewEvent("s1", "SONG_CREATED", {"title": "T", "artist": "A", "year": "1"}),
                NewEvent("s1", "SONG_RENAMED", {"title": "T2"}),
            ])
            assert model.get("s1") == {"id": "s1", "title": "T2", "artist": "A", "year": "1", "version": 2}
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_a_wrong_status_shows_status_body_and_events(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        """
        def test_wrong_expectation(shimmie):
            shimmie.given("s", "SONG_CREATED", {"title": "GivenTitle", "artist": "A", "year": "1"})
            shimmie.post("/v1/songs", json={"title": "New", "artist": "B", "year": 1999}, expect=201)
            shimmie.put("/v1/songs/nope", json={"title": "X", "version": 1}, expect=200)
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--tb=short")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*PUT /v1/songs/nope answered 404, expected 200.*",
            "*Body: *No song nope*",
            "*Events recorded so far:*",
            "*SONG_CREATED*New*",
        ]
    )
    assert "GivenTitle" not in result.stdout.str()  # given events are not "recorded"


def test_without_an_app_fixture_the_error_says_what_to_define(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_needs_app(shimmie):
            pass
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*needs an `app` fixture*"])

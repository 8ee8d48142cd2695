"""The pytest plugin's ``shimmie.run_subscriptions()``, run through pytester as a user's suite would."""

from __future__ import annotations

import pytest

CONFTEST = """
import pytest
from example_songs import create_app


class Recorder:
    def __init__(self):
        self.sent = []

    def notify(self, key, message):
        self.sent.append(message)


@pytest.fixture
def notifier():
    return Recorder()


@pytest.fixture
def app(notifier):
    return create_app({"TESTING": True, "SONGS_NOTIFIER": notifier})


@pytest.fixture(autouse=True)
def signed_in(shimmie):
    shimmie.headers["Authorization"] = "Bearer editor-token"
"""


def test_run_subscriptions_lets_a_test_assert_their_effects(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        """
        def test_a_new_song_is_notified_and_listed_by_artist(shimmie, notifier):
            song = {"title": "Hound Dog", "artist": "Elvis", "year": "1956"}
            shimmie.post("/v1/songs", json=song, expect=201)
            assert notifier.sent == []
            assert shimmie.run_subscriptions() == {"notify-new-songs": 1, "songs-by-artist": 1}
            assert notifier.sent == ["New song: Hound Dog by Elvis (1956)"]
            songs = shimmie.get("/v1/artists/Elvis/songs").get_json()
            assert [song["title"] for song in songs] == ["Hound Dog"]
            with shimmie.projection_db() as db:
                assert db.execute("SELECT COUNT(*) FROM songs_by_artist").fetchone()[0] == 1


        def test_given_events_reach_them_too_and_names_pick_some(shimmie, notifier):
            shimmie.given("s1", "SONG_CREATED", {"title": "Old", "artist": "A", "year": "1950"})
            assert shimmie.run_subscriptions("songs-by-artist") == {"songs-by-artist": 1}
            assert notifier.sent == []
            assert shimmie.run_subscriptions() == {"notify-new-songs": 1, "songs-by-artist": 0}


        def test_each_test_starts_from_nothing(shimmie, notifier):
            assert shimmie.run_subscriptions() == {"notify-new-songs": 0, "songs-by-artist": 0}
            assert shimmie.get("/v1/artists/Elvis/songs").get_json() == []
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)

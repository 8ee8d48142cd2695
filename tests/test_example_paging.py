"""``GET /v1/songs?after=<cursor>&limit=<n>``: a JSON array of songs in the order posted, by pages.

Pages hold 100 songs unless ``limit`` (1 to 1000) says otherwise; a ``Link: <...>; rel="next"``
header names the next page while songs follow. The cursor is the position of the last song's
``SONG_CREATED``, so it stays valid when songs are deleted. Bad values answer 400 JSON and are
checked before they are turned into numbers (a 5,000-digit string is no 500). A page costs
``O(log n + limit)``: the model's position index is checked against a reference here, and read
while another thread changes it.
"""

from __future__ import annotations

import random
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st

import example_songs.positions
from example_songs import SongList, stack
from example_songs.positions import PositionIndex
from flask_shimmie import NewEvent
from flask_shimmie.testing import ShimmieTester
from tests.serving import next_page
from tests.songs_fixtures import app as app
from tests.songs_fixtures import client as client


def song(n: int) -> dict[str, Any]:
    return {"title": f"Song {n}", "artist": "The Pages", "year": 2000 + n % 25}


def post_songs(app: Flask, count: int) -> list[str]:
    """Store ``count`` songs in one batch (quicker than ``count`` POSTs); their ids, in order."""
    ids = [f"song-{n:05d}" for n in range(count)]
    with app.app_context():
        stack.record_events([NewEvent(song_id, "SONG_CREATED", song(n)) for n, song_id in enumerate(ids)])
    return ids


def positions(app: Flask) -> dict[str, int]:
    with app.app_context():
        return {e.stream_id: e.sequence_num for e in stack.read_events(event_names="SONG_CREATED")}


def all_pages(client: FlaskClient, first: str) -> Iterator[tuple[str, list[dict[str, Any]], str | None]]:
    """``(path, songs, next path)`` for each page from ``first`` on."""
    path: str | None = first
    while path is not None:
        response = client.get(path)
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.mimetype == "application/json"
        songs = response.get_json()
        assert isinstance(songs, list)
        following = next_page(response.headers.get("Link"))
        yield path, songs, following
        path = following


def test_pages_follow_each_other_in_the_order_posted(app: Flask, client: FlaskClient) -> None:
    ids = post_songs(app, 7)
    at = positions(app)
    pages = list(all_pages(client, "/v1/songs?limit=3"))
    assert [[s["id"] for s in songs] for _, songs, _ in pages] == [ids[0:3], ids[3:6], ids[6:7]]
    assert [following for _, _, following in pages] == [
        f"/v1/songs?after={at[ids[2]]}&limit=3",
        f"/v1/songs?after={at[ids[5]]}&limit=3",
        None,
    ]
    first = pages[0][1][0]
    assert first == {"id": ids[0], "title": "Song 0", "artist": "The Pages", "year": 2000, "version": 1}
    # A page that ends exactly at the last song has no next link.
    response = client.get("/v1/songs?limit=7")
    assert len(response.get_json()) == 7 and "Link" not in response.headers
    assert client.get(f"/v1/songs?after={at[ids[6]]}").get_json() == []


def test_default_page_is_100_and_the_largest_1000(app: Flask, client: FlaskClient) -> None:
    ids = post_songs(app, 1001)
    response = client.get("/v1/songs")
    assert [s["id"] for s in response.get_json()] == ids[:100]
    assert next_page(response.headers["Link"]) == f"/v1/songs?after={positions(app)[ids[99]]}&limit=100"
    assert response.headers["Link"].endswith('>; rel="next"')

    biggest = client.get("/v1/songs?limit=1000")
    assert [s["id"] for s in biggest.get_json()] == ids[:1000]
    rest = client.get(next_page(biggest.headers["Link"]) or "")
    assert [s["id"] for s in rest.get_json()] == ids[1000:]
    assert "Link" not in rest.headers

    listed = [s["id"] for _, songs, _ in all_pages(client, "/v1/songs") for s in songs]
    assert listed == ids


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=1001",
        "limit=-1",
        "limit=ten",
        "limit=1.5",
        "limit=+5",
        "limit= 5",
        "limit=%D9%A3",  # an Arabic-Indic digit: isdigit() says yes, int() would take it
        "after=-1",
        "after=abc",
        "after=0x10",
        "after=9223372036854775808",
        "after=" + "9" * 20,
        "after=" + "9" * 5000,
        "limit=" + "9" * 5000,
    ],
)
def test_bad_paging_values_are_400_json(app: Flask, client: FlaskClient, query: str) -> None:
    post_songs(app, 3)
    response = client.get(f"/v1/songs?{query}")
    assert response.status_code == 400, response.get_data(as_text=True)
    body = response.get_json()
    assert body["code"] == 400 and body["status"] == "Bad Request"
    name = query.split("=", 1)[0]
    assert repr(name) in body["message"]
    assert len(body["message"]) < 200


def test_empty_values_mean_the_defaults(app: Flask, client: FlaskClient) -> None:
    ids = post_songs(app, 3)
    assert [s["id"] for s in client.get("/v1/songs?after=&limit=").get_json()] == ids
    assert client.get("/v1/songs?after=9223372036854775807").get_json() == []


def test_a_cursor_stays_valid_when_songs_are_deleted(app: Flask, client: FlaskClient) -> None:
    ids = post_songs(app, 6)
    first = client.get("/v1/songs?limit=2")
    assert [s["id"] for s in first.get_json()] == ids[:2]
    following = next_page(first.headers["Link"])
    assert following is not None
    # The cursor's own song and the next one go before the next page is read.
    assert client.delete(f"/v1/songs/{ids[1]}").status_code == 204
    assert client.delete(f"/v1/songs/{ids[2]}").status_code == 204
    second = client.get(following)
    assert [s["id"] for s in second.get_json()] == ids[3:5]
    third = client.get(next_page(second.headers["Link"]) or "")
    assert [s["id"] for s in third.get_json()] == ids[5:]
    assert "Link" not in third.headers


class CountingDict(dict[str, Any]):
    """A dict that counts its ``get`` calls."""

    gets = 0

    def get(self, key: str, default: Any = None) -> Any:
        CountingDict.gets += 1
        return super().get(key, default)


def test_a_page_reads_only_its_own_songs_however_many_went_before() -> None:
    """20,000 songs, the first 15,000 deleted: a page looks at its songs (and one more), not the rest."""
    events = [NewEvent(f"s{n}", "SONG_CREATED", song(n)) for n in range(20_000)]
    events += [NewEvent(f"s{n}", "SONG_DELETED", {}) for n in range(15_000)]
    model = ShimmieTester.apply(SongList(), events)
    model.songs = CountingDict(model.songs)

    CountingDict.gets = 0
    page, cursor = model.page(0, 10)
    assert [s["id"] for s in page] == [f"s{n}" for n in range(15_000, 15_010)]
    assert CountingDict.gets == 11

    CountingDict.gets = 0
    assert cursor is not None
    page, _ = model.page(cursor + 2_000, 5)
    assert len(page) == 5 and CountingDict.gets == 6


# -- the index --------------------------------------------------------------------------------


operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(1, 400)),
        st.tuples(st.just("append"), st.integers(1, 5)),
        st.tuples(st.just("remove"), st.integers(1, 400)),
    ),
    max_size=300,
)


@settings(max_examples=150, deadline=None, database=None)
@given(operations=operations, seeks=st.lists(st.integers(0, 450), min_size=1, max_size=8))
def test_the_index_agrees_with_a_sorted_list(operations: list[tuple[str, int]], seeks: list[int]) -> None:
    original = example_songs.positions.CHUNK
    example_songs.positions.CHUNK = 4  # many chunks: splits, empty chunks and seeks across them
    try:
        index = PositionIndex()
        reference: dict[int, str] = {}
        for operation, number in operations:
            if operation == "append":
                number += max(reference, default=0)
            if operation == "remove":
                index.remove(number)
                reference.pop(number, None)
            elif number in reference:
                with pytest.raises(ValueError):
                    index.add(number, "again")
            else:
                index.add(number, f"v{number}")
                reference[number] = f"v{number}"
            assert len(index) == len(reference)
        for seek in seeks:
            assert list(index.after(seek)) == sorted((p, v) for p, v in reference.items() if p > seek)
    finally:
        example_songs.positions.CHUNK = original


def test_the_index_can_be_read_while_another_thread_changes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """One thread appends and removes (as the model's handlers do) while readers seek and iterate
    for a second, with chunks of 4 (so chunks come and go all the time) and thread switches forced
    every 10 microseconds: every read is in order, without repeats, yields only pairs that were
    added together, and skips none of the positions that are never removed (every tenth)."""
    monkeypatch.setattr(example_songs.positions, "CHUNK", 4)
    index = PositionIndex()
    removable: list[int] = []
    for position in range(1, 2_000):
        index.add(position, f"v{position}")
        if position % 10:
            removable.append(position)
    stop = threading.Event()
    failures: list[str] = []
    reads: list[int] = []

    def change() -> None:
        rng = random.Random(7)
        position = 1_999
        while not stop.is_set():
            position += 1
            index.add(position, f"v{position}")
            if position % 10:
                removable.append(position)
            if len(removable) > 1_500:  # remove one at random: chunks empty everywhere
                pick = rng.randrange(len(removable))
                removable[pick], removable[-1] = removable[-1], removable[pick]
                index.remove(removable.pop())

    def read(seed: int) -> None:
        rng = random.Random(seed)
        count = 0
        while not stop.is_set():
            count += 1
            after = rng.randrange(0, 2_000)
            found = list(index.after(after))
            positions = [p for p, _ in found]
            if positions != sorted(set(positions)) or (positions and positions[0] <= after):
                failures.append(f"after {after}: out of order or repeated")
            if any(value != f"v{p}" for p, value in found):
                failures.append(f"after {after}: a value does not belong to its position")
            last = positions[-1] if positions else after
            skipped = set(range((after // 10 + 1) * 10, last + 1, 10)) - set(positions)
            if skipped:
                failures.append(f"after {after}: skipped {sorted(skipped)[:5]}")
        reads.append(count)

    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        threads = [threading.Thread(target=change)] + [
            threading.Thread(target=read, args=(n,)) for n in range(3)
        ]
        for thread in threads:
            thread.start()
        stop.wait(1.0)
        stop.set()
        for thread in threads:
            thread.join(30)
    finally:
        sys.setswitchinterval(previous)
    assert not failures, failures[:5]
    assert len(reads) == 3 and min(reads) > 0, reads

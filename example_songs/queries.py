"""Song Query: the reads, answered from the SongList model."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, jsonify, request, url_for
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import BadRequest

from flask_shimmie import any_identity, authorize

from .model import SongList
from .schemas import DEFAULT_PAGE, MAX_CURSOR, MAX_PAGE, PageQuery, Song
from .stack import stack

song_query = Blueprint("song_query", __name__)

#: ``GET /v1/songs`` page size when ``limit`` is not given, and its largest value.
DEFAULT_LIMIT = DEFAULT_PAGE
MAX_LIMIT = MAX_PAGE
#: Digits a cursor may have: positions are 64-bit (19 digits).
MAX_CURSOR_DIGITS = 19


def _whole_number(name: str, default: int, minimum: int, maximum: int) -> int:
    """Query parameter ``name`` as a whole number in ``minimum..maximum``; 400 JSON otherwise."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    # Checked before int(): a huge digit string would cost time, then fail in int() (a 500).
    if not (raw.isascii() and raw.isdigit()) or len(raw) > MAX_CURSOR_DIGITS:
        raise BadRequest(
            f"Query parameter {name!r} must be a whole number {minimum} to {maximum}, not {raw[:40]!r}."
        )
    value = int(raw)
    if not minimum <= value <= maximum:
        raise BadRequest(f"Query parameter {name!r} must be {minimum} to {maximum}, not {value}.")
    return value


@song_query.get("")
@authorize(any_identity)
@stack.doc(parameters=[{"in": "query", "schema": PageQuery}])
@stack.response(
    200,
    Song(many=True),
    headers={
        "Link": {
            "description": 'The next page, when more follow: <...>; rel="next"',
            "schema": {"type": "string"},
        }
    },
)
def list_songs() -> ResponseReturnValue:
    """A page of songs in the order posted: ``?after=<cursor>&limit=<n>`` (default 100, at most 1000).

    The body is a JSON array of songs. When more follow, a ``Link: <...>;
    rel="next"`` header gives the next page's URL; its ``after`` is the
    position of the last song's ``SONG_CREATED`` event, so it stays valid
    when songs are deleted meanwhile.
    """
    after = _whole_number("after", 0, 0, MAX_CURSOR)
    limit = _whole_number("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    songs, cursor = stack.model(SongList).page(after, limit)
    response = jsonify(songs)
    if cursor is not None:
        response.headers["Link"] = f'<{url_for(".list_songs", after=cursor, limit=limit)}>; rel="next"'
    return response


@song_query.get("/<song_id>")
@authorize(any_identity)
@stack.response(200, Song)
def get_song(song_id: str) -> dict[str, Any]:
    """One song with its version; 404 if unknown."""
    song = stack.model(SongList).get(song_id)
    if song is None:
        abort(404, f"No song {song_id}.")
    return dict(song)  # a copy: the model may change the song while it is serialised

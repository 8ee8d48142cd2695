"""Song Query: the reads, answered from the SongList model."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, jsonify
from flask.typing import ResponseReturnValue

from flask_shimmie import any_identity, authorize

from .model import SongList
from .stack import stack

song_query = Blueprint("song_query", __name__)


@song_query.get("")
@authorize(any_identity)
def list_songs() -> ResponseReturnValue:
    """Every song, in the order posted."""
    return jsonify(stack.model(SongList).all())


@song_query.get("/<song_id>")
@authorize(any_identity)
def get_song(song_id: str) -> dict[str, Any]:
    """One song with its version; 404 if unknown."""
    song = stack.model(SongList).get(song_id)
    if song is None:
        abort(404, f"No song {song_id}.")
    return song

"""The "songs-by-artist" projection and ``GET /v1/artists/<artist>/songs``, served from its table.

The table lives in the event store's database (on ``memory://``, in a
per-process SQLite database): the projection's writes commit with its
position, so each event is applied exactly once. It is built asynchronously:
a song posted a moment ago may not be listed yet.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from flask_shimmie import Event, Projection, any_identity, authorize, subscribe

from .stack import stack

artist_query = Blueprint("artist_query", __name__)


def sql(db: Any, text: str) -> str:
    """``text`` with the placeholders of ``db``'s driver: ``?`` for SQLite, ``%s`` for psycopg."""
    return text if isinstance(db, sqlite3.Connection) else text.replace("?", "%s")


class SongsByArtist(Projection):
    """One row per live song: its artist, title, year, and the position it was created at."""

    name = "songs-by-artist"
    version = 1

    def setup(self, db: Any) -> None:
        db.execute(
            "CREATE TABLE IF NOT EXISTS songs_by_artist ("
            " song_id TEXT PRIMARY KEY, artist TEXT NOT NULL, title TEXT NOT NULL,"
            " year_json TEXT NOT NULL, created_at BIGINT NOT NULL)"
        )
        db.execute(
            "CREATE INDEX IF NOT EXISTS songs_by_artist_artist ON songs_by_artist (artist, created_at)"
        )

    def reset(self, db: Any) -> None:
        db.execute("DELETE FROM songs_by_artist")

    @subscribe("SONG_CREATED")
    def created(self, event: Event, db: Any) -> None:
        data = event.data
        db.execute(
            sql(db, "INSERT INTO songs_by_artist VALUES (?, ?, ?, ?, ?)"),
            (event.stream_id, data["artist"], data["title"], json.dumps(data["year"]), event.sequence_num),
        )

    @subscribe("SONG_RENAMED")
    def renamed(self, event: Event, db: Any) -> None:
        db.execute(
            sql(db, "UPDATE songs_by_artist SET title = ? WHERE song_id = ?"),
            (event.data["title"], event.stream_id),
        )

    @subscribe("SONG_DELETED")
    def deleted(self, event: Event, db: Any) -> None:
        db.execute(sql(db, "DELETE FROM songs_by_artist WHERE song_id = ?"), (event.stream_id,))


@artist_query.get("/<artist>/songs")
@authorize(any_identity)
def songs_by_artist(artist: str) -> ResponseReturnValue:
    """The artist's songs in the order posted: ``[{"id", "title", "artist", "year"}]`` (empty if none)."""
    with stack.projection_db() as db:
        rows = db.execute(
            sql(
                db,
                "SELECT song_id, title, artist, year_json FROM songs_by_artist WHERE artist = ?"
                " ORDER BY created_at",
            ),
            (artist,),
        ).fetchall()
    songs = [{"id": row[0], "title": row[1], "artist": row[2], "year": json.loads(row[3])} for row in rows]
    return jsonify(songs)

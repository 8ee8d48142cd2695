"""Song Command: the writes. Each song is a stream of its own."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Blueprint, Response, abort, request, url_for

from flask_shimmie import NO_STREAM, STREAM_EXISTS, authorize

from .auth import is_editor
from .model import SongList
from .schemas import RenameRequest
from .stack import stack

song_command = Blueprint("song_command", __name__)


def _meta() -> dict[str, Any]:
    return {"user_agent": request.user_agent.string}


def _song_or_404(song_id: str) -> dict[str, Any]:
    song = stack.model(SongList).get(song_id)
    if song is None:
        abort(404, f"No song {song_id}.")
    return song


@song_command.post("")
@authorize(is_editor)
def create_song() -> Response:
    """Record ``SONG_CREATED`` on a new stream; 201 ``Created`` with a ``Location``."""
    body = request.get_json()
    song_id = str(uuid.uuid4())
    stack.record_event(song_id, "SONG_CREATED", body, expected_version=NO_STREAM, meta=_meta())
    response = Response("Created", status=201, mimetype="text/plain")
    response.headers["Location"] = url_for("song_query.get_song", song_id=song_id)
    return response


@song_command.put("/<song_id>")
@authorize(is_editor)
@stack.arguments(RenameRequest)
def rename_song(rename: dict[str, Any], song_id: str) -> dict[str, Any]:
    """Record ``SONG_RENAMED`` if the song is still at ``version``; 409 when stale."""
    _song_or_404(song_id)
    stack.record_event(
        song_id, "SONG_RENAMED", {"title": rename["title"]}, expected_version=rename["version"], meta=_meta()
    )
    return _song_or_404(song_id)


@song_command.delete("/<song_id>")
@authorize(is_editor)
def delete_song(song_id: str) -> tuple[str, int]:
    """Record ``SONG_DELETED``; 404 for an unknown song."""
    _song_or_404(song_id)
    stack.record_event(song_id, "SONG_DELETED", {}, expected_version=STREAM_EXISTS, meta=_meta())
    return "", 204


@song_command.delete("/<song_id>/submitter")
@authorize(is_editor)
def erase_submitter(song_id: str) -> dict[str, Any]:
    """Erase the personal data of the song's submitter for good (GDPR)."""
    _song_or_404(song_id)
    erased = stack.erase_pii(song_id)
    return {"erased_events": erased}

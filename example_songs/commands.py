"""Song Command: the writes. Each song is a stream of its own.

Every write that depends on the song (rename, delete, erase the submitter)
loads it with ``stack.load_or_404``, decides on that copy, and records
against the version the copy reflects: a write that landed meanwhile makes
it answer 409 instead of acting on what it no longer sees. Answers come from
the recorded event, never from a later read of the model, which a write
committed just after could already have changed.
"""

from __future__ import annotations

import uuid
from typing import Any

from flask import Blueprint, Response, abort, request, url_for

from flask_shimmie import NO_STREAM, InvalidEventError, StreamVersionError, authorize

from .auth import is_editor
from .model import SongList, renamed
from .schemas import Erased, RenameRequest, Song, SongCreated
from .stack import stack

song_command = Blueprint("song_command", __name__)


def _meta() -> dict[str, Any]:
    return {"user_agent": request.user_agent.string}


def _no_song(song_id: str) -> str:
    return f"No song {song_id}."


@song_command.post("")
@authorize(is_editor)
@stack.doc(requestBody={"required": True, "content": {"application/json": {"schema": SongCreated}}})
@stack.response(
    201,
    {"type": "string", "const": "Created"},
    content_type="text/plain",
    headers={
        "Location": {"required": True, "description": "The new song's URL.", "schema": {"type": "string"}}
    },
)
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
@stack.response(200, Song)
def rename_song(rename: dict[str, Any], song_id: str) -> dict[str, Any]:
    """Record ``SONG_RENAMED`` if the song is still at ``version``; 409 when stale.

    Answers the song as the rename left it: the loaded copy with the
    recorded event applied.
    """
    loaded = stack.load_or_404(SongList, song_id, description=_no_song(song_id))
    if rename["version"] != loaded.version:
        raise StreamVersionError(
            [{"stream_id": song_id, "expected": rename["version"], "actual": loaded.version}]
        )
    event = loaded.record("SONG_RENAMED", {"title": rename["title"]}, meta=_meta())
    return renamed(loaded.value, event)


@song_command.delete("/<song_id>")
@authorize(is_editor)
@stack.response(204, description="Deleted, and the submitter's personal data erased")
def delete_song(song_id: str) -> tuple[str, int]:
    """Record ``SONG_DELETED``, then erase the submitter's personal data; 404 for an unknown song.

    The erasure comes after the delete is stored (a delete refused with 409
    erases nothing), so nothing personal outlives the song. It needs no
    check: a deleted song changes no more. Should it fail, the song is
    deleted all the same, the DELETE answers the error, and
    ``DELETE /<id>/submitter`` finishes the erasure.
    """
    loaded = stack.load_or_404(SongList, song_id, description=_no_song(song_id))
    loaded.record("SONG_DELETED", {}, meta=_meta())
    stack.erase_pii(song_id)
    return "", 204


@song_command.delete("/<song_id>/submitter")
@authorize(is_editor)
@stack.response(200, Erased)
def erase_submitter(song_id: str) -> dict[str, Any]:
    """Erase the personal data of the song's submitter for good (GDPR).

    For a live song, only if it is still at the version loaded (409
    otherwise). A deleted song can change no more, so its data is erased
    without a check (deleting erases it already; this finishes a delete whose
    erasure failed). 404 for a song that never was.
    """
    loaded = stack.load(SongList, song_id)
    if loaded is not None:
        return {"erased_events": loaded.erase_pii()}
    try:
        deleted = stack.history(song_id, event_names=["SONG_DELETED"])["history"]
    except InvalidEventError:  # an id no stream can have (a NUL, too long): no such song
        deleted = []
    if not deleted:
        abort(404, _no_song(song_id))
    return {"erased_events": stack.erase_pii(song_id)}

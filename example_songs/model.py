"""The read model: every live song, in the order posted."""

from __future__ import annotations

from typing import Any

from flask_shimmie import PII_ERASED_EVENT, Event, Model, subscribe

#: What an erased submitter reads as (the anonymised values of both PII fields).
ERASED_SUBMITTER = {"name": "", "email": ""}


def renamed(song: dict[str, Any], event: Event) -> dict[str, Any]:
    """``song`` as the ``SONG_RENAMED`` ``event`` leaves it (changed in place, and returned)."""
    song["title"] = event.data["title"]
    song["version"] = event.stream_version
    return song


class SongList(Model):
    """Songs by id; each entry is what ``GET /v1/songs/<id>`` answers.

    Every handler keeps the song's ``version`` (the stream version it
    reflects), which :meth:`load_entry` hands to ``stack.load()``.
    """

    def __init__(self) -> None:
        self.songs: dict[str, dict[str, Any]] = {}

    @subscribe("SONG_CREATED")
    def created(self, event: Event) -> None:
        song = {
            "id": event.stream_id,
            "title": event.data["title"],
            "artist": event.data["artist"],
            "year": event.data["year"],
            "version": event.stream_version,
        }
        if "submitted_by" in event.data:
            song["submitted_by"] = dict(event.data["submitted_by"])
        self.songs[event.stream_id] = song

    @subscribe("SONG_RENAMED")
    def renamed(self, event: Event) -> None:
        song = self.songs.get(event.stream_id)
        if song is not None:
            renamed(song, event)

    @subscribe("SONG_DELETED")
    def deleted(self, event: Event) -> None:
        self.songs.pop(event.stream_id, None)

    @subscribe(PII_ERASED_EVENT)
    def pii_erased(self, event: Event) -> None:
        song = self.songs.get(event.stream_id)
        if song is not None:
            song["version"] = event.stream_version
            if "submitted_by" in song:
                # A new dict rather than a change in place: readers may be copying the old one.
                song["submitted_by"] = dict(ERASED_SUBMITTER)

    def all(self) -> list[dict[str, Any]]:
        """Every song, in the order posted."""
        return list(self.songs.values())

    def get(self, song_id: str) -> dict[str, Any] | None:
        """One song, or ``None``."""
        return self.songs.get(song_id)

    def load_entry(self, stream_id: str) -> tuple[dict[str, Any], int] | None:
        """The song and the version it reflects, for ``stack.load()``."""
        song = self.songs.get(stream_id)
        return None if song is None else (song, song["version"])

"""The read model: every live song, in the order posted."""

from __future__ import annotations

from typing import Any

from flask_shimmie import PII_ERASED_EVENT, Event, Model, subscribe

from .positions import PositionIndex

#: What an erased submitter reads as (the anonymised values of both PII fields).
ERASED_SUBMITTER = {"name": "", "email": ""}


def renamed(song: dict[str, Any], event: Event) -> dict[str, Any]:
    """``song`` as the ``SONG_RENAMED`` ``event`` leaves it (changed in place, and returned)."""
    song["title"] = event.data["title"]
    song["version"] = event.stream_version
    return song


class SongList(Model):
    """Songs by id; each entry is what ``GET /v1/songs/<id>`` answers.

    A song is listed by the position of its ``SONG_CREATED`` event, which is
    also the cursor ``GET /v1/songs?after=`` takes: positions only grow, so
    the order is the order posted and a cursor stays valid when songs go.
    Every handler keeps the song's ``version`` (the stream version it
    reflects), which :meth:`load_entry` hands to ``stack.load()``.
    """

    def __init__(self) -> None:
        self.songs: dict[str, dict[str, Any]] = {}
        #: The position of each live song's ``SONG_CREATED``, and the song at each position.
        self.created_at: dict[str, int] = {}
        self.listed = PositionIndex()

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
        if event.stream_id in self.songs:  # created again (hand-made events): listed anew
            self._forget(event.stream_id)
        self.songs[event.stream_id] = song
        self.created_at[event.stream_id] = event.sequence_num
        self.listed.add(event.sequence_num, event.stream_id)

    @subscribe("SONG_RENAMED")
    def renamed(self, event: Event) -> None:
        song = self.songs.get(event.stream_id)
        if song is not None:
            renamed(song, event)

    @subscribe("SONG_DELETED")
    def deleted(self, event: Event) -> None:
        self._forget(event.stream_id)

    @subscribe(PII_ERASED_EVENT)
    def pii_erased(self, event: Event) -> None:
        song = self.songs.get(event.stream_id)
        if song is not None:
            song["version"] = event.stream_version
            if "submitted_by" in song:
                # A new dict rather than a change in place: readers may be copying the old one.
                song["submitted_by"] = dict(ERASED_SUBMITTER)

    def _forget(self, song_id: str) -> None:
        self.songs.pop(song_id, None)
        position = self.created_at.pop(song_id, None)
        if position is not None:
            self.listed.remove(position)

    def all(self) -> list[dict[str, Any]]:
        """Every song, in the order posted."""
        return list(self.songs.values())

    def page(self, after: int, limit: int) -> tuple[list[dict[str, Any]], int | None]:
        """Up to ``limit`` songs posted after position ``after``, in the order posted.

        Returns them (shallow copies) and the cursor of the next page: the
        position of the last song returned, or ``None`` when no song follows.
        Costs ``O(log n + limit)``, and is safe while another thread applies events.
        """
        found: list[dict[str, Any]] = []
        last = after
        for position, song_id in self.listed.after(after):
            song = self.songs.get(song_id)
            if song is None:
                continue  # deleted while this page was read
            if len(found) == limit:
                return found, last
            found.append(dict(song))
            last = position
        return found, None

    def get(self, song_id: str) -> dict[str, Any] | None:
        """One song, or ``None``."""
        return self.songs.get(song_id)

    def load_entry(self, stream_id: str) -> tuple[dict[str, Any], int] | None:
        """The song and the version it reflects, for ``stack.load()``."""
        song = self.songs.get(stream_id)
        return None if song is None else (song, song["version"])

"""Projections: durable read models kept in tables of the event store's database.

.. code-block:: python

    class SongsByArtist(Projection):
        name = "songs-by-artist"
        version = 1

        def setup(self, db) -> None:
            db.execute("CREATE TABLE IF NOT EXISTS songs_by_artist (song_id TEXT PRIMARY KEY, artist TEXT)")

        def reset(self, db) -> None:
            db.execute("DELETE FROM songs_by_artist")

        @subscribe("SONG_CREATED")
        def created(self, event: Event, db) -> None:
            db.execute("INSERT INTO songs_by_artist VALUES (?, ?)", (event.stream_id, event.data["artist"]))

    stack.register_projection(SongsByArtist)

Unlike a :class:`~flask_shimmie.Model`, a projection is not rebuilt in every
process's memory: one process at a time (the lease holder) applies each event
once, and its writes commit in the same transaction as its new position.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .events import Event
from .models import marked_handlers, readable_name

#: The handler a projection method becomes once bound: ``fn(event, db)``.
ProjectionHandler = Callable[[Event, Any], Any]


class Projection:
    """Base class of projections: set ``name``, mark handlers with ``@subscribe``.

    ``db`` is the store engine's own connection (``sqlite3.Connection`` for
    SQLite and ``memory://``, ``psycopg.Connection`` for PostgreSQL; SQL
    placeholders ``?`` / ``%s``), inside the transaction that also stores the
    projection's new position. Handlers write only through ``db``: never
    commit or roll back on it, and never record events from a handler (on
    SQLite the transaction holds the file's write lock, so the write would
    wait for itself). Subclasses need a constructor without arguments.
    """

    #: The subscription's durable name (shared namespace with reactors).
    name: str = ""
    #: Bump it when the handlers change what they write: the stack then calls
    #: :meth:`reset` and rebuilds the tables from the first event.
    version: int = 1
    #: Tries per event before :attr:`on_failure` applies.
    max_attempts: int = 5
    #: ``"stop"`` (the state becomes ``failed``: skipping an event would leave the
    #: tables wrong) or ``"park"`` (set the event aside and go on).
    on_failure: str = "stop"

    def setup(self, db: Any) -> None:
        """Create the projection's tables when they are missing (idempotent).

        Runs each time a process takes the projection over, before any event.
        """

    def reset(self, db: Any) -> None:
        """Delete every row the projection wrote, before a rebuild from the first event.

        Called when :attr:`version` changed and on ``subscriptions reset``.
        """
        raise NotImplementedError(
            f"{readable_name(type(self))}.reset(db) is not implemented: a rebuild must first delete "
            "the rows the projection wrote."
        )

    @classmethod
    def subscriptions(cls) -> list[tuple[str, str]]:
        """``(event_name, method_name)`` pairs, in definition order, base classes first."""
        return marked_handlers(cls)

    def handlers(self) -> dict[str, list[ProjectionHandler]]:
        """This instance's bound handlers by event name (``"*"``: every event)."""
        table: dict[str, list[ProjectionHandler]] = {}
        for event_name, method in self.subscriptions():
            table.setdefault(event_name, []).append(getattr(self, method))
        return table

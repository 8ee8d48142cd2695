"""The PII store interface: personal data kept apart from events, so it can be erased.

A PII row holds only an event's ``event_id``, its ``stream_id``, the PII
values (as JSON text) and when it was written (to tell orphans from writes in
flight). Erasing a stream deletes its rows for good; an event
whose PII row is gone reads with anonymised values.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from ..backend import Backend


@dataclass(frozen=True, slots=True)
class PiiRecord:
    """The PII values of one event."""

    event_id: str
    stream_id: str
    values_json: str


class PiiStore(Backend):
    """The interface of a PII store backend."""

    @abstractmethod
    def put(self, records: Sequence[PiiRecord]) -> None:
        """Store ``records`` in one transaction (replacing rows with the same event id)."""

    @abstractmethod
    def get_json(self, event_ids: Collection[str]) -> dict[str, str]:
        """The stored PII values (JSON text) of those of ``event_ids`` that have any."""

    def get(self, event_ids: Collection[str]) -> dict[str, dict[str, Any]]:
        """The stored PII values of those of ``event_ids`` that have any."""
        return {key: json.loads(value) for key, value in self.get_json(event_ids).items()}

    @abstractmethod
    def erase_stream(self, stream_id: str) -> int:
        """Delete every PII row of ``stream_id`` for good; return how many there were."""

    @abstractmethod
    def event_ids_older_than(self, seconds: float) -> list[str]:
        """Event ids whose PII row was written at least ``seconds`` ago."""

    def purge_orphans(
        self, existing: Callable[[Collection[str]], set[str]], older_than: float = 300.0
    ) -> int:
        """Delete rows whose event was never stored; return how many.

        ``existing`` tells which of the given event ids the event store holds.
        With a separate PII store the PII is written first, so a crash between
        the two writes leaves such a row: it is never read, and goes here.
        Only rows older than ``older_than`` seconds are considered, so a write
        still in flight in another process is never mistaken for an orphan.
        """
        ids = self.event_ids_older_than(older_than)
        if not ids:
            return 0
        present = existing(ids)
        orphans = [event_id for event_id in ids if event_id not in present]
        if orphans:
            self.delete(orphans)
        return len(orphans)

    @abstractmethod
    def delete(self, event_ids: Collection[str]) -> None:
        """Delete the rows of ``event_ids``."""

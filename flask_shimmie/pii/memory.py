"""The in-memory PII store (``memory://``): for development and tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Sequence

from .base import PiiRecord, PiiStore


class MemoryPiiStore(PiiStore):
    """PII rows in a dict, guarded by a lock. Lost when the process exits."""

    backend = "memory"

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self.lock = threading.Lock()
        #: event_id -> (stream_id, values_json, written_at)
        self.rows: dict[str, tuple[str, str, float]] = {}

    def open(self) -> None:
        """Nothing to connect to."""

    def close(self) -> None:
        """Nothing to release; the rows stay until the store is dropped."""

    def describe(self) -> str:
        return self.url

    def ping(self) -> None:
        """Always reachable."""

    def put(self, records: Sequence[PiiRecord]) -> None:
        with self.lock:
            self.put_locked(records)

    def put_locked(self, records: Sequence[PiiRecord]) -> None:
        """Store ``records``; the caller holds :attr:`lock`."""
        now = time.time()
        for record in records:
            self.rows[record.event_id] = (record.stream_id, record.values_json, now)

    def get_json(self, event_ids: Collection[str]) -> dict[str, str]:
        rows = self.rows
        with self.lock:
            return {key: rows[key][1] for key in event_ids if key in rows}

    def erase_stream(self, stream_id: str) -> int:
        with self.lock:
            doomed = [key for key, row in self.rows.items() if row[0] == stream_id]
            for key in doomed:
                del self.rows[key]
            return len(doomed)

    def event_ids_older_than(self, seconds: float) -> list[str]:
        cutoff = time.time() - seconds
        with self.lock:
            return [key for key, row in self.rows.items() if row[2] <= cutoff]

    def delete(self, event_ids: Collection[str]) -> None:
        with self.lock:
            for key in event_ids:
                self.rows.pop(key, None)

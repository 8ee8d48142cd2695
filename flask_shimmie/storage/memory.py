"""The memory engine (``memory://``), the default: fast, and gone at exit.

Events are kept as JSON text, exactly as the durable engines keep them, so a
model that mutates ``event.data`` cannot change history, and the payloads a
model sees are the same whichever engine is configured.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Sequence
from contextlib import AbstractContextManager
from datetime import datetime

from ..errors import ShimmieError
from .codec import decode_rows, encode_pii_fields
from .interface import AppendBatch, AppendResult, EventStore, PiiRecord, PiiStore, Snapshot
from .memory_subscriptions import MemorySubscriptionStore
from .planner import AppendPlanner, batch_event_ids, batch_stream_ids
from .threads import PositionSignal, StreamLocks


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

    def purge_residue(self, *, vacuum: bool = False) -> None:
        """Nothing to do: a deleted row leaves nothing behind but memory the process reuses."""

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


# sequence_num, stream_id, stream_version, event_id, event_name, data_json,
# meta_json, recorded_at, schema_version, pii_fields_json
_Row = tuple[int, str, int, str, str, str, str, datetime, int, "str | None"]


class MemoryEventStore(EventStore):
    """Events in a list, guarded by one lock (writers are serialised)."""

    backend = "memory"

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._rows: list[_Row] = []
        self._by_event_id: dict[str, int] = {}
        self._by_stream: dict[str, list[int]] = {}
        self._write_lock = threading.Lock()
        self._locks = StreamLocks()
        self._signal = PositionSignal()
        self._pii = MemoryPiiStore(url)
        self._snapshots: dict[str, Snapshot] = {}
        self._subscriptions = MemorySubscriptionStore()

    def open(self) -> None:
        """Nothing to connect to."""

    def close(self) -> None:
        """Nothing to release; events stay until the store is dropped."""

    def describe(self) -> str:
        return self.url

    def ping(self) -> None:
        """Always reachable."""

    def purge_residue(self, *, vacuum: bool = False) -> None:
        """Nothing to do: deleted snapshots leave nothing behind but memory the process reuses."""

    def append_batches(
        self, batches: Sequence[AppendBatch], *, write_pii: bool = False
    ) -> list[AppendResult | ShimmieError]:
        with self._write_lock:
            rows = self._rows
            versions = {
                stream_id: len(self._by_stream[stream_id])
                for stream_id in batch_stream_ids(batches)
                if stream_id in self._by_stream
            }
            known = [
                rows[self._by_event_id[event_id] - 1]
                for event_id in batch_event_ids(batches)
                if event_id in self._by_event_id
            ]
            planner = AppendPlanner(len(rows), versions, decode_rows(known))
            outcomes = [planner.plan(batch) for batch in batches]
            pii: list[PiiRecord] = []
            for row in planner.rows:
                event = row.pending
                rows.append(
                    (
                        row.sequence_num,
                        event.stream_id,
                        row.stream_version,
                        event.event_id,
                        event.event_name,
                        event.data_json,
                        event.meta_json,
                        row.recorded_at,
                        event.schema_version,
                        encode_pii_fields(event.pii_fields),
                    )
                )
                self._by_event_id[event.event_id] = row.sequence_num
                self._by_stream.setdefault(event.stream_id, []).append(row.sequence_num)
                if write_pii and event.pii_json is not None:
                    pii.append(PiiRecord(event.event_id, event.stream_id, event.pii_json))
            if pii:
                with self._pii.lock:
                    self._pii.put_locked(pii)
            last = len(rows)
        self._signal.advance(last, local=True)
        return outcomes

    def read_rows(
        self,
        after: int = 0,
        limit: int | None = None,
        *,
        stream_ids: Collection[str] | None = None,
        event_names: Collection[str] | None = None,
    ) -> list[_Row]:
        after = max(after, 0)
        with self._write_lock:
            if stream_ids is not None:
                positions = sorted(
                    pos for sid in set(stream_ids) for pos in self._by_stream.get(sid, ()) if pos > after
                )
                candidates = [self._rows[pos - 1] for pos in positions]
            else:
                end = len(self._rows) if limit is None or event_names is not None else after + limit
                candidates = self._rows[after:end]
        if event_names is not None:
            names = set(event_names)
            candidates = [row for row in candidates if row[4] in names]
        if limit is not None:
            candidates = candidates[: max(limit, 0)]
        return candidates

    def last_sequence_num(self) -> int:
        return len(self._rows)

    def stream_versions(self, stream_ids: Collection[str]) -> dict[str, int]:
        with self._write_lock:
            return {sid: len(self._by_stream.get(sid, ())) for sid in stream_ids}

    def existing_event_ids(self, event_ids: Collection[str]) -> set[str]:
        with self._write_lock:
            return {key for key in event_ids if key in self._by_event_id}

    def count_by_event_name(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        with self._write_lock:
            for row in self._rows:
                counts[row[4]] = counts.get(row[4], 0) + 1
        return counts

    def count_streams(self) -> int:
        return len(self._by_stream)

    def lock_stream(self, stream_id: str, timeout: float) -> AbstractContextManager[None]:
        return self._locks.hold(stream_id, timeout)

    def wait_for_events(self, after: int, timeout: float, *, others_only: bool = False) -> int:
        return self._signal.wait_past(after, timeout, others_only=others_only)

    def save_snapshots(self, snapshots: Sequence[Snapshot]) -> None:
        with self._write_lock:
            self._snapshots.update((snapshot.model, snapshot) for snapshot in snapshots)

    def load_snapshots(self) -> list[Snapshot]:
        with self._write_lock:
            return list(self._snapshots.values())

    def delete_snapshots(self) -> int:
        with self._write_lock:
            count = len(self._snapshots)
            self._snapshots.clear()
            return count

    def colocated_pii_store(self) -> MemoryPiiStore:
        return self._pii

    def subscription_store(self) -> MemorySubscriptionStore:
        return self._subscriptions

"""The append rules, written once: gap-free positions, stream versions, checks, idempotency.

Engines serialise their writers and use :class:`AppendPlanner` inside their
write transaction: it decides what to insert, and what each batch answers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from ..errors import ShimmieError, StreamVersionError
from ..events import ANY, NO_STREAM, STREAM_EXISTS, Event, Expected, stored_event
from .interface import AppendBatch, AppendResult, PlannedRow


def utc_now() -> datetime:
    """Return the current time in UTC, as stores stamp ``recorded_at``."""
    return datetime.now(timezone.utc)


def batch_stream_ids(batches: Sequence[AppendBatch]) -> set[str]:
    """Every stream id written to or checked by ``batches``."""
    ids: set[str] = set()
    for batch in batches:
        ids.update(batch.expected)
        ids.update(event.stream_id for event in batch.events)
    return ids


def batch_event_ids(batches: Sequence[AppendBatch]) -> list[str]:
    """Every event id in ``batches``."""
    return [event.event_id for batch in batches for event in batch.events]


class AppendPlanner:
    """Decides, inside a store's serialised write section, what to insert.

    Give it the store's last position, the current versions of the streams
    involved (missing = 0) and the already stored events among the batches'
    event ids. :meth:`plan` each batch in order, then insert :attr:`rows`.
    """

    def __init__(
        self,
        last_sequence_num: int,
        versions: Mapping[str, int],
        known: Iterable[Event],
        now: datetime | None = None,
    ) -> None:
        self.last_sequence_num = last_sequence_num
        self.versions = dict(versions)
        self.known = {event.event_id: event for event in known}
        self.now = now or utc_now()
        self.rows: list[PlannedRow] = []

    def plan(self, batch: AppendBatch) -> AppendResult | ShimmieError:
        """Plan one batch; return its result, or the error that rejects it."""
        events = batch.events
        if len(events) > 1:
            ids = [event.event_id for event in events]
            if len(set(ids)) != len(ids):
                return ShimmieError("The same event_id appears twice in one batch.")
        if self.known:
            known = [self.known[e.event_id] for e in events if e.event_id in self.known]
            if known:
                if len(known) == len(events):
                    return AppendResult(known, False)
                return ShimmieError(
                    "Some event_ids of this batch are already stored and some are not "
                    f"({', '.join(e.event_id for e in known)}); nothing was written."
                )
        if batch.expected:
            conflicts = check_versions(batch.expected, self.versions)
            if conflicts:
                return StreamVersionError(conflicts)
        stored: list[Event] = []
        versions = self.versions
        for pending in events:
            self.last_sequence_num += 1
            version = versions.get(pending.stream_id, 0) + 1
            versions[pending.stream_id] = version
            recorded_at = pending.recorded_at or self.now
            self.rows.append(PlannedRow(self.last_sequence_num, version, recorded_at, pending))
            event = stored_event(
                self.last_sequence_num,
                pending.stream_id,
                version,
                pending.event_id,
                pending.event_name,
                pending.data,
                pending.meta,
                recorded_at,
                False,
                False,
                pending.schema_version,
                pending.pii_fields,
            )
            self.known[pending.event_id] = event
            stored.append(event)
        return AppendResult(stored, True)


def check_versions(expected: Mapping[str, Expected], versions: Mapping[str, int]) -> list[dict[str, Any]]:
    """Return the conflicts between ``expected`` and the current ``versions``."""
    conflicts = []
    for stream_id, wanted in expected.items():
        actual = versions.get(stream_id, 0)
        if wanted is ANY:
            ok = True
        elif wanted is NO_STREAM:
            ok = actual == 0
        elif wanted is STREAM_EXISTS:
            ok = actual > 0
        else:
            ok = actual == wanted
        if not ok:
            conflicts.append({"stream_id": stream_id, "expected": wanted, "actual": actual})
    return conflicts

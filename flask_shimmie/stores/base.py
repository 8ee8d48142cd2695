"""The event store interface that every backend implements, and the logic they share.

A store keeps events in one global order. Writers hand it *batches*: each batch
is appended atomically (all of its events or none), after its expected-version
checks and its idempotency check pass. :meth:`EventStore.append_batches` takes
several independent batches at once so a backend can commit them in one
transaction (group commit); each batch still succeeds or fails on its own.

Backends serialise their writers and use :class:`AppendPlanner` inside their
write transaction, so the rules (gap-free positions, per-stream versions,
version checks, idempotent ``event_id``) are written once, here.
"""

from __future__ import annotations

import json
import threading
import time
from abc import abstractmethod
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from json.scanner import c_make_scanner  # type: ignore[attr-defined]
from typing import Any, NamedTuple

from ..backend import Backend
from ..errors import ObjectLockedError, ShimmieError, StreamVersionError
from ..events import ANY, EVENT_SLOT_SETTERS, NO_STREAM, STREAM_EXISTS, Event, Expected, stored_event
from ..pii.base import PiiStore

#: How many events a page of :meth:`EventStore.iter_events` holds.
DEFAULT_PAGE_SIZE = 1000

#: The columns of a stored row, in the order :func:`decode_rows` takes them (JSON as text).
ROW_COLUMNS = (
    "sequence_num",
    "stream_id",
    "stream_version",
    "event_id",
    "event_name",
    "data",
    "meta",
    "recorded_at",
    "schema_version",
    "pii_fields",
)

#: Rows a replay reads at a time (one query: one round trip on PostgreSQL).
REPLAY_PAGE_SIZE = 1000
#: Events of a replay page decoded and applied at a time (see :meth:`EventStore.read_for_replay`).
REPLAY_CHUNK_SIZE = 250


@dataclass(slots=True)
class PendingEvent:
    """An event prepared by the stack, ready for a store to append.

    ``data`` is the payload as models receive it (PII included);
    ``data_json`` is what the event store keeps (PII replaced by placeholders).
    ``pii_json`` holds the PII values, written to the PII store, never to the
    event row; it is ``None`` when the event has no PII.
    """

    stream_id: str
    event_name: str
    event_id: str
    data: dict[str, Any]
    data_json: str
    meta: dict[str, Any]
    meta_json: str
    schema_version: int = 1
    pii_fields: tuple[str, ...] = ()
    pii_json: str | None = None
    #: Set only by imports, which keep the original time; else the store stamps it.
    recorded_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class AppendBatch:
    """Events appended together, all or none.

    ``expected`` maps stream ids to the version each must be at; streams not
    named are not checked.
    """

    events: tuple[PendingEvent, ...]
    expected: Mapping[str, Expected] = field(default_factory=dict)


class AppendResult(NamedTuple):
    """What a successful batch produced."""

    #: The stored events, in order. ``data`` of new events is the delivered
    #: payload; ``data`` of known events is the stored one (placeholders).
    events: list[Event]
    #: False when every event id of the batch was already stored (a retry).
    created: bool


@dataclass(slots=True)
class PlannedRow:
    """A row a backend inserts: the pending event and its assigned positions."""

    sequence_num: int
    stream_version: int
    recorded_at: datetime
    pending: PendingEvent


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A model's state as of a position, kept so a restart can skip the events before it."""

    #: The model's name (:meth:`flask_shimmie.Model.model_name`).
    model: str
    position: int
    #: The model's ``snapshot_version`` when it was taken.
    version: int
    state_json: str


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


_scan = c_make_scanner(json.JSONDecoder()) if c_make_scanner is not None else None


def loads(text: str) -> Any:
    """``json.loads`` for the JSON text stores hold, about a third faster.

    Replay decodes every stored payload, so it calls the C scanner directly,
    skipping ``json.loads``' Python wrappers; anything it does not consume
    whole (leading or trailing whitespace) goes through ``json.loads``.
    """
    if _scan is not None:
        try:
            value, end = _scan(text, 0)
        except StopIteration:
            return json.loads(text)
        if end == len(text):
            return value
    return json.loads(text)


def decode_rows(
    rows: Iterable[Sequence[Any]],
    parse_time: Callable[[Any], datetime] | None = None,
    *,
    replay: bool = False,
) -> list[Event]:
    """Build events from stored rows, their columns in :data:`ROW_COLUMNS`' order.

    ``parse_time`` turns the stored ``recorded_at`` into a datetime when the
    backend keeps it as something else (SQLite keeps ISO text); ``replay``
    marks the events as replayed. This is the replay hot path: one flat loop
    that fills each event's slots itself (as :func:`stored_event` does) and
    calls the JSON scanner directly (as :func:`loads` does).
    """
    s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11 = EVENT_SLOT_SETTERS
    new = object.__new__
    scan = _scan or _scan_with_loads
    events: list[Event] = []
    append = events.append
    for seq, stream_id, version, event_id, name, data_json, meta, at, schema_version, pii in rows:
        try:
            data, end = scan(data_json, 0)
            if end != len(data_json):
                data = json.loads(data_json)
        except StopIteration:
            data = json.loads(data_json)
        event = new(Event)
        s0(event, seq)
        s1(event, stream_id)
        s2(event, version)
        s3(event, event_id)
        s4(event, name)
        s5(event, data)
        s6(event, {} if meta == "{}" else loads(meta))
        s7(event, at if parse_time is None else parse_time(at))
        s8(event, replay)
        s9(event, False)
        s10(event, schema_version)
        s11(event, tuple(json.loads(pii)) if pii else ())
        append(event)
    return events


def _scan_with_loads(text: str, start: int) -> tuple[Any, int]:
    return json.loads(text), len(text)


def encode_pii_fields(fields: tuple[str, ...]) -> str | None:
    """Encode ``pii_fields`` for a text column (``None`` when there are none)."""
    return json.dumps(list(fields)) if fields else None


class StreamLocks:
    """Per-stream locks for the threads of one process, with a timeout."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, stream_id: str, timeout: float) -> Iterator[None]:
        """Hold ``stream_id``'s lock; raise :class:`ObjectLockedError` after ``timeout``."""
        with self._guard:
            lock, users = self._locks.get(stream_id, (threading.Lock(), 0))
            self._locks[stream_id] = (lock, users + 1)
        try:
            if not lock.acquire(timeout=max(timeout, 0)):
                raise ObjectLockedError(stream_id, timeout)
            try:
                yield
            finally:
                lock.release()
        finally:
            with self._guard:
                lock, users = self._locks[stream_id]
                if users == 1:
                    del self._locks[stream_id]
                else:
                    self._locks[stream_id] = (lock, users - 1)


class PositionSignal:
    """Wakes threads waiting for the store to move past a position (one process).

    Positions come from this process's own commits (``local``) or from news
    of other writers (a notification, a poll). A waiter that only cares about
    other writers, such as the follower, is not woken by local commits: their
    writers hand those events to the models themselves, and waking another
    thread at every commit costs more than the commit's own work.
    """

    def __init__(self) -> None:
        lock = threading.Lock()
        self._any = threading.Condition(lock)
        self._others = threading.Condition(lock)
        #: How many threads wait on each condition (notify only when someone does).
        self._waiting = {self._any: 0, self._others: 0}
        self.position = 0
        #: The highest position learned from news of other writers.
        self.others_position = 0

    def advance(self, position: int, *, local: bool = False) -> None:
        """Record that the store holds events up to ``position``, and wake waiters."""
        with self._any:
            if position > self.position:
                self.position = position
                if self._waiting[self._any]:
                    self._any.notify_all()
                # News of others is news only past what this process knows.
                if not local:
                    self.others_position = position
                    if self._waiting[self._others]:
                        self._others.notify_all()

    def wait_past(self, after: int, timeout: float, *, others_only: bool = False) -> int:
        """Wait until the position exceeds ``after`` or ``timeout`` passes; return it.

        With ``others_only``, only news of other writers ends the wait early.
        """
        deadline = time.monotonic() + timeout
        condition = self._others if others_only else self._any
        with condition:
            while (self.others_position if others_only else self.position) <= after:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._waiting[condition] += 1
                try:
                    condition.wait(remaining)
                finally:
                    self._waiting[condition] -= 1
            return self.position


class EventStore(Backend):
    """The interface of an event store backend.

    A store is built from its URL (see :func:`flask_shimmie.stores.event_store_from_url`).
    """

    #: Turns a stored ``recorded_at`` into a datetime (``None``: it already is one).
    parse_time: Callable[[Any], datetime] | None = None

    @abstractmethod
    def append_batches(
        self, batches: Sequence[AppendBatch], *, write_pii: bool = False
    ) -> list[AppendResult | ShimmieError]:
        """Append independent batches in one transaction.

        Each batch either succeeds (its :class:`AppendResult`) or is rejected
        (the error, e.g. :class:`StreamVersionError`) without touching the
        others. With ``write_pii`` the store also writes each event's
        ``pii_json`` to its own PII table in the same transaction. A failure
        of the transaction itself raises and writes nothing.
        """

    def append(self, batch: AppendBatch, *, write_pii: bool = False) -> AppendResult:
        """Append one batch atomically, raising the error that rejects it."""
        (outcome,) = self.append_batches([batch], write_pii=write_pii)
        if isinstance(outcome, ShimmieError):
            raise outcome
        return outcome

    @abstractmethod
    def read_rows(
        self,
        after: int = 0,
        limit: int | None = None,
        *,
        stream_ids: Collection[str] | None = None,
        event_names: Collection[str] | None = None,
    ) -> Sequence[Sequence[Any]]:
        """The stored rows that :meth:`read` decodes, their columns in :data:`ROW_COLUMNS`' order."""

    def read(
        self,
        after: int = 0,
        limit: int | None = None,
        *,
        stream_ids: Collection[str] | None = None,
        event_names: Collection[str] | None = None,
    ) -> list[Event]:
        """Stored events with ``sequence_num > after``, in order, at most ``limit``.

        ``stream_ids`` / ``event_names`` filter (``None`` = all; empty = none).
        ``data`` is as stored: PII fields hold placeholders.
        """
        rows = self.read_rows(after, limit, stream_ids=stream_ids, event_names=event_names)
        return decode_rows(rows, self.parse_time)

    def read_for_replay(self, after: int) -> Iterator[list[Event]]:
        """The next page of events after ``after`` for a replay, marked ``replay=True``.

        One read of :data:`REPLAY_PAGE_SIZE` rows, decoded
        :data:`REPLAY_CHUNK_SIZE` events at a time: each chunk's events are
        applied and freed before the next chunk exists, so they die young
        instead of reaching the garbage collector's older generations, whose
        full passes cost a long replay about a tenth of its time.
        """
        rows = self.read_rows(after, REPLAY_PAGE_SIZE)
        for start in range(0, len(rows), REPLAY_CHUNK_SIZE):
            yield decode_rows(rows[start : start + REPLAY_CHUNK_SIZE], self.parse_time, replay=True)

    def iter_events(
        self, after: int = 0, *, page_size: int = DEFAULT_PAGE_SIZE, upto: int | None = None
    ) -> Iterator[Event]:
        """Every stored event after ``after`` (and up to ``upto``), read page by page."""
        while True:
            page = self.read(after, page_size)
            for event in page:
                if upto is not None and event.sequence_num > upto:
                    return
                yield event
            if len(page) < page_size:
                return
            after = page[-1].sequence_num

    @abstractmethod
    def last_sequence_num(self) -> int:
        """The position of the last stored event (0 when empty)."""

    @abstractmethod
    def stream_versions(self, stream_ids: Collection[str]) -> dict[str, int]:
        """The current version of each named stream (0 for a stream with no events)."""

    @abstractmethod
    def existing_event_ids(self, event_ids: Collection[str]) -> set[str]:
        """Which of ``event_ids`` are stored."""

    @abstractmethod
    def count_by_event_name(self) -> dict[str, int]:
        """How many events of each name are stored."""

    @abstractmethod
    def count_streams(self) -> int:
        """How many streams have at least one event."""

    @abstractmethod
    def lock_stream(self, stream_id: str, timeout: float) -> Any:
        """A context manager holding a pessimistic lock on ``stream_id``.

        Raises :class:`ObjectLockedError` when the lock is not obtained within
        ``timeout`` seconds. Only other ``lock_stream`` callers wait on it.
        """

    @abstractmethod
    def wait_for_events(self, after: int, timeout: float, *, others_only: bool = False) -> int:
        """Block until the store holds an event past ``after``, or ``timeout``.

        Returns the last stored position as far as the store knows (it may
        still be ``<= after`` on timeout). Events written by other processes
        wake it too (by notification or by polling). With ``others_only``,
        this store object's own writes do not end the wait early (the
        follower waits so: writers hand their events over themselves).
        """

    @abstractmethod
    def save_snapshots(self, snapshots: Sequence[Snapshot]) -> None:
        """Store ``snapshots`` in one transaction, replacing each model's previous one."""

    @abstractmethod
    def load_snapshots(self) -> list[Snapshot]:
        """Every stored snapshot (one per model at most)."""

    @abstractmethod
    def delete_snapshots(self) -> int:
        """Delete every snapshot (they may hold PII being erased); return how many."""

    @abstractmethod
    def colocated_pii_store(self) -> PiiStore:
        """A PII store kept in the same database, written by ``append(write_pii=True)``."""

"""The interfaces every storage engine implements, and the records they exchange.

A store keeps events in one global order. Writers hand it *batches*: each batch
is appended atomically (all of its events or none), after its expected-version
checks and its idempotency check pass. :meth:`EventStore.append_batches` takes
several independent batches at once so an engine can commit them in one
transaction (group commit); each batch still succeeds or fails on its own.

A PII store keeps personal data apart from events, so it can be erased: a PII
row holds only an event's ``event_id``, its ``stream_id``, the PII values (as
JSON text) and when it was written (to tell orphans from writes in flight).
Erasing a stream deletes its rows for good; an event whose PII row is gone
reads with anonymised values. :meth:`Backend.purge_residue` then removes the
deleted bytes from the database's files, as far as the engine can.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from ..errors import ShimmieError
from ..events import Event, Expected
from .codec import decode_rows

#: How many events a page of :meth:`EventStore.iter_events` holds.
DEFAULT_PAGE_SIZE = 1000


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


@dataclass(frozen=True, slots=True)
class PiiRecord:
    """The PII values of one event."""

    event_id: str
    stream_id: str
    values_json: str


class Backend(ABC):
    """A store built from its URL, opened in the process that uses it, closed at shutdown.

    Never open one before a fork: connections are not shared across processes.
    Every method of a backend is thread-safe.
    """

    #: The backend's name: ``memory``, ``sqlite`` or ``postgresql``.
    backend: str = ""

    @abstractmethod
    def open(self) -> None:
        """Connect, and create the tables that are missing (idempotent)."""

    @abstractmethod
    def close(self) -> None:
        """Release connections and threads. A closed store may be opened again."""

    @abstractmethod
    def describe(self) -> str:
        """The store's URL without credentials, for logs and health reports."""

    @abstractmethod
    def ping(self) -> None:
        """Raise :class:`~flask_shimmie.errors.StoreUnavailableError` if unreachable."""

    @abstractmethod
    def purge_residue(self, *, vacuum: bool = False) -> None:
        """Remove from the database's files the bytes of the rows this store deleted.

        A DELETE only unlinks a row: its bytes stay on disk until something
        overwrites them. The stack calls this on the PII store and on the
        event store (whose snapshots may hold PII) after an erasure. Each
        engine removes what it can reach:

        - SQLite zeroes deleted content as it deletes (``secure_delete``) and
          here empties the WAL, which still holds the pages as they were;
          ``vacuum`` adds nothing. Nothing readable is left in the files.
        - PostgreSQL first waits for the transactions older than the erasure
          (while one runs, no VACUUM may remove the rows), then runs a plain
          ``VACUUM``, which removes the dead rows but can leave their bytes
          in a page's free space; with ``vacuum`` it runs ``VACUUM FULL``,
          which rewrites the table (and its TOAST) into new files under an
          exclusive lock for as long as that takes (the snapshot table, a row
          per model, is always rewritten). The server's WAL keeps the values
          until its segments are overwritten.
        - The memory engine keeps nothing on disk: it has nothing to do.

        Raises :class:`~flask_shimmie.errors.StoreUnavailableError` when the
        clean-up could not complete (the rows stay deleted; calling it again
        retries).
        """


class EventStore(Backend):
    """The interface of an event store backend.

    A store is built from its URL (see :func:`flask_shimmie.stores.event_store_from_url`).
    """

    #: Turns a stored ``recorded_at`` into a datetime (``None``: it already is one).
    parse_time: Callable[[Any], datetime] | None = None
    #: Whether concurrent writers gain from sharing one transaction (one fsync or round
    #: trip for many writes): the stack then groups them (see ``group_commit``).
    supports_group_commit: bool = False
    #: Whether other processes may write to this store, so that every process must
    #: follow it in the background to see their events.
    needs_follower: bool = False

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
        full passes otherwise take a noticeable share of a long replay
        (figures in benchmarks/RESULTS.md).
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

    @abstractmethod
    def subscription_store(self) -> SubscriptionStore:
        """The durable subscriptions kept in this store's database (created with its tables)."""


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


# -- subscriptions -------------------------------------------------------------------------------

#: The kinds of subscription a store keeps (a relay is a reactor that publishes to a broker).
SUBSCRIPTION_KINDS = ("reactor", "projection", "relay")
#: A subscription's states: ``active`` runs; ``failed`` stopped on an error it would not skip.
SUBSCRIPTION_STATES = ("active", "failed")


@dataclass(frozen=True, slots=True)
class SubscriptionInfo:
    """One row of ``shimmie_subscriptions``: a subscription's durable position and state."""

    name: str
    #: One of :data:`SUBSCRIPTION_KINDS`.
    kind: str
    #: The ``sequence_num`` of the last event it processed (0: none yet).
    position: int
    #: One of :data:`SUBSCRIPTION_STATES`.
    state: str
    #: Why it failed (the last error, with its traceback), or ``None``.
    error: str | None
    #: The lease holder's runner id (``host:pid:token``), or ``None`` once released or
    #: reset. A holder that died keeps its id here until another runner takes over.
    runner: str | None
    #: The projection's ``version`` when its rows were built (0 for reactors).
    version: int
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ParkedEvent:
    """An event a reactor gave up on after its retries: one row of ``shimmie_parked``."""

    subscription: str
    event_id: str
    sequence_num: int
    error: str
    attempts: int
    parked_at: datetime
    #: True once someone asked for it to be tried again (``subscriptions retry``).
    retry_requested: bool


class LeaseLostError(ShimmieError):
    """This runner no longer holds the subscription's lease: another process may run it now.

    Raised by a fenced write (a position, a park, a projection's commit); nothing
    of that write was stored. The lease is dead for good: release it, and take
    a new one (which reads the stored position afresh) to go on.
    """


class SubscriptionNotFoundError(ShimmieError):
    """No subscription of that name is stored (it was never registered)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"No subscription named {name!r} is stored; register it first.")
        self.name = name


class Lease(ABC):
    """The right to run one subscription, held by one runner across every process on a store.

    While a lease is held no other runner can take it; a runner that dies (its
    process, or its database session) loses it, and another may take it over.
    Every write a runner makes for the subscription is fenced by
    :attr:`runner`: once another runner took over (or :meth:`SubscriptionStore.reset`
    ended this lease), it raises :class:`LeaseLostError` and stores nothing.
    A lease belongs to the process that took it: in a forked child it is dead
    (never alive, its writes refused, its release a no-op that leaves the
    parent's lease alone).
    """

    #: The subscription's name.
    name: str
    #: This holder's runner id, written to ``shimmie_subscriptions.runner`` when taken.
    runner: str

    @abstractmethod
    def alive(self) -> bool:
        """Whether this lease is still held and its writes still pass the fence (call it per batch).

        It asks the database, so it costs a query. Once False, never True
        again. A lost database session (PostgreSQL) answers False; a database
        that cannot be read at all (SQLite) raises
        :class:`~flask_shimmie.errors.StoreUnavailableError` instead, since the
        lease itself may still be held.
        """

    @abstractmethod
    def release(self) -> None:
        """Give the lease up (idempotent); the row keeps its position, and its ``runner`` becomes ``None``."""


class ProjectionTransaction(ABC):
    """A projection's batch: its handler's writes and its new position, committed together."""

    #: The engine's own connection inside the transaction (``sqlite3.Connection``,
    #: ``psycopg.Connection``); ``db.execute(sql, params)`` returns a cursor.
    db: Any

    @abstractmethod
    def advance(self, position: int, *, version: int | None = None) -> None:
        """Set the position (and the projection's ``version``) that commit with this transaction's writes.

        A rebuild (a new ``version``) is one transaction: the projection's
        reset, then ``advance(0, version=new)``.
        """


class SubscriptionStore(ABC):
    """Durable subscriptions: positions, leases, parked events, projection transactions.

    Built on an event store's own database (see :meth:`EventStore.subscription_store`),
    opened and closed with it; closing the event store releases the leases taken
    through it. Every method is thread-safe. The fenced writes take a lease from
    this object's own :meth:`try_lease` (another raises ``ValueError``).

    A projection's tables live in the store's database: SQLite's file, or
    PostgreSQL's schema (unqualified names resolve there first), or on
    ``memory://`` an in-memory SQLite database of the process.
    """

    @abstractmethod
    def register(self, name: str, kind: str, *, start_position: int, version: int = 0) -> SubscriptionInfo:
        """The stored row of ``name``, created at ``start_position`` (and ``version``) when missing.

        An existing row keeps its position and version. Raises
        :class:`~flask_shimmie.errors.ConfigurationError` when it is stored
        with another ``kind``, and ``ValueError`` for a kind not in
        :data:`SUBSCRIPTION_KINDS`.
        """

    @abstractmethod
    def get(self, name: str) -> SubscriptionInfo | None:
        """The stored row of ``name``, or ``None``."""

    @abstractmethod
    def all(self) -> list[SubscriptionInfo]:
        """Every stored subscription, by name."""

    @abstractmethod
    def try_lease(self, name: str, runner: str) -> Lease | None:
        """Take ``name``'s lease for ``runner`` without waiting; ``None`` when another holds it.

        On success the row's ``runner`` becomes ``runner``, which fences every
        write of an earlier holder; read the position (:meth:`get`) after this,
        never before. ``runner`` should be new for every lease taken (say
        ``host:pid:token``, a fresh token each time), so that an old lease of
        the same runner can never pass the fence. Raises
        :class:`SubscriptionNotFoundError` for a name never registered.
        """

    @abstractmethod
    def advance(self, lease: Lease, position: int) -> None:
        """Store ``position`` as the subscription's last processed event (fenced by ``lease``)."""

    @abstractmethod
    def park(self, lease: Lease, event_id: str, sequence_num: int, error: str, attempts: int) -> None:
        """Park an event the subscription gave up on, and advance past it, in one transaction (fenced).

        The position becomes ``sequence_num`` unless it is past it already (a
        retried event parked again never moves it back). Parking an event that
        is parked already replaces its error and attempts and clears
        ``retry_requested``.
        """

    @abstractmethod
    def parked(self, name: str) -> list[ParkedEvent]:
        """The events ``name`` parked, in position order."""

    @abstractmethod
    def request_retry(self, name: str, event_id: str | None = None) -> int:
        """Mark ``name``'s parked events (or just ``event_id``) for another try; return how many.

        Raises :class:`SubscriptionNotFoundError` for an unknown name.
        """

    @abstractmethod
    def unpark(self, lease: Lease, event_id: str) -> None:
        """Remove a parked event once a retry handled it (fenced)."""

    @abstractmethod
    def set_state(
        self, name: str, state: str, error: str | None = None, *, lease: Lease | None = None
    ) -> None:
        """Set ``name``'s state and error (``active`` clears a failure, whatever ``error`` says).

        A runner passes its ``lease``, which fences the write; an operator's
        call (no lease) is not fenced. Raises :class:`SubscriptionNotFoundError`
        for an unknown name, and ``ValueError`` for a state not in
        :data:`SUBSCRIPTION_STATES`.
        """

    @abstractmethod
    def reset(self, name: str, position: int, *, version: int | None = None) -> None:
        """Move ``name`` to ``position`` (and ``version``), make it ``active``, drop its parked events.

        It also ends the current holder's lease (``runner`` becomes ``None``):
        that runner's next fenced write raises :class:`LeaseLostError` and its
        :meth:`Lease.alive` turns False, so it cannot overwrite the new
        position with its old one; it releases, takes a new lease, and starts
        from ``position``. Raises :class:`SubscriptionNotFoundError` for an
        unknown name.
        """

    @abstractmethod
    def projection_transaction(self, lease: Lease) -> AbstractContextManager[ProjectionTransaction]:
        """A write transaction on the store's database for a projection's batch.

        Commits the writes made through ``tx.db`` together with the position
        given to ``tx.advance()`` when the block ends; an exception rolls
        everything back. Raises :class:`LeaseLostError` (and commits nothing)
        when ``lease`` was taken over meanwhile. Never commit or roll back
        through ``tx.db`` yourself, and never write to the event store from
        inside the block: on SQLite the block holds the file's one write lock
        (every other writer, appends included, waits for it: keep batches
        short), so such a write would wait for itself.
        """

    @abstractmethod
    def projection_reader(self) -> AbstractContextManager[Any]:
        """A connection for reading the projections' tables (the same kind as ``tx.db``), in autocommit.

        It sees committed batches only (on ``memory://``, the one connection, held for the block).
        """

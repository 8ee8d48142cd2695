"""Ordered, exactly-once delivery of events to models, over blinker signals.

Each event name has a signal in a private :class:`blinker.Namespace`; models
and functions connect to it with the app as sender. blinker leaves receiver
order undefined and lets a receiver's exception stop the others, so the
:class:`Dispatcher` calls the receivers itself: in subscription order, then
the ``"*"`` receivers, one event at a time, in ``sequence_num`` order, under
one dispatch lock, and it owns the error policy.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

from blinker import Namespace, Signal
from flask import Flask

from .errors import ReplayError
from .events import Event
from .storage.interface import REPLAY_PAGE_SIZE, AppendResult, EventStore
from .tracing import active_tracer, apply_attributes
from .tracing import span as traced

#: The event name whose receivers get every event.
WILDCARD = "*"

# Private: one signal per event name that models and functions subscribe to.
_event_signals = Namespace()


def event_signal(event_name: str) -> Signal:
    """The (private) signal carrying events named ``event_name``."""
    return _event_signals.signal(event_name)


@dataclass(frozen=True, eq=False)
class Receiver:
    """A subscribed callable, with the name errors and health reports use."""

    handler: Callable[[Event], Any]
    #: ``Model.method`` or the function's qualified name.
    label: str
    #: The model's name, or the function's (what ``degraded_models`` lists).
    owner: str

    def __call__(self, sender: Any, *, event: Event) -> None:
        self.handler(event)


class Dispatcher:
    """Applies stored events to one app's receivers, in order, exactly once.

    ``last_handled`` is the position applied here. Writers :meth:`offer` the
    events they just stored (so the common case needs no read back) and then
    :meth:`ensure_handled` their own position: read-your-writes.
    """

    def __init__(
        self,
        app: Flask,
        store: EventStore,
        decode: Callable[[list[Event]], list[Event]],
        logger: logging.Logger,
    ) -> None:
        self.app = app
        self.store = store
        self.decode = decode
        self.logger = logger
        self.last_handled = 0
        #: Until live, writes are stored but not delivered (startup replays them).
        self.live = False
        #: owner -> the last error message of a receiver that failed after startup.
        self.degraded: dict[str, str] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self._wanted = 0
        self._pending: dict[int, Event] = {}
        #: Writes of this process between their commit and their offer (see :meth:`writing`).
        self.writes_in_flight = 0
        self._pending_lock = threading.Lock()
        self._receivers: dict[str, tuple[Receiver, ...]] = {}
        self._connected: list[tuple[str, Receiver]] = []
        self._in_flight = _WriteInFlight(self)
        #: Every this many positions, ``on_checkpoint(position)`` runs (0 = never).
        self.checkpoint_every = 0
        self.on_checkpoint: Callable[[int], None] | None = None
        #: Called by the follower thread after each of its waits on the store (a few times a second).
        self.on_followed: Callable[[], None] | None = None

    # -- subscriptions -------------------------------------------------------

    def connect(self, event_name: str, receiver: Receiver) -> None:
        """Subscribe ``receiver`` to ``event_name`` for this app."""
        event_signal(event_name).connect(receiver, sender=self.app, weak=False)
        self._connected.append((event_name, receiver))
        self._receivers.clear()

    def disconnect_owner(self, owner: object) -> None:
        """Unsubscribe every receiver whose handler is bound to ``owner``."""
        keep = []
        for event_name, receiver in self._connected:
            if getattr(receiver.handler, "__self__", None) is owner:
                event_signal(event_name).disconnect(receiver, sender=self.app)
            else:
                keep.append((event_name, receiver))
        self._connected = keep
        self._receivers.clear()

    def all_receivers(self) -> list[Receiver]:
        """Every connected receiver, in subscription order."""
        return [receiver for _, receiver in self._connected]

    def receivers(self, event_name: str) -> tuple[Receiver, ...]:
        """The receivers of ``event_name`` in delivery order (named first, then ``"*"``)."""
        found = self._receivers.get(event_name)
        if found is None:
            app = self.app
            named = [r for r in event_signal(event_name).receivers_for(app) if isinstance(r, Receiver)]
            wild = [r for r in event_signal(WILDCARD).receivers_for(app) if isinstance(r, Receiver)]
            order = {id(receiver): index for index, (_, receiver) in enumerate(self._connected)}
            named.sort(key=lambda r: order.get(id(r), 0))
            wild.sort(key=lambda r: order.get(id(r), 0))
            found = tuple(named) + (tuple(wild) if event_name != WILDCARD else ())
            self._receivers[event_name] = found
        return found

    def after_fork(self) -> None:
        """New locks in a forked child: a lock held by a parent thread would never be released."""
        self.live = False
        self._lock = threading.Lock()
        self._pending_lock = threading.Lock()
        self._local = threading.local()
        self._pending.clear()

    # -- delivery ------------------------------------------------------------

    @property
    def dispatching(self) -> bool:
        """True in a thread that is applying events right now (inside a handler)."""
        return bool(getattr(self._local, "active", False))

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Hold the dispatch lock: no event is applied to the receivers meanwhile.

        For reading a model consistently from a request thread. In a handler,
        whose thread holds the lock already, it holds nothing more. Keep it
        short: deliveries (and the writes that wait for them) wait meanwhile.
        """
        if self.dispatching:
            yield
            return
        with self._lock:
            yield

    def writing(self) -> AbstractContextManager[None]:
        """Mark a write of this process in flight until it has offered its events."""
        return self._in_flight

    def offer(self, events: Iterable[Event]) -> None:
        """Hand over events this process just stored, with their data as delivered."""
        with self._pending_lock:
            for event in events:
                if event.sequence_num > self.last_handled:
                    self._pending[event.sequence_num] = event

    def append_and_apply(self, append: Callable[[], AppendResult]) -> AppendResult | None:
        """Run ``append`` under the dispatch lock and apply its new events at once.

        For stores whose appends are quick (memory): one writer at a time
        appends and applies, instead of each taking the store's lock, handing
        its events over and queueing again for the dispatch lock, which under
        many threads costs more than the work itself. Returns ``None`` (and
        appends nothing) inside a handler or before the models are live;
        the caller then appends the usual way.
        """
        if not self.live or self.dispatching:
            return None
        with self._lock:
            self._local.active = True
            try:
                result = append()
                if result.created:
                    events = result.events
                    if events[0].sequence_num == self.last_handled + 1 and not self._pending:
                        self._apply(events, strict=False)
                    else:
                        self.offer(events)
                    self._wanted = max(self._wanted, events[-1].sequence_num)
                    # Events recorded by the handlers meanwhile, or written by another app.
                    self._deliver(strict=False, replay=False)
                return result
            finally:
                self._local.active = False

    def ensure_handled(self, target: int | None = None, timeout: float | None = None) -> int:
        """Apply every stored event up to ``target`` (default: the store's last).

        Called from a handler, it only raises the goal: the outer delivery
        goes on to the new events once the current one has finished. Returns
        the last handled position.
        """
        if target is None:
            target = self.store.last_sequence_num()
        if self.last_handled >= target or not self.live:
            return self.last_handled
        if self.dispatching:
            self._wanted = max(self._wanted, target)
            return self.last_handled
        if not self._lock.acquire(timeout=-1 if timeout is None else max(timeout, 0)):
            return self.last_handled
        try:
            self._local.active = True
            self._wanted = max(self._wanted, target)
            self._deliver(strict=False, replay=False)
        finally:
            self._local.active = False
            self._lock.release()
        return self.last_handled

    def wait_for(self, target: int, timeout: float) -> int:
        """Apply events until ``target`` is handled here or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while True:
            handled = self.ensure_handled(target, timeout=max(deadline - time.monotonic(), 0))
            remaining = deadline - time.monotonic()
            if handled >= target or remaining <= 0:
                return handled
            self.store.wait_for_events(handled, min(remaining, 0.5))

    def replay_into_live(self, progress: Callable[[int], None] | None = None) -> int:
        """Startup: apply every stored event not yet handled, with ``replay=True``.

        A receiver error raises :class:`ReplayError`. Afterwards the
        dispatcher is live. Returns how many events were applied.
        """
        with self._lock:
            self._local.active = True
            try:
                before = self.last_handled
                self._wanted = self.store.last_sequence_num()
                self._deliver(strict=True, replay=True, progress=progress)
                self.live = True
                # Writes made during startup (pre-init functions) are delivered now.
                self._wanted = self.store.last_sequence_num()
                self._deliver(strict=True, replay=True)
                return self.last_handled - before
            finally:
                self._local.active = False

    def rebuild(
        self,
        receivers: dict[str, tuple[Receiver, ...]],
        from_sequence: int,
        swap: Callable[[], None],
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Apply stored events from ``from_sequence`` to ``receivers`` alone, then ``swap``.

        Live delivery waits meanwhile. First catches the current receivers up
        to the store's last position, so that the rebuilt ones and they stand
        at the same place. A receiver error raises :class:`ReplayError` and
        ``swap`` is not called. Returns how many events were applied.
        """
        with self._lock:
            self._local.active = True
            try:
                self._wanted = self.store.last_sequence_num()
                self._deliver(strict=False, replay=False)
                count = 0
                wild = receivers.get(WILDCARD, ())
                table: dict[str, tuple[Receiver, ...]] = {}
                for page in self._pages(from_sequence - 1, self.last_handled):
                    with traced("shimmie.apply", apply_attributes(page, True)):
                        for index, event in enumerate(page):
                            page[index] = None  # type: ignore[call-overload]  # freed once applied (see _apply)
                            targets = table.get(event.event_name)
                            if targets is None:
                                named = receivers.get(event.event_name, ())
                                targets = named + wild if event.event_name != WILDCARD else named
                                table[event.event_name] = targets
                            for receiver in targets:
                                try:
                                    receiver.handler(event)
                                except Exception as error:
                                    self._failed(receiver, event, error, strict=True)
                    count += len(page)
                    if progress is not None:
                        progress(len(page))
                swap()
                self._receivers.clear()
                return count
            finally:
                self._local.active = False

    def _pages(self, after: int, upto: int) -> Iterable[list[Event]]:
        """Decoded replay chunks of the stored events after ``after``, up to ``upto``."""
        while after < upto:
            before = after
            for chunk in self.store.read_for_replay(after):
                if chunk[-1].sequence_num > upto:
                    chunk = [e for e in chunk if e.sequence_num <= upto]
                    if not chunk:
                        return
                after = chunk[-1].sequence_num
                yield self.decode(chunk)
                del chunk
            if after == before:
                return

    def _deliver(self, *, strict: bool, replay: bool, progress: Callable[[int], None] | None = None) -> None:
        while self.last_handled < self._wanted:
            events = self._take_pending()
            if events:
                if replay:
                    events = [dataclasses.replace(event, replay=True) for event in events]
                if not self._apply(events, strict=strict):
                    return
                if progress is not None:
                    progress(len(events))
                continue
            before = self.last_handled
            chunks = (
                self.store.read_for_replay(before) if replay else [self.store.read(before, REPLAY_PAGE_SIZE)]
            )
            for chunk in chunks:
                if not chunk:
                    break
                events = self.decode(chunk)
                del chunk
                if not self._apply(events, strict=strict, release=True):
                    return
                if progress is not None:
                    progress(len(events))
            if self.last_handled == before:
                break
        self._wanted = self.last_handled
        if self._pending:
            with self._pending_lock:
                for position in [p for p in self._pending if p <= self.last_handled]:
                    del self._pending[position]

    def _apply(self, events: list[Event], *, strict: bool, release: bool = False) -> bool:
        """:meth:`_apply_events`, in a ``shimmie.apply`` span when tracing is on."""
        tracer = active_tracer()
        if tracer is None or not events:
            return self._apply_events(events, strict=strict, release=release)
        attributes = apply_attributes(events, events[0].replay)
        with tracer.start_as_current_span("shimmie.apply", attributes=attributes):
            return self._apply_events(events, strict=strict, release=release)

    def _apply_events(self, events: list[Event], *, strict: bool, release: bool = False) -> bool:
        """Apply ``events`` (in order) to their receivers; False if the store left a gap.

        The hot loop of every delivery and replay: it looks receivers up in
        the cached table and counts down to the next checkpoint instead of
        dividing at every event. With ``release`` (a page nobody else holds)
        each event leaves the list once applied, so it is freed at once
        rather than surviving into the garbage collector's older generations,
        whose full passes are costly in a long replay.
        """
        table = self._receivers
        checkpoint_every = self.checkpoint_every
        next_checkpoint = (
            (self.last_handled // checkpoint_every + 1) * checkpoint_every if checkpoint_every else 0
        )
        expected = self.last_handled + 1
        for index, event in enumerate(events):
            if release:
                events[index] = None  # type: ignore[call-overload]
            position = event.sequence_num
            if position != expected:
                if position < expected:
                    continue
                # Stores are gap-free; a gap means the store broke its promise.
                # Stop rather than skip an event: the next call tries again.
                self.logger.error(
                    "Expected event %s but the store gave %s; delivery paused", expected, position
                )
                self._wanted = self.last_handled
                return False
            receivers = table.get(event.event_name)
            if receivers is None:
                receivers = self.receivers(event.event_name)
            for receiver in receivers:
                try:
                    receiver.handler(event)
                except Exception as error:
                    self._failed(receiver, event, error, strict=strict)
            self.last_handled = position
            expected = position + 1
            if position == next_checkpoint:
                next_checkpoint += checkpoint_every
                if self.on_checkpoint is not None:
                    self.on_checkpoint(position)
        return True

    def _take_pending(self) -> list[Event]:
        taken = []
        with self._pending_lock:
            pending = self._pending
            position = self.last_handled + 1
            while position in pending:
                taken.append(pending.pop(position))
                position += 1
        return taken

    def _failed(self, receiver: Receiver, event: Event, error: Exception, *, strict: bool) -> None:
        """Apply the error policy: raise during replay, else log and mark the owner degraded."""
        if strict:
            raise ReplayError(event, receiver.label, error) from error
        self.degraded[receiver.owner] = f"{type(error).__name__}: {error}"
        self.logger.error(
            "%s failed on event %s (%s on stream %r); the event is stored, the model may be stale",
            receiver.label,
            event.sequence_num,
            event.event_name,
            event.stream_id,
            exc_info=error,
        )


class _WriteInFlight:
    """:meth:`Dispatcher.writing`: counts a write in ``writes_in_flight`` while it runs."""

    __slots__ = ("_dispatcher",)

    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher

    def __enter__(self) -> None:
        dispatcher = self._dispatcher
        with dispatcher._pending_lock:
            dispatcher.writes_in_flight += 1

    def __exit__(self, *exc_info: object) -> None:
        dispatcher = self._dispatcher
        with dispatcher._pending_lock:
            dispatcher.writes_in_flight -= 1

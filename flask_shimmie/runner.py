"""The subscription runner: one per app and process, it runs the subscriptions whose lease it holds.

Every process on a store has a runner; each subscription's lease lets exactly
one of them work on it. A runner tries the leases it does not hold every
``SHIMMIE_SUBSCRIPTION_TAKEOVER / 2`` seconds, so when the holder dies another
process takes over within that setting. Before each batch it checks that it
still holds the lease, and every write it makes for a subscription is fenced
by the lease: a runner that lost it stops at once and stores nothing more.

Delivery: events in ``sequence_num`` order, from the stored position, decoded
as models get them (upcast, PII merged). A reactor's position is saved after
its handler returns (at least once); a projection's writes and its position
commit in one transaction (exactly once). A failing handler is retried with
exponential backoff, then its event is parked or the subscription stops. A
relay's position moves past the events its broker confirmed; a broker outage
is waited out without holding up the other subscriptions (see
:mod:`flask_shimmie.relay`).
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import socket
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import Flask

from .dispatch import WILDCARD
from .errors import UnknownSubscriptionError
from .events import Event
from .process_exit import at_process_exit
from .projections import Projection, ProjectionHandler
from .relay import OUTAGE_DELAY, OUTAGE_DELAY_MAX, RelaySpec
from .sinks.base import SinkError
from .storage.interface import Lease, LeaseLostError, SubscriptionInfo, SubscriptionStore
from .subscriptions import ProjectionSpec, Reactor, Subscription
from .tracing import subscription_span

if TYPE_CHECKING:
    from .state import AppState

logger = logging.getLogger(__name__)

#: Events read from the store at a time, per subscription.
BATCH_SIZE = 500
#: Seconds of handling after which a projection commits its transaction, and a reactor
#: saves its position: a crash repeats at most that much of a reactor's work.
BATCH_SECONDS = 0.05
#: Seconds before the first retry of a failed handler; doubled for each further retry.
RETRY_DELAY = 0.1
#: The longest pause between two retries.
RETRY_DELAY_MAX = 2.0
#: Seconds between looks at what other processes may have changed: a reset, a retry
#: request, a failed subscription made active again.
CHECK_EVERY = 1.0
#: Seconds one wait on the store lasts before the stop flag is looked at again.
WAIT_SLICE = 0.25
#: Rounds :meth:`SubscriptionRunner.run_until_caught_up` goes through, at most, while
#: handlers keep recording new events.
MAX_CATCH_UP_ROUNDS = 100

_runners: weakref.WeakSet[SubscriptionRunner] = weakref.WeakSet()


def _stop_every_runner() -> None:
    # The process's end (a gunicorn or granian worker's after SIGTERM included): finish the
    # handler in flight, save the position, release the leases.
    for runner in list(_runners):
        runner.stop()


at_process_exit(_stop_every_runner)


class _Interrupted(Exception):
    """A stop was asked for while a handler waited for its next try."""


class _Outage(Exception):
    """A relay's broker did not confirm a publish for a reason that may pass: wait, never park."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class _HandlerFailed(Exception):
    """A projection handler raised; raised on through the transaction so that it rolls back."""

    def __init__(self, index: int, error: str) -> None:
        super().__init__(error)
        self.index = index
        self.error = error


@dataclass
class _Held:
    """A subscription whose lease this runner holds."""

    spec: Subscription
    lease: Lease
    #: The position handled here (saved, or about to be).
    position: int
    #: The position last stored.
    saved: int
    failed: bool = False
    #: Whether ``position`` may be wrong: a store error left it unknown whether a write was
    #: stored, so the stored row is read again before the next batch.
    stale: bool = False
    #: How many events its handlers took here (what run_until_caught_up reports).
    handled: int = 0
    handlers: dict[str, list[ProjectionHandler]] = field(default_factory=dict)
    projection: Projection | None = None
    #: A relay waiting out a broker outage: when it tries again (``time.monotonic()``), the pause
    #: before that try, and when the outage began (``None`` when there is none).
    retry_at: float = 0.0
    outage_delay: float = 0.0
    outage_since: float | None = None


class SubscriptionRunner:
    """Runs one app's subscriptions in this process: in a thread, or on demand.

    :meth:`start` runs them in a background thread until :meth:`stop`;
    :meth:`run_until_caught_up` runs them in the calling thread up to the
    store's last position (tests, ``subscriptions run --once``).
    """

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.pid = os.getpid()
        #: ``host:pid``: each lease it takes is stored as held by ``host:pid:<fresh token>``.
        self.runner_id = f"{socket.gethostname()}:{self.pid}"
        self._store: SubscriptionStore | None = None
        self._lock = threading.RLock()
        self._held: dict[str, _Held] = {}
        self._registered: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._names: tuple[str, ...] | None = None
        #: Set when a lease was lost: a reset ends it, and the new one should follow at once.
        self._lost_one = False

    # -- what to run ----------------------------------------------------------

    @property
    def store(self) -> SubscriptionStore:
        """The subscription store of the app's event store."""
        if self._store is None:
            self._store = self.state.event_store.subscription_store()
        return self._store

    @property
    def app(self) -> Flask:
        return self.state.app

    def selected(self, names: Collection[str] | None = None) -> list[Subscription]:
        """The registered subscriptions called ``names`` (all when ``None``).

        Raises :class:`UnknownSubscriptionError` for a name not registered.
        """
        known = self.state.registry.subscriptions
        if names is None:
            return list(known)
        chosen = []
        for name in names:
            spec = self.state.registry.subscription(name)
            if spec is None:
                listed = ", ".join(s.name for s in known) or "none"
                raise UnknownSubscriptionError(f"No subscription named {name!r} (registered: {listed}).")
            chosen.append(spec)
        return chosen

    def register(self, spec: Subscription) -> SubscriptionInfo:
        """The stored row of ``spec``, created at its start position when missing.

        Raises :class:`~flask_shimmie.errors.ConfigurationError` when the name
        is stored with another kind.
        """
        start = self.state.event_store.last_sequence_num() if spec.start == "now" else 0
        info = self.store.register(spec.name, spec.kind, start_position=start, version=spec.version)
        self._registered.add(spec.name)
        return info

    @property
    def running(self) -> bool:
        """Whether the background thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def holds(self, name: str) -> bool:
        """Whether this runner holds ``name``'s lease right now."""
        return name in self._held

    # -- lifecycle ------------------------------------------------------------

    def prepare(self) -> None:
        """At startup: store every subscription's row, set up the projections' tables.

        A projection's :meth:`~flask_shimmie.Projection.setup` (and, after a
        version change, its :meth:`~flask_shimmie.Projection.reset`) runs
        under its lease, so views can read its tables as soon as the app is
        up; when another process holds the lease, that process did it.
        """
        with self._lock:
            for spec in self.selected():
                self.register(spec)
                if isinstance(spec, ProjectionSpec) and spec.name not in self._held:
                    held = self._acquire(spec)
                    if held is not None and not self.running:
                        self._drop(held)

    def start(self, names: Collection[str] | None = None) -> None:
        """Run the subscriptions (or those called ``names``) in a background thread, until :meth:`stop`."""
        chosen = tuple(spec.name for spec in self.selected(names)) if names is not None else None
        with self._lock:
            if self.running:
                return
            self._names = chosen
            self._stop.clear()
            self._thread = threading.Thread(target=self.serve, name="shimmie-subscriptions", daemon=True)
            _runners.add(self)
            self._thread.start()

    def request_stop(self) -> None:
        """Ask the background thread to stop, without waiting (safe in a signal handler)."""
        self._stop.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread: the handler in flight finishes, the position is saved, the leases released.

        Waits at most ``timeout`` seconds. Does nothing in a process other than
        the one that made the runner (a forked child).
        """
        if os.getpid() != self.pid:
            return
        self._stop.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                logger.warning("The subscription runner %s did not stop within %ss", self.runner_id, timeout)
                return
        # Never wait for ever at interpreter exit: closing the store releases the leases anyway.
        if self._lock.acquire(timeout=timeout):
            try:
                self._release_all()
            finally:
                self._lock.release()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the background thread to end; True when it did."""
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    # -- the loops ------------------------------------------------------------

    def serve(self) -> None:
        """The background thread's loop: take leases, handle batches, wait for events."""
        takeover = self.state.settings.subscription_takeover
        pause = 0.1
        next_try = next_check = 0.0
        with self.app.app_context():
            try:
                while not self._stop.is_set():
                    try:
                        with self._lock:
                            now = time.monotonic()
                            if now >= next_try or self._lost_one:
                                self._lost_one = False
                                self._acquire_free(self._names)
                                next_try = now + takeover / 2
                            check = now >= next_check
                            if check:
                                self._retry_parked_all()
                                next_check = now + CHECK_EVERY
                            progress, last = self._pass(check)
                        if not progress:
                            self._idle(min(next_try, next_check) - time.monotonic(), last)
                        pause = 0.1
                    except Exception:
                        logger.exception("Running the subscriptions failed; retrying in %.1fs", pause)
                        self._stop.wait(pause)
                        pause = min(pause * 2, 5.0)
            finally:
                with self._lock:
                    self._release_all()

    def run_until_caught_up(self, names: Collection[str] | None = None) -> dict[str, int]:
        """Run the subscriptions (or those called ``names``) in this thread, up to the store's last event.

        Rounds repeat while the handlers record new events. Parked events
        asked to be retried are retried first. Returns, per subscription, how
        many events its handlers took; a subscription another process runs
        (it holds the lease) is left out.
        """
        specs = self.selected(names)
        counts = {spec.name: 0 for spec in specs}
        elsewhere: set[str] = set()
        events = self.state.event_store
        with self._lock, self.app.app_context():
            try:
                for _ in range(MAX_CATCH_UP_ROUNDS):
                    target = events.last_sequence_num()
                    self._lost_one = False
                    for spec in specs:
                        held = self._acquire(spec)
                        if held is None:
                            elsewhere.add(spec.name)
                            continue
                        elsewhere.discard(spec.name)
                        self._retry_parked(held)
                        counts[spec.name] += self._catch_up(held, target)
                    if events.last_sequence_num() == target and not self._lost_one:
                        break
            finally:
                if not self.running:
                    self._release_all()
        return {name: count for name, count in counts.items() if name not in elsewhere}

    def rebuild_now(self, spec: ProjectionSpec) -> bool:
        """Apply a pending reset of ``spec`` now if this process can take its lease; True if it did."""
        with self._lock, self.app.app_context():
            current = self._held.get(spec.name)
            if current is not None and not current.lease.alive():
                self._lose(current, "it was reset")  # the reset ended the lease
            held = self._acquire(spec)
            if held is None:
                return False
            if not self.running:
                self._drop(held)
            return True

    def _catch_up(self, held: _Held, target: int) -> int:
        handled = 0
        while held.spec.name in self._held and not held.failed and held.position < target:
            before = held.position
            count = self._step(held, self.state.event_store.last_sequence_num())
            handled += count
            if count == 0 and held.position == before:
                break
        return handled

    def _pass(self, check_all: bool) -> tuple[bool, int]:
        """One batch for each held subscription with work; ``(anything moved, last stored position)``."""
        last = self.state.event_store.last_sequence_num()
        progress = False
        for held in list(self._held.values()):
            if self._stop.is_set():
                break
            if check_all or (not held.failed and held.position < last):
                before = held.position
                if self._step(held, last) or held.position != before:
                    progress = True
        return progress, last

    def _idle(self, timeout: float, last: int) -> None:
        timeout = max(min(timeout, WAIT_SLICE), 0.0)
        if any(not held.failed for held in self._held.values()):
            self.state.event_store.wait_for_events(last, timeout)
        else:
            self._stop.wait(timeout)

    # -- leases ---------------------------------------------------------------

    def _acquire_free(self, names: Collection[str] | None) -> None:
        for spec in self.selected(names):
            if spec.name not in self._held:
                self._acquire(spec)

    def _acquire(self, spec: Subscription) -> _Held | None:
        """The held subscription ``spec``, taking its lease if it is free; ``None`` if another holds it."""
        held = self._held.get(spec.name)
        if held is not None:
            return held
        if spec.name not in self._registered:
            self.register(spec)
        # A fresh token for every lease: an old lease of this runner can never pass the fence.
        lease = self.store.try_lease(spec.name, f"{self.runner_id}:{secrets.token_hex(4)}")
        if lease is None:
            return None
        info = self._info(spec)  # read after taking the lease, never before
        held = _Held(spec, lease, info.position, info.position, failed=info.state == "failed")
        if isinstance(spec, ProjectionSpec):
            held.projection = spec.projection()
            held.handlers = held.projection.handlers()
        self._held[spec.name] = held
        # Taking a lease over is news in a long-running runner, routine in run_until_caught_up.
        logger.log(
            logging.INFO if self.running else logging.DEBUG,
            "Runner %s runs subscription %s from position %s",
            self.runner_id,
            spec.describe(),
            held.position,
        )
        if isinstance(spec, ProjectionSpec):
            try:
                if not self._guard(held, lambda: self._set_up(held, info)):
                    return None
            except Exception:
                # Whether the set-up committed is unknown: the next lease does it again.
                self._drop(held)
                raise
        return held

    def _drop(self, held: _Held) -> None:
        """Forget ``held`` and give its lease up."""
        self._held.pop(held.spec.name, None)
        try:
            held.lease.release()
        except Exception:  # a lease whose session is gone is released already
            logger.debug("Releasing the lease of %s failed", held.spec.name, exc_info=True)

    def _lose(self, held: _Held, why: str) -> None:
        logger.warning("Runner %s stops running subscription %s: %s", self.runner_id, held.spec.name, why)
        self._drop(held)
        self._lost_one = True

    def _release_all(self) -> None:
        for held in list(self._held.values()):
            self._drop(held)

    def _guard(self, held: _Held, work: Callable[[], Any]) -> bool:
        """Run ``work`` for ``held``; False (and the lease forgotten) when the lease was lost."""
        try:
            work()
        except LeaseLostError:
            self._lose(held, "another runner took its lease over")
            return False
        except _Interrupted:
            return False
        return True

    def _info(self, spec: Subscription) -> SubscriptionInfo:
        info = self.store.get(spec.name)
        if info is None:  # the row went away (dropped by hand): store it again
            self._registered.discard(spec.name)
            info = self.register(spec)
        return info

    # -- one batch ------------------------------------------------------------

    def _step(self, held: _Held, last: int) -> int:
        """Handle the next batch of ``held``; return how many events its handlers took.

        ``last`` is the store's last position, read before this call: when a
        filtered read finds fewer events than a batch, none of those up to
        ``last`` that it skipped matched, so the position moves up to it.
        """
        before = held.handled
        try:
            self._guard(held, lambda: self._batch(held, last))
        except Exception:
            held.stale = True
            raise
        return held.handled - before

    def _batch(self, held: _Held, last: int) -> None:
        spec = held.spec
        if not held.lease.alive():
            raise LeaseLostError(f"The lease of {spec.name} is no longer held.")
        if held.failed or held.stale:
            # A failed subscription may have been made active again; a stale position is read anew.
            info = self._info(spec)
            held.position = held.saved = info.position
            held.failed = info.state == "failed"
            held.stale = False
            if held.failed:
                return
            if isinstance(spec, ProjectionSpec) and info.version != spec.version:
                self._set_up(held, info)
                if held.failed:
                    return
        if held.outage_since is not None and time.monotonic() < held.retry_at:
            return  # a relay waiting for its broker: not yet
        store = self.state.event_store
        found = store.read(held.position, BATCH_SIZE, event_names=spec.event_names)
        finished = True
        if found:
            events = self.state.decode(found, with_pii=not isinstance(spec, RelaySpec) or spec.with_pii)
            with subscription_span(spec.name, spec.kind, events):
                if isinstance(spec, Reactor):
                    finished = self._react(held, spec, events)
                elif isinstance(spec, RelaySpec):
                    finished = self._relay(held, spec, events)
                else:
                    finished = self._project(held, events)
        if (
            finished
            and spec.event_names is not None
            and len(found) < BATCH_SIZE
            and last > held.position
            and not held.failed
        ):
            held.position = last
            self._save(held)

    def _save(self, held: _Held) -> None:
        if held.position != held.saved:
            self.store.advance(held.lease, held.position)
            held.saved = held.position

    def _react(self, held: _Held, spec: Reactor, events: list[Event]) -> bool:
        """Call the reactor for each event; False when it stopped before the end."""
        saved_at = time.monotonic()
        try:
            for event in events:
                if self._stop.is_set():
                    return False
                error, attempts = self._attempts(held, event, functools.partial(_react_to, spec, event))
                if error is None:
                    held.position = event.sequence_num
                    held.handled += 1
                elif not self._give_up(held, event, error, attempts):
                    return False
                if time.monotonic() - saved_at >= BATCH_SECONDS:
                    self._save(held)
                    saved_at = time.monotonic()
            return True
        finally:
            self._save(held)

    def _relay(self, held: _Held, spec: RelaySpec, events: list[Event]) -> bool:
        """Publish ``events`` through the relay's sink; False when it stopped before the end.

        The position moves past what the broker confirmed, and no further. An
        event the broker refuses for good goes through the failure policy; any
        other failure is an outage, waited out (see :mod:`flask_shimmie.relay`).
        """
        start = 0
        while start < len(events):
            if self._stop.is_set():
                return False
            try:
                spec.sink.publish(events[start:])
            except Exception as error:
                index = _retry_from(events, start, error)
                self._published(held, events, start, index)
                if not (isinstance(error, SinkError) and error.refused):
                    self._wait_for_broker(held, error)
                    return False
                event = events[index]
                try:
                    failure, attempts = self._attempts(
                        held, event, functools.partial(_publish, spec, event), tried=1, error=_failure(error)
                    )
                except _Outage as outage:
                    self._wait_for_broker(held, outage.error)
                    return False
                if failure is None:
                    self._published(held, events, index, index + 1)
                elif not self._give_up(held, event, failure, attempts):
                    return False
                start = index + 1
                continue
            self._published(held, events, start, len(events))
            start = len(events)
        self._broker_back(held)
        return True

    def _published(self, held: _Held, events: list[Event], start: int, end: int) -> None:
        """The broker confirmed ``events[start:end]``: save the position past them."""
        if end > start:
            held.position = events[end - 1].sequence_num
            held.handled += end - start
            self._save(held)

    def _wait_for_broker(self, held: _Held, error: BaseException) -> None:
        """Try the relay again later, with backoff; log the outage when it begins."""
        now = time.monotonic()
        delay = held.outage_delay
        held.outage_delay = min(delay * 2, OUTAGE_DELAY_MAX) if delay else OUTAGE_DELAY
        held.retry_at = now + held.outage_delay
        detail = error if isinstance(error, SinkError) else f"{type(error).__name__}: {error}"
        if held.outage_since is None:
            held.outage_since = now
            logger.warning(
                "Relay %s cannot publish event %s and later ones; waiting for the broker (nothing is "
                "skipped): %s",
                held.spec.name,
                held.position + 1,
                detail,
                exc_info=not isinstance(error, SinkError),
            )
        else:
            logger.debug("Relay %s: the broker still fails: %s", held.spec.name, detail)

    def _broker_back(self, held: _Held) -> None:
        if held.outage_since is not None:
            logger.warning(
                "Relay %s publishes again after %.1fs without its broker",
                held.spec.name,
                time.monotonic() - held.outage_since,
            )
        held.outage_since = None
        held.outage_delay = held.retry_at = 0.0

    def _project(self, held: _Held, events: list[Event]) -> bool:
        """Apply events to the projection, several per transaction; False when it stopped before the end."""
        start = 0
        limit = len(events)
        while start < len(events):
            if self._stop.is_set():
                return False
            try:
                start = self._commit(held, events, start, limit)
            except _HandlerFailed as failure:
                if failure.index > start:
                    limit = failure.index  # commit the events before it, then try it alone
                    continue
                event = events[start]
                error, attempts = self._attempts(
                    held,
                    event,
                    functools.partial(self._commit, held, events, start, start + 1),
                    tried=1,
                    error=failure.error,
                )
                if error is not None and not self._give_up(held, event, error, attempts):
                    return False
                start += 1
            if start >= limit:
                limit = len(events)
        return True

    def _commit(self, held: _Held, events: list[Event], start: int, limit: int) -> int:
        """Apply ``events[start:limit]`` in one transaction (fewer when time is up); return the end."""
        began = time.monotonic()
        end = start
        with self.store.projection_transaction(held.lease) as tx:
            while end < limit:
                self._apply(held, events[end], end, tx.db)
                end += 1
                if time.monotonic() - began >= BATCH_SECONDS or self._stop.is_set():
                    break
            tx.advance(events[end - 1].sequence_num)
        held.position = held.saved = events[end - 1].sequence_num
        held.handled += end - start
        return end

    @staticmethod
    def _apply(held: _Held, event: Event, index: int, db: Any) -> None:
        handlers = held.handlers
        try:
            for handler in handlers.get(event.event_name, ()):
                handler(event, db)
            if event.event_name != WILDCARD:
                for handler in handlers.get(WILDCARD, ()):
                    handler(event, db)
        except Exception:
            raise _HandlerFailed(index, traceback.format_exc()) from None

    def _attempts(
        self, held: _Held, event: Event, call: Callable[[], Any], *, tried: int = 0, error: str = ""
    ) -> tuple[str | None, int]:
        """Call ``call`` until it succeeds or ``max_attempts`` tries failed; return ``(error, tries)``.

        ``error`` is ``None`` on success, else the last error with its traceback.

        A try fails when ``call`` raises :class:`_HandlerFailed`; anything else
        it raises goes up. ``tried`` tries already failed with ``error``.
        Between tries it waits (:data:`RETRY_DELAY`, doubling, at most
        :data:`RETRY_DELAY_MAX`) and checks that the lease is still held.
        Raises :class:`_Interrupted` when a stop is asked for meanwhile.
        """
        spec = held.spec
        attempt = tried
        delay = RETRY_DELAY
        while True:
            if attempt:
                if attempt >= spec.max_attempts:
                    return error, attempt
                logger.warning(
                    "Subscription %s failed on event %s (%s on %r), try %s of %s; retrying in %.1fs: %s",
                    spec.name,
                    event.sequence_num,
                    event.event_name,
                    event.stream_id,
                    attempt,
                    spec.max_attempts,
                    delay,
                    last_line(error),
                )
                if self._stop.wait(delay):
                    raise _Interrupted()
                if not held.lease.alive():
                    raise LeaseLostError(f"The lease of {spec.name} is no longer held.")
                delay = min(delay * 2, RETRY_DELAY_MAX)
            attempt += 1
            try:
                call()
                return None, attempt
            except _HandlerFailed as failure:
                # Only the handler's own errors count as tries: a store error leaves it
                # unknown whether a write was stored, and goes up to be sorted out there.
                error = failure.error

    def _give_up(self, held: _Held, event: Event, error: str, attempts: int) -> bool:
        """Apply the failure policy to ``event``: True when it was parked (go on), False when stopped."""
        spec = held.spec
        if not held.lease.alive():
            # A handler that fails because the database went away is no reason to
            # park or stop: whoever holds the lease next tries the event again.
            raise LeaseLostError(f"The lease of {spec.name} is no longer held.")
        where = f"event {event.sequence_num} ({event.event_name} on stream {event.stream_id!r})"
        if spec.on_failure == "park":
            self._save(held)
            self.store.park(held.lease, event.event_id, event.sequence_num, error, attempts)
            held.position = held.saved = max(held.position, event.sequence_num)
            logger.error("Subscription %s parked %s after %s tries:\n%s", spec.name, where, attempts, error)
            return True
        self._save(held)
        self.store.set_state(spec.name, "failed", f"{where}: {error}", lease=held.lease)
        held.failed = True
        logger.error("Subscription %s stopped at %s after %s tries:\n%s", spec.name, where, attempts, error)
        return False

    def _set_up(self, held: _Held, info: SubscriptionInfo) -> None:
        """Set a projection's tables up; after a version change, also empty them to rebuild from scratch.

        The rebuild's first step is one transaction: ``reset(db)`` and the
        position 0 with the new version commit together, so the old rows are
        never served beside new ones.
        """
        spec = held.spec
        assert isinstance(spec, ProjectionSpec) and held.projection is not None
        projection = held.projection
        rebuild = info.version != spec.version
        step = "reset" if rebuild else "setup"
        try:
            with self.store.projection_transaction(held.lease) as tx:
                _user_call(projection.setup, tx.db)
                if rebuild:
                    _user_call(projection.reset, tx.db)
                    tx.advance(0, version=spec.version)
        except _HandlerFailed as failure:
            if not held.lease.alive():
                raise LeaseLostError(f"The lease of {spec.name} is no longer held.") from None
            self.store.set_state(spec.name, "failed", f"{step}(db): {failure.error}", lease=held.lease)
            held.failed = True
            logger.error("Projection %s failed in %s(db):\n%s", spec.describe(), step, failure.error)
            return
        if rebuild:
            if info.state == "failed":  # new code, new start
                self.store.set_state(spec.name, "active", lease=held.lease)
            held.position = held.saved = 0
            held.failed = False
            logger.info(
                "Projection %s: rebuilding from the first event (its rows were built by version %s)",
                spec.describe(),
                info.version,
            )

    # -- parked events ----------------------------------------------------------

    def _retry_parked_all(self) -> None:
        for held in list(self._held.values()):
            self._retry_parked(held)

    def _retry_parked(self, held: _Held) -> None:
        """Try again the parked events someone asked to retry: unpark on success, park again on failure."""

        def work() -> None:
            for parked in self.store.parked(held.spec.name):
                if self._stop.is_set():
                    return
                if parked.retry_requested:
                    try:
                        self._retry_one(held, parked.event_id, parked.sequence_num, parked.attempts)
                    except _Outage as outage:
                        # The broker is away: the retries stay asked for, and are tried at the next look.
                        logger.info("Relay %s retries its parked events later: %s", held.spec.name, outage)
                        return

        self._guard(held, work)

    def _retry_one(self, held: _Held, event_id: str, sequence_num: int, attempts_before: int) -> None:
        spec = held.spec
        store = self.store
        found = self.state.event_store.read(sequence_num - 1, 1)
        if not found or found[0].event_id != event_id:
            logger.warning(
                "Parked event %s of %s is not stored at %s; unparking it", event_id, spec.name, sequence_num
            )
            store.unpark(held.lease, event_id)
            return
        (event,) = self.state.decode(found, with_pii=not isinstance(spec, RelaySpec) or spec.with_pii)
        call: Callable[[], Any]
        if isinstance(spec, Reactor):
            call = functools.partial(_react_to, spec, event)
        elif isinstance(spec, RelaySpec):
            call = functools.partial(_publish, spec, event)
        else:

            def call() -> None:
                # The position stays: the projection is past this event already.
                with store.projection_transaction(held.lease) as tx:
                    self._apply(held, event, 0, tx.db)

        error, attempts = self._attempts(held, event, call)
        if error is None:
            store.unpark(held.lease, event_id)
            logger.info("Subscription %s handled parked event %s on retry", spec.name, sequence_num)
            return
        if not held.lease.alive():
            raise LeaseLostError(f"The lease of {spec.name} is no longer held.")
        store.park(held.lease, event_id, sequence_num, error, attempts_before + attempts)
        logger.error(
            "Subscription %s parked event %s again after %s tries:\n%s",
            spec.name,
            sequence_num,
            attempts,
            error,
        )


def _react_to(spec: Reactor, event: Event) -> None:
    try:
        spec.handler(event)
    except Exception:
        raise _HandlerFailed(0, traceback.format_exc()) from None


def _publish(spec: RelaySpec, event: Event) -> None:
    """Publish one event: a refusal counts as a failed try, anything else is an outage."""
    try:
        spec.sink.publish([event])
    except SinkError as error:
        if error.refused:
            raise _HandlerFailed(0, _failure(error)) from None
        raise _Outage(error) from None
    except Exception as error:
        raise _Outage(error) from None


def _failure(error: BaseException) -> str:
    """A sink's error as a parked event or a failed subscription keeps it: the message, then the cause."""
    cause = error.__cause__
    text = f"{type(error).__name__}: {error}"
    return f"{text}\n(caused by {type(cause).__name__}: {cause})" if cause is not None else text


def _retry_from(events: list[Event], start: int, error: BaseException) -> int:
    """The index in ``events`` (from ``start``) of the event a failed publish names; ``start`` if none."""
    failed = error.event if isinstance(error, SinkError) else None
    if failed is not None:
        for index in range(start, len(events)):
            if events[index].sequence_num == failed.sequence_num:
                return index
    return start


def _user_call(method: Callable[[Any], Any], db: Any) -> None:
    """Call a projection's ``setup`` or ``reset``, telling its errors from the store's."""
    try:
        method(db)
    except Exception:
        raise _HandlerFailed(0, traceback.format_exc()) from None


def last_line(error: str | None) -> str:
    """The exception line of a formatted traceback (what a one-line report shows)."""
    lines = [line.strip() for line in (error or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""

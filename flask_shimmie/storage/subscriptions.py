"""What the engines' subscription stores share: argument checks, row decoding, a lease's own state.

A lease is held in the database (a lock) and fenced there (the row's
``runner``); :class:`ProcessLease` keeps what the process knows of it besides:
whether it was released or found lost (a latch: a lost lease never comes back),
and which fork took it, so that a forked child's copy is dead and never
releases anything in the parent's name.
"""

from __future__ import annotations

import threading
from abc import abstractmethod
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from ..errors import ConfigurationError
from .interface import (
    SUBSCRIPTION_KINDS,
    SUBSCRIPTION_STATES,
    Lease,
    LeaseLostError,
    ParkedEvent,
    ProjectionTransaction,
    SubscriptionInfo,
)
from .process import fork_generation

#: The columns of ``shimmie_subscriptions`` in :class:`SubscriptionInfo`'s order.
SUBSCRIPTION_COLUMNS = "name, kind, position, state, error, runner, version, updated_at"

#: The columns of ``shimmie_parked`` in :class:`ParkedEvent`'s order.
PARKED_COLUMNS = "subscription, event_id, sequence_num, error, attempts, parked_at, retry_requested"


def check_kind(kind: str) -> None:
    """Raise ``ValueError`` unless ``kind`` is one of :data:`SUBSCRIPTION_KINDS`."""
    if kind not in SUBSCRIPTION_KINDS:
        raise ValueError(f"Unknown subscription kind {kind!r}; use one of {', '.join(SUBSCRIPTION_KINDS)}.")


def check_state(state: str) -> None:
    """Raise ``ValueError`` unless ``state`` is one of :data:`SUBSCRIPTION_STATES`."""
    if state not in SUBSCRIPTION_STATES:
        raise ValueError(
            f"Unknown subscription state {state!r}; use one of {', '.join(SUBSCRIPTION_STATES)}."
        )


def stored_error(state: str, error: str | None) -> str | None:
    """The error kept with ``state``: ``active`` keeps none."""
    return None if state == "active" else error


def registered(info: SubscriptionInfo, kind: str) -> SubscriptionInfo:
    """``info``, unless it was stored with another kind than ``kind``."""
    if info.kind != kind:
        raise ConfigurationError(
            f"The subscription {info.name!r} is stored as a {info.kind}, not a {kind}: "
            "give this one another name (or reset the store's subscriptions)."
        )
    return info


def info_from_row(
    row: Sequence[Any], parse_time: Callable[[Any], datetime] | None = None
) -> SubscriptionInfo:
    """A :class:`SubscriptionInfo` from a row of :data:`SUBSCRIPTION_COLUMNS`."""
    name, kind, position, state, error, runner, version, updated_at = row
    if parse_time is not None:
        updated_at = parse_time(updated_at)
    return SubscriptionInfo(name, kind, int(position), state, error, runner, int(version), updated_at)


def parked_from_row(row: Sequence[Any], parse_time: Callable[[Any], datetime] | None = None) -> ParkedEvent:
    """A :class:`ParkedEvent` from a row of :data:`PARKED_COLUMNS`."""
    subscription, event_id, sequence_num, error, attempts, parked_at, retry = row
    if parse_time is not None:
        parked_at = parse_time(parked_at)
    return ParkedEvent(
        subscription, event_id, int(sequence_num), error, int(attempts), parked_at, bool(retry)
    )


class ProcessLease(Lease):
    """A lease as the process that took it knows it; engines add how it is held and let go.

    :meth:`alive` and the fenced writes first ask :meth:`usable`; an engine
    calls :meth:`fenced_off` when the database refused a fenced write.
    """

    def __init__(self, name: str, runner: str) -> None:
        self.name = name
        self.runner = runner
        self._generation = fork_generation()
        self._guard = threading.Lock()
        self._released = False
        self._lost = False

    def in_this_process(self) -> bool:
        """Whether this process took the lease (not a forked child's copy of it)."""
        return self._generation == fork_generation()

    def usable(self) -> bool:
        """Whether writes may still be tried through this lease (the database fences them anyway)."""
        return not (self._released or self._lost) and self.in_this_process()

    def check(self) -> None:
        """Raise :class:`LeaseLostError` unless :meth:`usable`."""
        if not self.usable():
            raise self._error()

    def fenced_off(self) -> LeaseLostError:
        """Mark the lease lost for good (the database refused a fenced write); return the error to raise."""
        self._lost = True
        return self._error()

    def _error(self) -> LeaseLostError:
        return LeaseLostError(
            f"The lease of subscription {self.name!r} taken by {self.runner!r} is no longer held "
            "(released, reset, taken over by another runner, or taken before a fork); nothing was stored."
        )

    def alive(self) -> bool:
        if not self.usable():
            return False
        if not self._still_held():
            self._lost = True
            return False
        return True

    def release(self) -> None:
        if not self.in_this_process():
            # A forked child's copy: what it holds is the parent's (and the guard may
            # have been copied while one of the parent's threads held it).
            self._released = True
            return
        with self._guard:
            if self._released:
                return
            self._released = True
        self._let_go()

    @abstractmethod
    def _still_held(self) -> bool:
        """Ask the database whether the lock is held and the row's ``runner`` is still :attr:`runner`."""

    @abstractmethod
    def _let_go(self) -> None:
        """Clear the row's ``runner`` (when still ours) and release the lock; never raise."""


class PendingPosition(ProjectionTransaction):
    """A projection transaction's connection, and the position (and version) it will commit."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.position: int | None = None
        self.version: int | None = None

    def advance(self, position: int, *, version: int | None = None) -> None:
        self.position = position
        if version is not None:
            self.version = version

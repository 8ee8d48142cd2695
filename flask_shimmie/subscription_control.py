"""Operating subscriptions: their status, retrying what failed, resetting a position.

Shared by the CLI (``flask shimmie subscriptions ...``) and the admin API
(``/admin/subscriptions``), so both say and do the same. Nothing here runs a
handler: the lease holder does, at its next batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import SubscriptionResetError, UnknownSubscriptionError
from .storage.interface import SubscriptionInfo
from .subscriptions import ProjectionSpec, Subscription

if TYPE_CHECKING:
    from .state import AppState


@dataclass(frozen=True)
class SubscriptionStatus:
    """What an operator sees of one subscription."""

    name: str
    kind: str
    #: The ``sequence_num`` of the last event it processed.
    position: int
    #: How many events the store holds past ``position``.
    lag: int
    #: ``active`` or ``failed``.
    state: str
    #: The runner holding its lease (``host:pid:token``), or ``None``.
    runner: str | None
    #: Why it failed (with the traceback), or ``None``.
    error: str | None
    #: How many of its events are parked.
    parked: int

    def to_json(self) -> dict[str, Any]:
        """The status as the admin API shows it."""
        return {
            "name": self.name,
            "kind": self.kind,
            "position": self.position,
            "lag": self.lag,
            "state": self.state,
            "runner": self.runner,
            "error": self.error,
            "parked": self.parked,
        }


def lookup(state: AppState, name: str) -> Subscription:
    """The registered subscription ``name``; :class:`UnknownSubscriptionError` (404) if there is none."""
    spec = state.registry.subscription(name)
    if spec is None:
        listed = ", ".join(s.name for s in state.registry.subscriptions) or "none"
        raise UnknownSubscriptionError(f"No subscription named {name!r} (registered: {listed}).")
    return spec


def _row(state: AppState, spec: Subscription) -> SubscriptionInfo:
    found = state.runner.store.get(spec.name)
    return found if found is not None else state.runner.register(spec)


def statuses(state: AppState) -> list[SubscriptionStatus]:
    """The status of every registered subscription, in registration order."""
    store = state.runner.store
    last = state.event_store.last_sequence_num()
    rows = {info.name: info for info in store.all()}
    found = []
    for spec in state.registry.subscriptions:
        info = rows.get(spec.name) or state.runner.register(spec)
        found.append(
            SubscriptionStatus(
                name=spec.name,
                kind=spec.kind,
                position=info.position,
                lag=max(last - info.position, 0),
                state=info.state,
                runner=info.runner,
                error=info.error,
                parked=len(store.parked(spec.name)),
            )
        )
    return found


def degraded(state: AppState, last_stored: int) -> list[str]:
    """The registered subscriptions that failed, or lag more than ``SHIMMIE_SUBSCRIPTION_MAX_LAG``."""
    if not state.registry.subscriptions:
        return []
    limit = state.settings.subscription_max_lag
    rows = {info.name: info for info in state.runner.store.all()}
    names = []
    for spec in state.registry.subscriptions:
        info = rows.get(spec.name)
        if info is None:
            continue
        if info.state == "failed" or (limit is not None and last_stored - info.position > limit):
            names.append(spec.name)
    return names


@dataclass(frozen=True)
class RetryOutcome:
    """What a retry request changed."""

    #: True when the subscription had stopped (``failed``) and is active again.
    resumed: bool
    #: How many parked events were marked for another try.
    retried: int


def retry(state: AppState, name: str, event_id: str | None = None) -> RetryOutcome:
    """Make a stopped subscription active again, and mark its parked events (or one) for another try.

    The lease holder tries them at its next look (within a second or so).
    Raises :class:`UnknownSubscriptionError` for an unknown name, or an
    ``event_id`` that is not parked.
    """
    spec = lookup(state, name)
    store = state.runner.store
    info = _row(state, spec)
    resumed = info.state == "failed" and event_id is None
    if resumed:
        store.set_state(name, "active")
    retried = store.request_retry(name, event_id)
    if event_id is not None and retried == 0:
        raise UnknownSubscriptionError(f"Subscription {name!r} has no parked event {event_id}.")
    return RetryOutcome(resumed, retried)


@dataclass(frozen=True)
class ResetOutcome:
    """What a reset did."""

    position: int
    #: True when a projection's rows are to be rebuilt from the first event.
    rebuild: bool
    #: True when that rebuild was started here (this process could take the lease); else the
    #: lease holder does it before its next batch.
    rebuilt_now: bool


def reset(state: AppState, name: str, to: int | None = None) -> ResetOutcome:
    """Move ``name`` to position ``to`` (default 0), make it active and drop its parked events.

    A reactor may go anywhere up to the store's last position; it handles
    the events after ``to`` again (they are idempotent by ``event_id``). A
    projection either rebuilds (``to`` 0: its ``reset(db)`` empties its
    tables and it applies every event again) or skips forward (``to`` at or
    past its position: the events in between are never applied); moving it
    back to another position would apply events twice, so that raises
    :class:`SubscriptionResetError` (409), as does a ``to`` past the store's end.

    A runner working on the subscription right now picks the new position up
    at its next batch.
    """
    spec = lookup(state, name)
    target = 0 if to is None else to
    last = state.event_store.last_sequence_num()
    if target > last:
        raise SubscriptionResetError(
            f"Cannot reset {name!r} to {target}: the store's last position is {last}."
        )
    info = _row(state, spec)
    store = state.runner.store
    if not isinstance(spec, ProjectionSpec):
        store.reset(name, target)
        return ResetOutcome(target, False, False)
    if target == 0:
        # Version 0 is no projection's version: the lease holder sees a change
        # and rebuilds, whichever process it is and whenever it next runs.
        store.reset(name, 0, version=0)
        return ResetOutcome(0, True, state.runner.rebuild_now(spec))
    if target < info.position:
        raise SubscriptionResetError(
            f"Cannot move projection {name!r} back from {info.position} to {target}: it would apply "
            "those events twice. Reset it to 0 to rebuild it, or to a later position to skip events."
        )
    store.reset(name, target)
    return ResetOutcome(target, False, False)

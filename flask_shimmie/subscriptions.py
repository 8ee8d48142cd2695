"""What a durable subscription is: its name, the events it takes, where it starts, its failure policy.

A *reactor* is a function with side effects, run at least once per event
(``@stack.reactor``); a *projection* writes tables in the event store's
database, exactly once per event (``stack.register_projection``); a *relay*
(:mod:`flask_shimmie.relay`) publishes each event to a message broker.
The specs are validated here, when they are registered, so a mistake fails
at import time with a sentence that says what to write instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from .dispatch import WILDCARD
from .events import Event
from .models import readable_name
from .projections import Projection

#: Where a new subscription begins: after the last event stored when it is first
#: registered, or from the first event.
START_CHOICES = ("now", "beginning")
#: What happens to an event whose handler failed ``max_attempts`` times.
FAILURE_CHOICES = ("park", "stop")
#: Subscription names: they appear in URLs and on command lines.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}")


@dataclass(frozen=True)
class Subscription:
    """A registered subscription (the fields both kinds share)."""

    name: str
    #: ``"reactor"``, ``"projection"`` or ``"relay"`` (as stored in ``shimmie_subscriptions``).
    kind: str
    #: The event names it takes, or ``None`` for every event.
    event_names: tuple[str, ...] | None
    #: One of :data:`START_CHOICES`.
    start: str
    max_attempts: int
    #: One of :data:`FAILURE_CHOICES`.
    on_failure: str

    @property
    def version(self) -> int:
        """The version stored with the subscription's position (0 for reactors)."""
        return 0

    def describe(self) -> str:
        """What the subscription runs, for logs."""
        return self.name


@dataclass(frozen=True)
class Reactor(Subscription):
    """A function called with each event it takes, in order, at least once."""

    handler: Callable[[Event], Any]

    def describe(self) -> str:
        return f"{self.name} ({readable_name(self.handler)})"


@dataclass(frozen=True)
class ProjectionSpec(Subscription):
    """A :class:`~flask_shimmie.Projection` class and the policy it registered with."""

    projection: type[Projection]

    @property
    def version(self) -> int:
        return self.projection.version

    def describe(self) -> str:
        return f"{self.name} ({readable_name(self.projection)} v{self.projection.version})"


def check_subscription_name(name: Any) -> str:
    """``name`` if it can name a subscription; else ValueError saying what a name looks like."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"A subscription name is 1 to 100 letters, digits, '-', '_', '.' or ':', starting with a "
            f"letter or digit (e.g. 'email-new-songs'), not {name!r:.80}."
        )
    return name


def check_policy(what: str, start: Any, max_attempts: Any, on_failure: Any) -> None:
    """Refuse a ``start``, ``max_attempts`` or ``on_failure`` that is not one of the choices."""
    if start not in START_CHOICES:
        raise ValueError(f"{what}: start must be 'now' or 'beginning', not {start!r:.60}.")
    if not isinstance(max_attempts, int) or isinstance(max_attempts, bool) or max_attempts < 1:
        raise ValueError(f"{what}: max_attempts must be a whole number >= 1, not {max_attempts!r:.60}.")
    if on_failure not in FAILURE_CHOICES:
        raise ValueError(f"{what}: on_failure must be 'park' or 'stop', not {on_failure!r:.60}.")


def event_names_of(what: str, names: Collection[str] | None) -> tuple[str, ...] | None:
    """``names`` as a tuple without repeats, ``None`` for every event; ValueError for anything else."""
    if names is None:
        return None
    if isinstance(names, str) or not isinstance(names, Collection):
        raise ValueError(f"{what}: events must be a list of event names or None, not {names!r:.60}.")
    found = tuple(dict.fromkeys(names))
    if not found or not all(isinstance(name, str) and name for name in found):
        raise ValueError(f"{what}: events must list one or more event names, not {names!r:.60}.")
    return None if WILDCARD in found else found


def reactor_spec(
    name: str,
    handler: Callable[[Event], Any],
    *,
    events: Sequence[str] | None,
    start: str,
    max_attempts: int,
    on_failure: str,
) -> Reactor:
    """A validated :class:`Reactor`; ValueError (or TypeError for ``handler``) says what is wrong."""
    what = f"reactor {check_subscription_name(name)!r}"
    if not callable(handler):
        raise TypeError(f"{what} needs a function fn(event), not {handler!r:.60}.")
    check_policy(what, start, max_attempts, on_failure)
    return Reactor(name, "reactor", event_names_of(what, events), start, max_attempts, on_failure, handler)


def projection_spec(cls: Any) -> ProjectionSpec:
    """A validated :class:`ProjectionSpec` for the class ``cls``."""
    if not (isinstance(cls, type) and issubclass(cls, Projection)):
        raise TypeError(f"register_projection() needs a Projection subclass, not {cls!r:.60}.")
    label = readable_name(cls)
    if not cls.name:
        raise ValueError(f"{label} needs a name: set the class attribute name = 'songs-by-artist'.")
    what = f"projection {check_subscription_name(cls.name)!r} ({label})"
    version = cls.version
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{what}: version must be a whole number >= 1, not {version!r:.60}.")
    check_policy(what, "beginning", cls.max_attempts, cls.on_failure)
    names = [event_name for event_name, _ in cls.subscriptions()]
    if not names:
        raise ValueError(f"{what} has no handlers: mark methods with @subscribe('EVENT_NAME').")
    return ProjectionSpec(
        cls.name,
        "projection",
        event_names_of(what, names),
        "beginning",
        cls.max_attempts,
        cls.on_failure,
        cls,
    )

"""What a stack has been given to run: models, subscribers, subscriptions, payload types, auth hooks.

The stack owns one :class:`Registry` and hands it to each app's state, so the
modules that need these registrations read them here rather than from the
stack's private attributes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .events import Event
from .models import Model
from .schemas import PayloadTypes
from .subscriptions import Subscription


@dataclass
class Registry:
    """The registrations of one :class:`~flask_shimmie.ShimmieStack`, shared by all its apps."""

    #: Model classes, in registration order; each app builds one instance of each.
    models: list[type[Model]] = field(default_factory=list)
    #: ``(event_name, handler)`` of the plain function subscribers.
    functions: list[tuple[str, Callable[[Event], Any]]] = field(default_factory=list)
    #: Durable subscriptions (reactors and projections), in registration order.
    subscriptions: list[Subscription] = field(default_factory=list)
    #: Event schemas and upcasters.
    types: PayloadTypes = field(default_factory=PayloadTypes)
    #: ``fn() -> identity | None`` (``@stack.authenticator``).
    authenticator: Callable[[], Any] | None = None
    #: ``check(identity) -> bool`` guarding the admin API (``@stack.admin_authorizer``).
    admin_authorizer: Callable[[Any], bool] | None = None
    #: The name of each mounted processor, by its blueprint's name, in mount order.
    processors: dict[str, str] = field(default_factory=dict)

    def add_subscription(self, subscription: Subscription) -> None:
        """Register ``subscription``; ValueError when its name is taken.

        Reactors, projections and relays share one namespace.
        """
        for known in self.subscriptions:
            if known.name == subscription.name:
                raise ValueError(
                    f"A subscription named {subscription.name!r} is already registered "
                    f"({known.kind} {known.describe()}); reactors, projections and relays share one "
                    "namespace."
                )
        self.subscriptions.append(subscription)

    def subscription(self, name: str) -> Subscription | None:
        """The registered subscription called ``name``, or ``None``."""
        return next((known for known in self.subscriptions if known.name == name), None)

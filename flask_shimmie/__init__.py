"""flask_shimmie: event-sourced web services with Flask.

Write blueprints ("processors") and small read models; the stack records
events in a swappable event store and delivers each, in order, to the models
that subscribe to it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .auth import (
    AuthorizationNotImplemented,
    any_identity,
    authorize,
    current_identity,
    get_identity,
    no_authorization,
)
from .errors import (
    ConfigurationError,
    InvalidEventError,
    ObjectLockedError,
    PiiNotConfiguredError,
    ReplayError,
    SequenceTimeoutError,
    ShimmieError,
    StoreUnavailableError,
    StreamNotFoundError,
    StreamVersionError,
    SubscriptionResetError,
    TooManyStreamsError,
    TooManyWaitersError,
    UnknownSubscriptionError,
)
from .events import ANY, NO_STREAM, STREAM_EXISTS, Event, ExpectedVersion, NewEvent
from .extension import PII_ERASED_EVENT, ShimmieStack, current_stack
from .loading import Loaded
from .models import Model, subscribe
from .projections import Projection
from .signals import event_recorded, pii_erased, replay_finished, replay_started

if TYPE_CHECKING:
    from .sinks import NatsJetStreamSink, RabbitMqSink

#: Names served from a submodule imported on first access, so that importing the
#: package imports no broker client (see :mod:`flask_shimmie.sinks`).
_LAZY = {"NatsJetStreamSink": ".sinks", "RabbitMqSink": ".sinks"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ANY",
    "AuthorizationNotImplemented",
    "any_identity",
    "authorize",
    "current_identity",
    "get_identity",
    "no_authorization",
    "NO_STREAM",
    "PII_ERASED_EVENT",
    "STREAM_EXISTS",
    "ConfigurationError",
    "Event",
    "ExpectedVersion",
    "InvalidEventError",
    "Loaded",
    "Model",
    "NatsJetStreamSink",
    "NewEvent",
    "ObjectLockedError",
    "PiiNotConfiguredError",
    "Projection",
    "RabbitMqSink",
    "ReplayError",
    "SequenceTimeoutError",
    "ShimmieError",
    "ShimmieStack",
    "StoreUnavailableError",
    "StreamNotFoundError",
    "StreamVersionError",
    "TooManyStreamsError",
    "TooManyWaitersError",
    "SubscriptionResetError",
    "UnknownSubscriptionError",
    "current_stack",
    "event_recorded",
    "pii_erased",
    "replay_finished",
    "replay_started",
    "subscribe",
]

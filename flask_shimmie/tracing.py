"""OpenTelemetry spans around the stack's work, once the app traces with OpenTelemetry.

The spans: ``shimmie.record`` (one record call: its append and its delivery),
``shimmie.append`` (the store's write), ``shimmie.apply`` (one batch of events
applied to the models: a write's events, a follower's catch-up, a page of a
replay), ``shimmie.replay`` (a startup replay or :meth:`ShimmieStack.replay`),
and ``shimmie.subscription.handle`` (:func:`subscription_span`, for a
subscription's batch). Each is started as the current span, so it nests inside
the request's span of Flask's instrumentation, and a handler's own spans nest
inside ``shimmie.apply``.

This module never imports OpenTelemetry: spans exist once the app has imported
``opentelemetry-api`` itself and set a tracer provider (the SDK's, say). Until
then every hook costs one dictionary look-up; without ``opentelemetry-api``
installed, the same.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

    from .events import Event
    from .storage.interface import PendingEvent

#: The instrumentation scope's name: what a tracing backend shows as the library.
SCOPE = "flask_shimmie"
#: The module OpenTelemetry's tracing API lives in; looked up, never imported.
API_MODULE = "opentelemetry.trace"

#: Attribute names, namespaced as OpenTelemetry's conventions ask of a library.
STORE = "shimmie.store"
EVENT_NAMES = "shimmie.event_names"
EVENT_COUNT = "shimmie.event_count"
STREAM_COUNT = "shimmie.stream_count"
FIRST_SEQUENCE_NUM = "shimmie.first_sequence_num"
LAST_SEQUENCE_NUM = "shimmie.last_sequence_num"
FROM_SEQUENCE = "shimmie.from_sequence"
REPLAY = "shimmie.replay"
SUBSCRIPTION = "shimmie.subscription"
SUBSCRIPTION_KIND = "shimmie.subscription.kind"

_UNKNOWN = object()
#: Whether the environment names a tracer provider, which the API then loads when first asked.
_PROVIDER_IN_ENVIRONMENT = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ
#: Whether the tracer below is final: a tracer provider was set (once, as OpenTelemetry allows).
_settled = False
_tracer: Tracer | None = None


def active_tracer() -> Tracer | None:
    """The stack's tracer when spans would be recorded, else ``None`` (cheap: call it per operation).

    ``None`` while ``opentelemetry.trace`` is not imported, or no tracer
    provider is set (no SDK configured: spans would be thrown away), or the
    provider set is OpenTelemetry's no-op one.
    """
    if _settled:
        return _tracer
    trace = sys.modules.get(API_MODULE)
    if trace is None:
        return None
    # Reading the API's global spares get_tracer_provider()'s look-up of an
    # environment variable on every call while no provider is set.
    if getattr(trace, "_TRACER_PROVIDER", _UNKNOWN) is None and not _PROVIDER_IN_ENVIRONMENT:
        return None
    return _resolve(trace)


def _resolve(trace: Any) -> Tracer | None:
    """The tracer of the provider set, remembered: OpenTelemetry lets a process set it once."""
    global _settled, _tracer
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider):
        return None
    _tracer = None if isinstance(provider, trace.NoOpTracerProvider) else provider.get_tracer(SCOPE)
    _settled = True
    return _tracer


def set_tracer(tracer: Tracer | None) -> None:
    """Trace with ``tracer`` (say, from a provider that is not the global one) from now on.

    ``None`` goes back to the global tracer provider's tracer.
    """
    global _settled, _tracer
    _tracer, _settled = tracer, tracer is not None


def _names(events: Sequence[PendingEvent] | Sequence[Event]) -> list[str]:
    return list(dict.fromkeys(event.event_name for event in events))


def record_attributes(store: str, pending: Sequence[PendingEvent]) -> dict[str, Any]:
    """``shimmie.record``'s attributes: the store, the event names, how many events and streams."""
    return {
        STORE: store,
        EVENT_NAMES: _names(pending),
        EVENT_COUNT: len(pending),
        STREAM_COUNT: len({event.stream_id for event in pending}),
    }


def traced_record(
    tracer: Tracer, store: str, pending: Sequence[PendingEvent], record: Callable[[], list[Event]]
) -> list[Event]:
    """Run ``record()`` in a ``shimmie.record`` span; the span ends with the last position."""
    with tracer.start_as_current_span("shimmie.record", attributes=record_attributes(store, pending)) as span:
        stored = record()
        if stored:
            span.set_attribute(LAST_SEQUENCE_NUM, stored[-1].sequence_num)
        return stored


def append_attributes(store: str, pending: Sequence[PendingEvent]) -> dict[str, Any]:
    """``shimmie.append``'s attributes: the store and how many events."""
    return {STORE: store, EVENT_COUNT: len(pending)}


def apply_attributes(events: Sequence[Event], replay: bool) -> dict[str, Any]:
    """``shimmie.apply``'s attributes: how many events, their first and last positions, replay or live."""
    return {
        EVENT_COUNT: len(events),
        FIRST_SEQUENCE_NUM: events[0].sequence_num if events else 0,
        LAST_SEQUENCE_NUM: events[-1].sequence_num if events else 0,
        REPLAY: replay,
    }


class _NoSpan:
    """What :func:`span` yields when nothing is traced: attributes go nowhere."""

    def set_attribute(self, key: str, value: Any) -> None:
        """Drop ``key``."""


_NO_SPAN = _NoSpan()


@contextmanager
def span(name: str, attributes: Mapping[str, Any] | None = None) -> Iterator[Span | _NoSpan]:
    """A current span named ``name`` when tracing is on, else a stand-in; for work that is not per event.

    The span records an exception that leaves the block, as OpenTelemetry does.
    """
    tracer = active_tracer()
    if tracer is None:
        yield _NO_SPAN
        return
    with tracer.start_as_current_span(name, attributes=dict(attributes or {})) as current:
        yield current


def subscription_span(
    subscription: str, kind: str, events: Sequence[Event]
) -> AbstractContextManager[Span | _NoSpan]:
    """``shimmie.subscription.handle``: one batch a subscription's runner hands to its handler.

    ``kind`` is ``"reactor"``, ``"projection"`` or ``"relay"``. Attributes: the
    subscription's name and kind, how many events, their first and last positions.
    """
    return span(
        "shimmie.subscription.handle",
        {
            SUBSCRIPTION: subscription,
            SUBSCRIPTION_KIND: kind,
            EVENT_NAMES: _names(events),
            **{k: v for k, v in apply_attributes(events, False).items() if k != REPLAY},
        },
    )

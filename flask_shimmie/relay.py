"""Relays: durable subscriptions that publish each event to a message broker through a sink.

``stack.relay("songs-to-nats", NatsJetStreamSink(...))`` registers a
subscription of kind ``relay``: it has a lease, a stored position, retries
and parking like a reactor, and it is listed, retried and reset the same way
(``flask shimmie subscriptions``, ``/admin/subscriptions``). What differs is
how it hands events over and what it does when that fails:

- Batches: while catching up it gives the sink up to a whole read of events
  at once (:data:`flask_shimmie.runner.BATCH_SIZE`), which the sink pipelines.
- The position advances only past what the broker confirmed. When a publish
  fails part way, :class:`~flask_shimmie.sinks.SinkError` names the first
  event that may not have reached the broker; the position is saved just
  before it, and the next try starts there. Events sent twice that way keep
  their message id (the ``event_id``), so the broker (JetStream) or the
  consumer (RabbitMQ) drops the copy.
- A broker that cannot be reached, times out, has no stream or binding for
  the subject yet, or says it is full, is an *outage*: the relay tries again
  with backoff (:data:`OUTAGE_DELAY` doubling up to :data:`OUTAGE_DELAY_MAX`)
  for as long as it lasts. ``max_attempts`` does not apply: an outage never
  parks, skips or stops anything; it only delays. The waiting does not hold
  up the other subscriptions of the process.
- An event the broker *refuses* for good (``SinkError.refused``: a message
  larger than the server or the stream takes, a routing key longer than AMQP
  carries) is tried ``max_attempts`` times with backoff, then parked (the
  default: the events after it go on, and ``subscriptions retry`` publishes it
  again once the limit is raised, after the ones that followed it) or, with
  ``on_failure="stop"``, the relay stops at it (state ``failed``) so that no
  consumer ever sees a later event before it.

PII: a message on a broker is out of reach of ``erase_pii``, so a relay
publishes PII fields with their placeholders (the values an erasure leaves,
``""``, ``0``...) unless it is built with ``with_pii=True``.

A sink that raises something other than :class:`~flask_shimmie.sinks.SinkError`
is treated as an outage too, from the first event of the batch: nothing is
counted as published that the sink did not confirm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .registry import Registry
from .sinks.base import Sink
from .subscriptions import Subscription, check_policy, check_subscription_name, event_names_of

#: Seconds before a relay tries a broker again after an outage; doubled for each further try.
OUTAGE_DELAY = 0.1
#: The longest pause between two tries during an outage.
OUTAGE_DELAY_MAX = 2.0


@dataclass(frozen=True)
class RelaySpec(Subscription):
    """A relay: the sink it publishes every event it takes to."""

    sink: Sink
    #: Whether PII values are merged into what is published (else the placeholders are).
    with_pii: bool = False

    def describe(self) -> str:
        return f"{self.name} (to {self.sink!r})"


def relay_spec(
    name: str,
    sink: Sink,
    *,
    events: Sequence[str] | None,
    start: str,
    max_attempts: int,
    on_failure: str,
    with_pii: bool = False,
) -> RelaySpec:
    """A validated :class:`RelaySpec`; ValueError (TypeError for ``sink``) says what is wrong."""
    what = f"relay {check_subscription_name(name)!r}"
    if not isinstance(sink, Sink):
        raise TypeError(
            f"{what} needs a sink such as NatsJetStreamSink(...) or RabbitMqSink(...), not {sink!r:.60}."
        )
    check_policy(what, start, max_attempts, on_failure)
    if not isinstance(with_pii, bool):
        raise ValueError(f"{what}: with_pii must be True or False, not {with_pii!r:.60}.")
    return RelaySpec(
        name, "relay", event_names_of(what, events), start, max_attempts, on_failure, sink, with_pii
    )


def close_sinks(registry: Registry) -> None:
    """Close the sink of every registered relay (its connection in this process; a publish reopens)."""
    for spec in registry.subscriptions:
        if isinstance(spec, RelaySpec):
            spec.sink.close()

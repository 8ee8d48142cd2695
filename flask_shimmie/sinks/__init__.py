"""Sinks: where a relay publishes events, on brokers other services read.

A sink has one job: :meth:`Sink.publish` hands a batch of events to its
broker and returns only once the broker confirmed every one of them (it
raises :class:`~flask_shimmie.sinks.SinkError` otherwise). Each message's id is the event's
``event_id``, so a broker or a consumer can drop a copy sent again after a
failure; its body is the event as JSON (:meth:`Event.to_json`).

:class:`NatsJetStreamSink` (``pip install "flask-shimmie[nats]"``) and
:class:`RabbitMqSink` (``pip install "flask-shimmie[rabbitmq]"``) import their
client library when one is built, never before, so importing this package
needs neither.
"""

from __future__ import annotations

from .base import Sink, SinkError, event_body
from .jetstream import NatsJetStreamSink
from .rabbitmq import RabbitMqSink
from .templates import SubjectTemplate

__all__ = ["NatsJetStreamSink", "RabbitMqSink", "Sink", "SinkError", "SubjectTemplate", "event_body"]

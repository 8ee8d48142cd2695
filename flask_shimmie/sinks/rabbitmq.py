"""Publishing events to RabbitMQ (``pip install "flask-shimmie[rabbitmq]"``, pika).

A pika ``BlockingConnection`` per process, one channel in publisher-confirm
mode. Every message is persistent (``delivery_mode=2``) and published
``mandatory``: the broker confirms it only once it is routed to a queue (and
written to disk for a durable queue), and a message no queue takes is returned
and counts as not confirmed, so a missing binding delays events instead of
dropping them. Each publish waits for its confirm, so messages reach the
exchange one after the other, in order.

The exchange: by default the sink checks that it exists (a passive declare)
and never changes it, since an exchange is shared infrastructure; with
``exchange_type="topic"`` (or another type) it declares it durable when
missing. The default exchange (``""``) always exists and routes by queue name.

A message larger than the broker's ``max_message_size`` is refused for good
(``SinkError.refused``): the broker closes the channel over it, and the next
publish opens another.

RabbitMQ does not deduplicate: ``message_id`` is the ``event_id``, and a
consumer that must see each event once drops a ``message_id`` it has already
handled (a batch is published again, whole or in part, after a failure).

Timeouts: connecting (TCP, then AMQP's handshake) is bounded by ``timeout``;
a connection the broker blocks (a resource alarm) is closed after
``timeout``; a broker that stops answering altogether is noticed by AMQP
heartbeats every ``timeout`` seconds, within about twice ``timeout`` plus 10 s
(pika checks for traffic every heartbeat + 5 s). pika answers heartbeats
only while it is called, so an idle sink's connection may have been closed
by the broker in between; a publish then reconnects first, sending nothing
twice.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from ..errors import ConfigurationError
from ..events import Event
from ..storage.process import ProcessLocal
from .base import Sink, SinkError, describe, event_body, import_client
from .templates import SubjectTemplate

logger = logging.getLogger(__name__)

#: The longest routing key AMQP carries (bytes of UTF-8).
MAX_ROUTING_KEY = 255
#: The AMQP reply code of a broker that will never take a message as it is (RabbitMQ: larger
#: than its ``max_message_size``, 128 MiB by default).
PRECONDITION_FAILED = 406


@dataclass
class _Connection:
    """What one process holds for a sink: the blocking connection and its confirming channel."""

    connection: Any = None
    channel: Any = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class RabbitMqSink(Sink):
    """Publish events to a RabbitMQ exchange, routing keys built from ``routing_key`` (a template).

    ``url`` is an AMQP URL (``amqp://guest:guest@127.0.0.1:5672/%2F``).
    ``exchange_type`` (``"topic"``, ``"direct"``, ...) declares the exchange
    when missing; without it the exchange must exist. ``timeout`` bounds
    connecting, a blocked connection and (through heartbeats) a broker that
    stops answering; a ``heartbeat=`` in the URL wins.

    Raises :class:`ImportError` naming the extra when pika is missing, and
    :class:`~flask_shimmie.ConfigurationError` for a bad template.
    """

    def __init__(
        self,
        url: str,
        exchange: str,
        routing_key: str,
        *,
        exchange_type: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        self._pika: ModuleType = import_client("pika", "pika", "rabbitmq", "RabbitMqSink")
        self._pika_errors: ModuleType = import_client("pika.exceptions", "pika", "rabbitmq", "RabbitMqSink")
        if not isinstance(exchange, str):
            raise ConfigurationError(
                f"RabbitMqSink exchange must be a name ('' for the default), not {exchange!r}."
            )
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
            raise ConfigurationError(f"RabbitMqSink timeout = {timeout!r} must be seconds > 0.")
        self.routing_key = SubjectTemplate(routing_key, "routing key")
        self.exchange = exchange
        self.exchange_type = exchange_type
        self.timeout = float(timeout)
        try:
            self._parameters = self._pika.URLParameters(url)
        except Exception as error:
            raise ConfigurationError(
                f"RabbitMqSink URL {url!r} is not an AMQP URL: {describe(error)}"
            ) from None
        self.url = url
        self._parameters.socket_timeout = self.timeout
        self._parameters.stack_timeout = self.timeout
        self._parameters.blocked_connection_timeout = self.timeout
        self._parameters.connection_attempts = 1
        if "heartbeat=" not in url:
            self._parameters.heartbeat = max(1, math.ceil(self.timeout))
        self._process: ProcessLocal[_Connection] = ProcessLocal(_Connection, lambda _inherited: None)

    def __repr__(self) -> str:
        return f"RabbitMqSink({self._parameters.host!r}, {self.exchange!r}, {self.routing_key.template!r})"

    def publish(self, events: Sequence[Event]) -> None:
        if not events:
            return
        messages = []
        for event in events:
            key = self.routing_key.render(event)
            if len(key.encode()) > MAX_ROUTING_KEY:
                raise SinkError(
                    f"The routing key for event {event.sequence_num} is longer than {MAX_ROUTING_KEY} bytes "
                    f"({key[:60]!r}...). Nothing of this batch was sent.",
                    event,
                    refused=True,
                )
            messages.append((event, key, event_body(event)))
        held = self._process.get()
        with held.lock:
            channel = self._channel(held)
            errors = self._pika_errors
            for event, key, body in messages:
                try:
                    channel.basic_publish(
                        self.exchange, key, body, properties=self._properties(event), mandatory=True
                    )
                except errors.UnroutableError as error:
                    raise SinkError(
                        f"RabbitMQ returned event {event.sequence_num} ({event.event_id}): no queue is bound "
                        f"to exchange {self.exchange!r} for routing key {key!r}.",
                        event,
                    ) from error
                except errors.NackError as error:
                    raise SinkError(
                        f"RabbitMQ refused event {event.sequence_num} ({event.event_id}) on {key!r}.", event
                    ) from error
                except errors.ChannelClosedByBroker as error:
                    # The broker closes the channel on a message it will never take (406: larger
                    # than its max_message_size); a later publish opens a new one.
                    self._drop(held)
                    raise SinkError(
                        f"RabbitMQ closed the channel over event {event.sequence_num} ({event.event_id}) "
                        f"on {key!r}: {describe(error)}",
                        event,
                        refused=error.reply_code == PRECONDITION_FAILED,
                    ) from error
                except Exception as error:
                    self._drop(held)
                    raise SinkError(
                        f"RabbitMQ at {self._parameters.host}:{self._parameters.port} did not confirm event "
                        f"{event.sequence_num} ({event.event_id}): {describe(error)}",
                        event,
                    ) from error

    def _properties(self, event: Event) -> Any:
        return self._pika.BasicProperties(
            message_id=event.event_id,
            content_type="application/json",
            delivery_mode=2,
            type=event.event_name,
            timestamp=int(event.recorded_at.timestamp()),
            headers={"sequence_num": event.sequence_num, "stream_id": event.stream_id},
        )

    # -- the connection -----------------------------------------------------------

    def _channel(self, held: _Connection) -> Any:
        """An open confirming channel: the one held, if the broker did not close it meanwhile."""
        if held.channel is not None and held.channel.is_open:
            try:
                # Answers the heartbeats pika could not while idle, and finds a connection
                # the broker closed meanwhile before anything is sent on it.
                held.connection.process_data_events(time_limit=0)
            except Exception as error:
                logger.debug("The idle RabbitMQ connection was lost (%s); reconnecting", describe(error))
                self._drop(held)
            else:
                if held.channel.is_open:
                    return held.channel
                self._drop(held)
        self._drop(held)
        try:
            held.connection = self._pika.BlockingConnection(self._parameters)
            channel = held.connection.channel()
            channel.confirm_delivery()
            if self.exchange:
                if self.exchange_type is None:
                    channel.exchange_declare(self.exchange, passive=True)
                else:
                    channel.exchange_declare(self.exchange, exchange_type=self.exchange_type, durable=True)
        except self._pika_errors.ChannelClosedByBroker as error:
            self._drop(held)
            if error.reply_code == 404:
                raise SinkError(
                    f"RabbitMQ has no exchange {self.exchange!r}: declare it, or build the sink with "
                    "exchange_type='topic' (or another type) to have it declared."
                ) from error
            raise SinkError(f"RabbitMQ refused exchange {self.exchange!r}: {describe(error)}") from error
        except Exception as error:
            self._drop(held)
            raise SinkError(
                f"Cannot connect to RabbitMQ at {self._parameters.host}:{self._parameters.port}: "
                f"{describe(error)}"
            ) from error
        held.channel = channel
        return channel

    def _drop(self, held: _Connection) -> None:
        connection, held.connection, held.channel = held.connection, None, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except Exception as error:  # it is being abandoned anyway
                logger.debug("Closing a RabbitMQ connection failed: %s", describe(error))

    def close(self) -> None:
        held = self._process.pop()
        if held is not None:
            with held.lock:
                self._drop(held)

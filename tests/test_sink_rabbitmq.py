"""RabbitMqSink against a real RabbitMQ server (``$SHIMMIE_TEST_RABBITMQ_URL``).

Each test gets a topic exchange and a queue of its own (bound to ``<prefix>.#``, deleted
afterwards), and reads the queue back with pika, as a consumer would: routing keys, message
properties, bodies, order. RabbitMQ does not deduplicate, so the dedupe tests show what a
consumer that drops a ``message_id`` it has seen ends up with.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pytest

from flask_shimmie import Event
from flask_shimmie.sinks import RabbitMqSink, SinkError
from tests.brokers import SilentServer, TcpProxy, cut_while_publishing, refused_port, require_rabbitmq, via
from tests.helpers import slow_runs_enabled

pytestmark = pytest.mark.rabbitmq


def make_events(count: int, *, start: int = 1, names: tuple[str, ...] = ("CREATED",)) -> list[Event]:
    now = datetime.now(timezone.utc)
    return [
        Event(
            n, f"song-{n % 3}", n, str(uuid.UUID(int=n + (9 << 64))), names[n % len(names)], {"n": n}, {}, now
        )
        for n in range(start, start + count)
    ]


@dataclass(frozen=True)
class Delivered:
    """One message as a consumer gets it."""

    routing_key: str
    message_id: str
    properties: Any
    body: dict[str, Any]


@dataclass
class Place:
    """An exchange and a queue of this test's own."""

    url: str
    exchange: str
    queue: str
    prefix: str

    def sink(self, routing_key: str = "{event_name}", **options: Any) -> RabbitMqSink:
        url = options.pop("url", self.url)
        return RabbitMqSink(
            url, options.pop("exchange", self.exchange), f"{self.prefix}.{routing_key}", **options
        )

    def channel(self) -> Any:
        import pika

        return pika.BlockingConnection(pika.URLParameters(self.url)).channel()

    def drain(self) -> list[Delivered]:
        """Every message in the queue, in order (they are removed)."""
        channel = self.channel()
        found: list[Delivered] = []
        try:
            while True:
                method, properties, body = channel.basic_get(self.queue, auto_ack=True)
                if method is None:
                    return found
                found.append(
                    Delivered(method.routing_key, properties.message_id, properties, json.loads(body))
                )
        finally:
            channel.connection.close()

    def count(self) -> int:
        channel = self.channel()
        try:
            return int(channel.queue_declare(self.queue, passive=True).method.message_count)
        finally:
            channel.connection.close()


@pytest.fixture
def place() -> Iterator[Place]:
    url = require_rabbitmq()
    tag = uuid.uuid4().hex[:10]
    found = Place(url, f"shimmie-test-{tag}", f"shimmie-test-{tag}", f"t{tag}")
    channel = found.channel()
    channel.exchange_declare(found.exchange, exchange_type="topic", durable=True)
    channel.queue_declare(found.queue, durable=True)
    channel.queue_bind(found.queue, found.exchange, routing_key=f"{found.prefix}.#")
    yield found
    channel.queue_delete(found.queue)
    channel.exchange_delete(found.exchange)
    channel.connection.close()


def dedupe(delivered: list[Delivered]) -> list[Delivered]:
    """What a consumer keeps that drops a message_id it has already handled."""
    seen: set[str] = set()
    kept = []
    for message in delivered:
        if message.message_id not in seen:
            seen.add(message.message_id)
            kept.append(message)
    return kept


def test_publish_returns_once_every_event_is_confirmed_and_queued(place: Place) -> None:
    events = make_events(100, names=("CREATED", "RENAMED"))
    with place.sink() as sink:
        sink.publish(events)
    delivered = place.drain()  # no waiting: every publish was confirmed
    assert [m.body for m in delivered] == [event.to_json() for event in events]
    assert [m.message_id for m in delivered] == [event.event_id for event in events]
    assert [m.routing_key for m in delivered] == [f"{place.prefix}.{event.event_name}" for event in events]
    first = delivered[0].properties
    assert (first.delivery_mode, first.content_type, first.type) == (
        2,
        "application/json",
        events[0].event_name,
    )
    assert first.headers == {"sequence_num": 1, "stream_id": "song-1"}


def test_a_consumer_dropping_known_message_ids_sees_a_republished_batch_once(place: Place) -> None:
    events = make_events(30)
    with place.sink() as sink:
        sink.publish(events)
        sink.publish(events[20:] + make_events(10, start=31))  # a retry overlapping new events
    delivered = place.drain()
    assert len(delivered) == 50  # RabbitMQ keeps the copies...
    ids = [m.message_id for m in dedupe(delivered)]
    assert ids == [event.event_id for event in make_events(40)]  # ...the message ids tell them apart


def test_a_message_no_queue_takes_is_not_confirmed_and_nothing_after_it_is_sent(place: Place) -> None:
    events = make_events(4, names=("CREATED", "DELETED"))  # 1 DELETED, 2 CREATED, 3 DELETED, 4 CREATED
    other = f"x{place.prefix}"
    channel = place.channel()
    channel.queue_bind(place.queue, place.exchange, routing_key=f"{other}.CREATED")  # no DELETED
    try:
        with RabbitMqSink(place.url, place.exchange, f"{other}.{{event_name}}") as sink:
            with pytest.raises(SinkError, match="no queue is bound") as raised:
                sink.publish(events[1:])  # 2 is routed; 3 is not; 4 must not be sent
            assert raised.value.event == events[2]
            assert not raised.value.refused  # a binding may be added: a relay waits for it
            assert [m.message_id for m in place.drain()] == [events[1].event_id]
            sink.publish(events[3:])  # the channel is still usable
    finally:
        channel.connection.close()
    assert [m.message_id for m in place.drain()] == [events[3].event_id]


def test_a_routing_key_longer_than_amqp_carries_is_refused_for_good_before_sending(place: Place) -> None:
    events = make_events(2)
    long = Event(3, "s" * 250, 1, str(uuid.uuid4()), "CREATED", {}, {}, events[0].recorded_at)
    with place.sink("{event_name}.{stream_id}") as sink:
        with pytest.raises(SinkError, match="longer than 255 bytes") as raised:
            sink.publish([*events, long])
    assert raised.value.event is long and raised.value.refused
    assert place.drain() == []  # nothing of the batch was sent


def test_a_message_over_the_brokers_size_limit_is_refused_for_good_and_the_sink_goes_on(place: Place) -> None:
    events = make_events(3)
    # RabbitMQ's default max_message_size is 128 MiB: the broker closes the channel over it.
    huge = Event(
        2, "song-2", 1, str(uuid.uuid4()), "CREATED", {"blob": "x" * (128 << 20)}, {}, events[0].recorded_at
    )
    with place.sink() as sink:
        with pytest.raises(SinkError, match="larger than") as raised:
            sink.publish([events[0], huge, events[2]])
        assert raised.value.event is huge and raised.value.refused
        assert [m.message_id for m in place.drain()] == [events[0].event_id]  # the one after was not sent
        sink.publish(events[2:])  # a new channel
    assert [m.message_id for m in place.drain()] == [events[2].event_id]


def test_the_exchange_must_exist_unless_a_type_is_given(place: Place) -> None:
    missing = f"{place.exchange}-missing"
    with place.sink(exchange=missing) as sink:
        with pytest.raises(SinkError, match="no exchange"):
            sink.publish(make_events(1))
    channel = place.channel()
    try:
        with place.sink(exchange=missing, exchange_type="topic") as declaring:
            with pytest.raises(SinkError, match="no queue is bound"):  # declared, but nothing bound yet
                declaring.publish(make_events(1))
            channel.exchange_declare(missing, passive=True)  # it exists now
    finally:
        channel.exchange_delete(missing)
        channel.connection.close()


def test_an_unreachable_broker_raises_promptly(place: Place) -> None:
    with place.sink(url=via(place.url, refused_port()), timeout=1) as refused:
        started = time.monotonic()
        with pytest.raises(SinkError, match="Cannot connect") as raised:
            refused.publish(make_events(1))
        assert time.monotonic() - started < 3
        assert not raised.value.refused  # an outage, not a refusal of the event
    with SilentServer() as silent, place.sink(url=via(place.url, silent.port), timeout=1) as hung:
        started = time.monotonic()
        with pytest.raises(SinkError, match="Cannot connect"):
            hung.publish(make_events(1))
        assert time.monotonic() - started < 5


def test_a_connection_cut_mid_batch_raises_and_the_next_publish_reconnects(place: Place) -> None:
    events = make_events(800)
    with TcpProxy(place.url) as proxy, place.sink(url=proxy.url(place.url), timeout=2) as sink:
        sink.publish(events[:10])
        failed_at = cut_while_publishing(proxy, sink, events[10:], place.count).event
        assert failed_at is not None and 20 < failed_at.sequence_num < len(events)
        sink.publish(events[failed_at.sequence_num - 1 :])  # what a relay does: from the first unconfirmed
    delivered = place.drain()
    assert proxy.accepted == 2
    assert [m.message_id for m in dedupe(delivered)] == [event.event_id for event in events]
    assert len(delivered) - len(events) <= 1  # at most the one whose confirm was lost is a copy


def test_a_connection_lost_while_idle_is_replaced_before_publishing(place: Place) -> None:
    with TcpProxy(place.url) as proxy, place.sink(url=proxy.url(place.url), timeout=2) as sink:
        sink.publish(make_events(1))
        proxy.cut()
        time.sleep(0.1)
        sink.publish(make_events(2, start=2))  # no error: nothing had been sent on the dead one
    assert [m.body["sequence_num"] for m in place.drain()] == [1, 2, 3]


@pytest.mark.slow
def test_a_stalled_broker_is_noticed_by_heartbeats(place: Place, pytestconfig: pytest.Config) -> None:
    if not slow_runs_enabled(pytestconfig):
        pytest.skip("takes 6 to 12 s (AMQP heartbeats): pass --run-slow (or SHIMMIE_RUN_SLOW=1) to run it")
    with TcpProxy(place.url) as proxy, place.sink(url=proxy.url(place.url), timeout=1) as sink:
        sink.publish(make_events(1))
        proxy.stall()
        started = time.monotonic()
        with pytest.raises(SinkError, match="did not confirm"):
            sink.publish(make_events(2, start=2))
        # pika checks for traffic every heartbeat + 5 s: a stall is noticed within two checks.
        assert time.monotonic() - started < 2 * (1 + 5) + 2
        proxy.flow()
        proxy.cut()
        sink.publish(make_events(2, start=2))
    assert [m.message_id for m in dedupe(place.drain())] == [e.event_id for e in make_events(3)]

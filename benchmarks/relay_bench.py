"""Scenario 8: a relay publishing a store's events to a broker, against the bare client publishing them.

Ours: a store of N events; a new ``stack.relay(name, sink)`` registered and run to the last event
by ``stack.run_subscriptions(name)`` in this thread: it reads the events from the store in batches,
decodes them, hands each batch to the sink, which publishes and waits for every confirm, and saves
the position after each. Theirs: the broker's own client publishing the very same messages
(subject or routing key, body, message id, headers built beforehand, not timed) with the same
confirms: nats-py ``js.publish`` in windows of :data:`~flask_shimmie.sinks.jetstream.PUBLISH_WINDOW`
awaited together (what the sink does); pika ``basic_publish`` on a confirming channel, persistent,
``mandatory``, one confirm awaited per message (what the sink does). Both sides publish to a fresh
destination of their own each run (a new JetStream stream, a new exchange and queue), since
JetStream would drop a message id it stored less than two minutes ago; every run checks that the
destination holds N messages afterwards.
"""

from __future__ import annotations

import asyncio
import importlib
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from flask_shimmie import Event
from flask_shimmie.sinks import NatsJetStreamSink, RabbitMqSink, Sink
from flask_shimmie.sinks.base import event_body
from flask_shimmie.sinks.jetstream import MSG_ID_HEADER, PUBLISH_WINDOW

from .harness import Progress, Row, Settings, alternate, compare_row, skipped_row
from .shimmie_side import OurApp, fill
from .shimmie_subscriptions import make_quiet_app

NATS_URL = "nats://127.0.0.1:4222"
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
SCENARIOS = {"nats": "8n relay → JetStream", "rabbitmq": "8r relay → RabbitMQ"}
#: The subject / routing key template of both sides (after a prefix of the run's own).
TEMPLATE = "{event_name}"
#: The relay aims at this fraction of the bare client's rate.
TARGET_RATIO = 0.5


def broker_unavailable(kind: str, url: str) -> str | None:
    """Why the broker ``kind`` cannot be used here, or ``None``."""
    import socket
    from urllib.parse import urlsplit

    module = "nats" if kind == "nats" else "pika"
    try:
        __import__(module)
    except ImportError:
        return f'{module} is not installed (pip install -e ".[{"nats" if kind == "nats" else "rabbitmq"}]")'
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), timeout=2).close()
    except OSError as error:
        return f"{kind} does not answer at {parts.hostname}:{parts.port} ({error})"
    return None


# -- destinations -------------------------------------------------------------------------------


class NatsPlace:
    """A JetStream stream of its own (``prefix.>``), deleted by :meth:`drop`."""

    def __init__(self, url: str) -> None:
        tag = uuid.uuid4().hex[:10]
        self.url, self.stream, self.prefix = url, f"BENCH_{tag}", f"bench{tag}"

    def create(self) -> None:
        asyncio.run(self._call(lambda js: js.add_stream(name=self.stream, subjects=[f"{self.prefix}.>"])))

    def count(self) -> int:
        async def messages(js: Any) -> int:
            return int((await js.stream_info(self.stream)).state.messages)

        found: int = asyncio.run(self._call(messages))
        return found

    def drop(self) -> None:
        with suppress(Exception):
            asyncio.run(self._call(lambda js: js.delete_stream(self.stream)))

    async def _call(self, work: Callable[[Any], Any]) -> Any:
        import nats

        client = await nats.connect(self.url)
        try:
            return await work(client.jetstream())
        finally:
            await client.close()

    def sink(self) -> Sink:
        return NatsJetStreamSink(self.url, f"{self.prefix}.{TEMPLATE}", stream=self.stream)


class RabbitPlace:
    """A topic exchange and a durable queue bound to it, deleted by :meth:`drop`."""

    def __init__(self, url: str) -> None:
        tag = uuid.uuid4().hex[:10]
        self.url, self.exchange, self.prefix = url, f"bench-{tag}", f"bench{tag}"

    @contextmanager
    def channel(self) -> Iterator[Any]:
        pika = _pika()
        connection = pika.BlockingConnection(pika.URLParameters(self.url))
        try:
            yield connection.channel()
        finally:
            connection.close()

    def create(self) -> None:
        with self.channel() as channel:
            channel.exchange_declare(self.exchange, exchange_type="topic", durable=True)
            channel.queue_declare(self.exchange, durable=True)
            channel.queue_bind(self.exchange, self.exchange, routing_key=f"{self.prefix}.#")

    def count(self) -> int:
        with self.channel() as channel:
            return int(channel.queue_declare(self.exchange, passive=True).method.message_count)

    def drop(self) -> None:
        with suppress(Exception), self.channel() as channel:
            channel.queue_delete(self.exchange)
            channel.exchange_delete(self.exchange)

    def sink(self) -> Sink:
        return RabbitMqSink(self.url, self.exchange, f"{self.prefix}.{TEMPLATE}")


def new_place(kind: str, url: str) -> NatsPlace | RabbitPlace:
    place = NatsPlace(url) if kind == "nats" else RabbitPlace(url)
    place.create()
    return place


# -- the two sides -----------------------------------------------------------------------------------


def relay_function(ours: OurApp, kind: str, url: str, total: int) -> Callable[[], float]:
    """Ours: a new relay on the store of ``total`` events, run to the last one; events per second."""

    def measure() -> float:
        place = new_place(kind, url)
        sink = place.sink()
        name = f"bench-relay-{uuid.uuid4().hex[:8]}"
        try:
            with ours.app.app_context():
                start = time.perf_counter()
                ours.stack.relay(name, sink)
                handled = ours.stack.run_subscriptions(name)
                seconds = time.perf_counter() - start
            stored = place.count()
        finally:
            sink.close()
            place.drop()
        if handled != {name: total} or stored != total:
            raise RuntimeError(f"the relay published {handled}; the broker holds {stored}, expected {total}")
        return total / seconds

    return measure


def bare_function(events: list[Event], kind: str, url: str) -> Callable[[], float]:
    """Theirs: the bare client publishing the same messages with confirms; events per second."""

    def measure() -> float:
        place = new_place(kind, url)
        try:
            if isinstance(place, NatsPlace):
                messages = [
                    (f"{place.prefix}.{e.event_name}", event_body(e), {MSG_ID_HEADER: e.event_id})
                    for e in events
                ]
                seconds = asyncio.run(_bare_nats(url, place.stream, messages))
            else:
                seconds = _bare_rabbitmq(place, events)
            stored = place.count()
        finally:
            place.drop()
        if stored != len(events):
            raise RuntimeError(f"the bare client's broker holds {stored} messages, expected {len(events)}")
        return len(events) / seconds

    return measure


async def _bare_nats(url: str, stream: str, messages: list[tuple[str, bytes, dict[str, str]]]) -> float:
    import nats

    start = time.perf_counter()
    client = await nats.connect(url)
    try:
        js = client.jetstream()
        for at in range(0, len(messages), PUBLISH_WINDOW):
            window = messages[at : at + PUBLISH_WINDOW]
            await asyncio.gather(
                *(
                    js.publish(subject, body, stream=stream, headers=headers)
                    for subject, body, headers in window
                )
            )
        return time.perf_counter() - start
    finally:
        await client.close()


def _pika() -> Any:
    """pika, untyped (it ships no type information)."""
    return importlib.import_module("pika")


def _bare_rabbitmq(place: RabbitPlace, events: list[Event]) -> float:
    pika = _pika()

    messages = [
        (
            f"{place.prefix}.{e.event_name}",
            event_body(e),
            pika.BasicProperties(
                message_id=e.event_id,
                content_type="application/json",
                delivery_mode=2,
                type=e.event_name,
                headers={"sequence_num": e.sequence_num, "stream_id": e.stream_id},
            ),
        )
        for e in events
    ]
    start = time.perf_counter()
    connection = pika.BlockingConnection(pika.URLParameters(place.url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for key, body, properties in messages:
            channel.basic_publish(place.exchange, key, body, properties=properties, mandatory=True)
        return time.perf_counter() - start
    finally:
        connection.close()


# -- the rows ------------------------------------------------------------------------------------------


def relay_rows(
    backend: str, new_url: Callable[[str], str], settings: Settings, progress: Progress
) -> list[Row]:
    """Scenario 8 to JetStream and to RabbitMQ; ours on a fresh store of ``backend`` (``new_url(label)``)."""
    rows = []
    for kind, broker_url, total in (
        ("nats", NATS_URL, settings.relay_events),
        ("rabbitmq", RABBITMQ_URL, settings.relay_rabbitmq_events),
    ):
        scenario = SCENARIOS[kind]
        reason = broker_unavailable(kind, broker_url)
        if reason is not None:
            rows.append(skipped_row(scenario, backend, reason))
            continue
        progress(f"{backend}: {scenario}, {total:,} events, {settings.relay_repeats} runs per side")
        ours = make_quiet_app(new_url(f"relay-{kind}"))
        try:
            fill(ours, total)
            with ours.app.app_context():
                events = ours.stack.read_events(0)
            ours_run = relay_function(ours, kind, broker_url, total)
            theirs_run = bare_function(events, kind, broker_url)
            samples = alternate([("ours", ours_run), ("theirs", theirs_run)], settings.relay_repeats)
        finally:
            ours.close()
        row = compare_row(
            scenario,
            backend,
            samples,
            minimum_ratio=TARGET_RATIO,
            notes=_notes(kind, total, settings),
        )
        row.theirs = row.theirs.replace("ev/s", "msg/s")
        progress(f"  ours {row.ours}, bare client {row.theirs}")
        rows.append(row)
    return rows


def _notes(kind: str, total: int, settings: Settings) -> str:
    client = "nats-py" if kind == "nats" else "pika"
    confirms = "windows of 256 acks awaited together" if kind == "nats" else "one confirm awaited per message"
    return (
        f"{total:,} stored events; ours: a new relay run by stack.run_subscriptions() (store reads of 500, "
        f"decode, sink.publish per batch, the position saved after each); theirs: the bare {client} client "
        f"publishing the same prepared messages with the same confirms ({confirms}); a fresh destination per "
        f"run; median of {settings.relay_repeats} runs per side, alternating"
    )

"""NatsJetStreamSink against a real NATS server with JetStream (``$SHIMMIE_TEST_NATS_URL``).

Each test gets a stream and a subject prefix of its own, deleted afterwards. What the broker
stored is read back with nats-py, message by message (``get_msg``), so the tests see exactly what a
consumer of the stream would: subjects, ``Nats-Msg-Id`` headers, bodies, order.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pytest

from flask_shimmie import Event
from flask_shimmie.sinks import NatsJetStreamSink, SinkError
from tests.brokers import SilentServer, TcpProxy, cut_while_publishing, refused_port, require_nats, via

pytestmark = pytest.mark.nats


def make_events(count: int, *, start: int = 1, names: tuple[str, ...] = ("CREATED",)) -> list[Event]:
    now = datetime.now(timezone.utc)
    return [
        Event(
            n, f"song-{n % 3}", n, str(uuid.UUID(int=n + (7 << 64))), names[n % len(names)], {"n": n}, {}, now
        )
        for n in range(start, start + count)
    ]


@dataclass(frozen=True)
class Stored:
    """One message as JetStream holds it."""

    subject: str
    msg_id: str
    body: dict[str, Any]


async def _read_stream(url: str, stream: str) -> list[Stored]:
    import nats

    client = await nats.connect(url)
    try:
        jetstream = client.jetstream()
        info = await jetstream.stream_info(stream)
        found = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            message = await jetstream.get_msg(stream, seq)
            found.append(
                Stored(
                    message.subject or "",
                    (message.headers or {}).get("Nats-Msg-Id", ""),
                    json.loads(message.data or b"null"),
                )
            )
        return found
    finally:
        await client.close()


async def _count(url: str, stream: str) -> int:
    import nats
    from nats.js.errors import NotFoundError

    client = await nats.connect(url)
    try:
        try:
            info = await client.jetstream().stream_info(stream)
        except NotFoundError:
            return 0
        return int(info.state.messages)
    finally:
        await client.close()


async def _delete_stream(url: str, stream: str) -> None:
    import nats
    from nats.js.errors import NotFoundError

    client = await nats.connect(url)
    try:
        try:
            await client.jetstream().delete_stream(stream)
        except NotFoundError:
            pass
    finally:
        await client.close()


@dataclass
class Place:
    """A stream and a subject prefix of this test's own."""

    url: str
    stream: str
    prefix: str

    def stored(self) -> list[Stored]:
        return asyncio.run(_read_stream(self.url, self.stream))

    def count(self) -> int:
        return asyncio.run(_count(self.url, self.stream))

    def sink(self, subject: str = "{event_name}", **options: Any) -> NatsJetStreamSink:
        options.setdefault("stream", self.stream)
        url = options.pop("url", self.url)
        return NatsJetStreamSink(url, f"{self.prefix}.{subject}", **options)


@pytest.fixture
def place() -> Iterator[Place]:
    url = require_nats()
    tag = uuid.uuid4().hex[:10]
    found = Place(url, f"T_{tag}", f"t{tag}")
    yield found
    asyncio.run(_delete_stream(url, found.stream))


def test_publish_returns_once_every_event_is_stored_in_order(place: Place) -> None:
    events = make_events(300, names=("CREATED", "RENAMED"))
    with place.sink() as sink:
        sink.publish(events)
        stored = place.stored()  # no waiting: publish returned after the acknowledgements
    assert [m.body for m in stored] == [event.to_json() for event in events]
    assert [m.msg_id for m in stored] == [event.event_id for event in events]
    assert [m.subject for m in stored] == [f"{place.prefix}.{event.event_name}" for event in events]


def test_the_broker_drops_a_batch_published_again(place: Place) -> None:
    events = make_events(40)
    with place.sink() as sink:
        sink.publish(events)
        sink.publish(events)  # a relay retrying a batch whose acknowledgements it lost
        sink.publish(events[30:] + make_events(10, start=41))  # a retry that overlaps new events
        stored = place.stored()
    assert [m.msg_id for m in stored] == [event.event_id for event in make_events(50)]


def test_the_stream_is_created_for_the_templates_subjects(place: Place) -> None:
    events = make_events(3)
    with place.sink("{stream_id}.{event_name}") as sink:
        sink.publish(events)
    assert [m.subject for m in place.stored()] == [f"{place.prefix}.{e.stream_id}.CREATED" for e in events]
    with place.sink("{stream_id}.{event_name}") as again:  # the stream exists now, and covers it
        again.publish(make_events(1, start=4))
    assert len(place.stored()) == 4


def test_an_existing_stream_that_does_not_cover_the_subjects_is_an_error(place: Place) -> None:
    with place.sink("{event_name}") as sink:
        sink.publish(make_events(1))
    with place.sink("{stream_id}.{event_name}") as other:
        with pytest.raises(SinkError, match="do not cover"):
            other.publish(make_events(1, start=2))
    assert len(place.stored()) == 1


def test_without_a_stream_covering_the_subject_publish_raises(place: Place) -> None:
    with place.sink(stream=None) as sink:
        started = time.monotonic()
        with pytest.raises(SinkError, match="did not store event 1") as raised:
            sink.publish(make_events(2))
        assert time.monotonic() - started < 3
    assert not raised.value.refused  # a stream may be added: a relay waits for it


def test_an_unreachable_broker_raises_promptly(place: Place) -> None:
    refused = place.sink(url=via(place.url, refused_port()), timeout=1)
    started = time.monotonic()
    with pytest.raises(SinkError, match="Cannot connect") as raised:
        refused.publish(make_events(1))
    assert time.monotonic() - started < 3
    assert not raised.value.refused  # an outage, not a refusal of the event
    with SilentServer() as silent:  # accepts, then never answers
        hung = place.sink(url=via(place.url, silent.port), timeout=1)
        started = time.monotonic()
        with pytest.raises(SinkError, match="Cannot connect"):
            hung.publish(make_events(1))
        assert time.monotonic() - started < 5
    refused.close()
    hung.close()


def test_a_connection_cut_mid_batch_raises_and_a_republish_stores_each_event_once(place: Place) -> None:
    events = make_events(4000)
    with TcpProxy(place.url) as proxy, place.sink(url=proxy.url(place.url), timeout=2) as sink:
        sink.publish(events[:10])
        failed_at = cut_while_publishing(proxy, sink, events[10:], place.count).event
        assert failed_at is not None
        partial = [m.msg_id for m in place.stored()]
        assert 10 < len(partial) < len(events), "the cut came too late (or too early) to prove anything"
        # Everything before the event to retry from is stored, in order.
        before = [event.event_id for event in events[: failed_at.sequence_num - 1]]
        assert partial[: len(before)] == before
        sink.publish(events[failed_at.sequence_num - 1 :])  # a relay's retry: the next publish reconnects
        stored = place.stored()
    assert proxy.accepted == 2
    assert [m.msg_id for m in stored] == [event.event_id for event in events]


def test_a_stalled_connection_raises_within_the_timeout(place: Place) -> None:
    with TcpProxy(place.url) as proxy, place.sink(url=proxy.url(place.url), timeout=1) as sink:
        sink.publish(make_events(1))
        proxy.stall()
        started = time.monotonic()
        with pytest.raises(SinkError, match="did not"):
            sink.publish(make_events(5, start=2))
        assert time.monotonic() - started < 4
        proxy.flow()
        proxy.cut()
        sink.publish(make_events(5, start=2))
    assert [m.body["sequence_num"] for m in place.stored()] == [1, 2, 3, 4, 5, 6]


def test_an_event_too_large_for_the_server_fails_before_anything_is_sent(place: Place) -> None:
    events = make_events(3)
    huge = Event(4, "s", 1, str(uuid.uuid4()), "HUGE", {"blob": "x" * 2_000_000}, {}, events[0].recorded_at)
    with place.sink() as sink:
        sink.publish(events[:1])
        with pytest.raises(SinkError, match="Nothing of this batch was sent") as raised:
            sink.publish([*events[1:], huge])
        assert raised.value.event is huge
        assert raised.value.refused  # no retry can change it
    assert len(place.stored()) == 1


async def _add_stream(url: str, stream: str, subjects: list[str], **config: Any) -> None:
    import nats

    client = await nats.connect(url)
    try:
        await client.jetstream().add_stream(name=stream, subjects=subjects, **config)
    finally:
        await client.close()


def test_an_event_larger_than_the_stream_takes_is_refused_for_good_and_the_others_are_stored(
    place: Place,
) -> None:
    asyncio.run(_add_stream(place.url, place.stream, [f"{place.prefix}.>"], max_msg_size=600))
    events = make_events(3)
    big = Event(2, "s", 2, str(uuid.uuid4()), "BIG", {"blob": "x" * 1000}, {}, events[0].recorded_at)
    with place.sink() as sink:
        with pytest.raises(SinkError, match="did not store event 2") as raised:
            sink.publish([events[0], big, events[2]])
    assert raised.value.event is big and raised.value.refused
    assert [m.body["sequence_num"] for m in place.stored()][:1] == [1]

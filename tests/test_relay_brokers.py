"""Relays to the real brokers (NATS JetStream, RabbitMQ): every event arrives once, in order.

What a consumer sees is read back from the broker: the JetStream stream message by message, or the
RabbitMQ queue bound to the exchange. The consumer keeps the first message of each message id (a
relay sends a message again after a failure; JetStream drops such copies itself, a RabbitMQ consumer
drops them by ``message_id``), and what it keeps must be every stored event, once, in commit order
(so in order per subject too), each under the subject its template makes.

- in this process, on every backend: catching up, then live;
- in this process, on every backend: the connection cut several times and the broker away for a
  while (a :class:`~tests.brokers.TcpProxy` between relay and broker), with a relay that would stop
  after two failed tries if an outage counted as a failure;
- across processes, on SQLite and PostgreSQL: the relaying process SIGKILLed while it publishes a
  large backlog; a second process takes over and goes on from the stored position;
- an event larger than the JetStream stream takes: parked after its tries, the others published.

The brokers come from ``$SHIMMIE_TEST_NATS_URL`` / ``$SHIMMIE_TEST_RABBITMQ_URL`` (by default on
127.0.0.1); a test whose broker does not answer is skipped, and fails in CI (``$CI``).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_shimmie import Event, NewEvent, ShimmieStack
from flask_shimmie import runner as runner_module
from flask_shimmie.sinks import NatsJetStreamSink, RabbitMqSink, Sink
from flask_shimmie.state import AppState
from flask_shimmie.storage import event_store_from_url
from flask_shimmie.storage.interface import AppendBatch, EventStore, PendingEvent
from tests.backends import BACKENDS, DURABLE_BACKENDS, fresh_store_url, require_backend
from tests.brokers import TcpProxy, require_nats, require_rabbitmq
from tests.relay_app import RELAY
from tests.serving import SubscriptionsRun
from tests.test_sink_nats import _add_stream, _delete_stream, _read_stream

#: The subject / routing key template of every relay here (after the test's own prefix).
TEMPLATE = "{event_name}.{stream_id}"
#: The takeover setting of the relay processes (seconds).
TAKEOVER = 1.0
#: Seconds a relay gets to catch up with the last stored event.
CATCH_UP_TIMEOUT = 60.0


@dataclass(frozen=True)
class Received:
    """One message as a consumer gets it."""

    subject: str
    message_id: str
    body: dict[str, Any]


@dataclass
class Broker:
    """A destination of this test's own on one broker: a JetStream stream, or an exchange and a queue."""

    kind: str
    url: str
    destination: str
    prefix: str
    queue: str = ""

    @property
    def template(self) -> str:
        return f"{self.prefix}.{TEMPLATE}"

    def subject_of(self, event: Event) -> str:
        return f"{self.prefix}.{event.event_name}.{event.stream_id}"

    def sink(self, url: str | None = None, timeout: float = 2.0) -> Sink:
        if self.kind == "nats":
            return NatsJetStreamSink(url or self.url, self.template, stream=self.destination, timeout=timeout)
        return RabbitMqSink(url or self.url, self.destination, self.template, timeout=timeout)

    def environment(self) -> dict[str, str]:
        """The ``RELAY_*`` variables :mod:`tests.relay_app` builds the same sink from."""
        return {
            "RELAY_BROKER": self.kind,
            "RELAY_BROKER_URL": self.url,
            "RELAY_DESTINATION": self.destination,
            "RELAY_SUBJECT": self.template,
        }

    def received(self) -> list[Received]:
        """Every message the broker holds for a consumer, in order."""
        if self.kind == "nats":
            return [
                Received(m.subject, m.msg_id, m.body)
                for m in asyncio.run(_read_stream(self.url, self.destination))
            ]
        import pika

        connection = pika.BlockingConnection(pika.URLParameters(self.url))
        channel = connection.channel()
        found = []
        try:
            while True:
                method, properties, body = channel.basic_get(self.queue, auto_ack=True)
                if method is None:
                    return found
                found.append(Received(method.routing_key, properties.message_id, json.loads(body)))
        finally:
            connection.close()


def _nats() -> Iterator[Broker]:
    url = require_nats()
    tag = uuid.uuid4().hex[:10]
    broker = Broker("nats", url, f"RELAY_{tag}", f"r{tag}")
    yield broker
    asyncio.run(_delete_stream(url, broker.destination))


def _rabbitmq() -> Iterator[Broker]:
    import pika

    url = require_rabbitmq()
    tag = uuid.uuid4().hex[:10]
    broker = Broker("rabbitmq", url, f"shimmie-relay-{tag}", f"r{tag}", queue=f"shimmie-relay-{tag}")
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.exchange_declare(broker.destination, exchange_type="topic", durable=True)
    channel.queue_declare(broker.queue, durable=True)
    channel.queue_bind(broker.queue, broker.destination, routing_key=f"{broker.prefix}.#")
    try:
        yield broker
    finally:
        channel.queue_delete(broker.queue)
        channel.exchange_delete(broker.destination)
        connection.close()


@pytest.fixture(
    params=[
        pytest.param("nats", marks=pytest.mark.nats),
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
    ]
)
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    yield from (_nats() if request.param == "nats" else _rabbitmq())


def check_delivered(broker: Broker, events: list[Event]) -> int:
    """Assert a consumer deduping by message id gets each of ``events`` once, in order; return the copies."""
    received = broker.received()
    seen: set[str] = set()
    kept = []
    for message in received:
        if message.message_id not in seen:
            seen.add(message.message_id)
            kept.append(message)
    assert [m.message_id for m in kept] == [e.event_id for e in events], "an event missing, or out of order"
    assert [m.body["sequence_num"] for m in kept] == [e.sequence_num for e in events]
    assert [m.body["event_id"] for m in kept] == [m.message_id for m in kept]
    assert [m.subject for m in kept] == [broker.subject_of(e) for e in events]
    return len(received) - len(kept)


def wait_for(what: str, done: Callable[[], bool], timeout: float, logs: Callable[[], str] = str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s\n{logs()}")
        time.sleep(0.02)


# -- in this process ------------------------------------------------------------------------------


@dataclass
class Relaying:
    """An app on a fresh store whose background runner relays every event to ``sink``."""

    stack: ShimmieStack
    app: Flask

    @property
    def state(self) -> AppState:
        state: AppState = self.app.extensions["shimmie"]
        return state

    def position(self) -> int:
        info = self.state.runner.store.get(RELAY)
        return info.position if info is not None else 0

    def last(self) -> int:
        return self.state.event_store.last_sequence_num()

    def record(self, batches: int, size: int, pause: float = 0.0) -> None:
        with self.app.app_context():
            for batch in range(batches):
                self.stack.record_unchecked_events(
                    [
                        NewEvent(f"s{n % 4}", ("CREATED", "RENAMED")[n % 2], {"n": n, "b": batch})
                        for n in range(size)
                    ]
                )
                time.sleep(pause)

    def stored(self) -> list[Event]:
        with self.app.app_context():
            return self.stack.read_events(0)


@pytest.fixture
def relaying(tmp_path: Path) -> Iterator[Callable[..., Relaying]]:
    """Makes :class:`Relaying` apps on fresh stores of a backend; shuts them down and drops the stores."""
    with ExitStack() as cleanup:

        def make(backend: str, sink: Sink, **options: Any) -> Relaying:
            require_backend(backend)
            url = cleanup.enter_context(fresh_store_url(backend, tmp_path))
            stack = ShimmieStack()
            stack.relay(RELAY, sink, **options)
            app = Flask("relaying")
            app.config.update(SHIMMIE_EVENT_STORE=url, SHIMMIE_SUBSCRIPTION_TAKEOVER=TAKEOVER)
            stack.init_app(app)
            cleanup.callback(stack.shutdown, app)
            with app.app_context():
                stack.startup()  # not a testing app: the runner thread starts
            made = Relaying(stack, app)
            assert made.state.runner.running
            return made

        yield make


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_relay_catches_up_then_follows_live(
    broker: Broker, backend: str, relaying: Callable[..., Relaying]
) -> None:
    first = relaying(backend, broker.sink())
    first.record(2, 300)  # a backlog, handed over in batches
    wait_for("caught up", lambda: first.position() == first.last() == 600, CATCH_UP_TIMEOUT)
    first.record(20, 3, pause=0.01)  # then live
    wait_for("caught up", lambda: first.position() == first.last() == 660, CATCH_UP_TIMEOUT)

    copies = check_delivered(broker, first.stored())

    assert copies == 0  # nothing failed, so nothing was sent twice


@pytest.mark.parametrize("backend", BACKENDS)
def test_cut_connections_and_a_broker_away_delay_events_but_lose_and_double_none(
    broker: Broker, backend: str, relaying: Callable[..., Relaying]
) -> None:
    with TcpProxy(broker.url) as proxy:
        # Two tries, then stop: were an outage a failure, the relay would stop and never catch up.
        relay = relaying(
            backend, broker.sink(proxy.url(broker.url), timeout=1.0), max_attempts=2, on_failure="stop"
        )
        writer = threading.Thread(target=relay.record, args=(40, 15, 0.03))
        writer.start()
        wait_for("a first publish", lambda: relay.position() > 0, CATCH_UP_TIMEOUT)
        for _ in range(3):
            connections = proxy.accepted
            assert proxy.cut() >= 1  # the sink's connection went through the proxy
            wait_for("a new connection", lambda: proxy.accepted > connections, CATCH_UP_TIMEOUT)  # noqa: B023
        proxy.down()
        time.sleep(0.3)  # a publish confirmed just before the cut saves its position meanwhile
        away_at = relay.position()
        time.sleep(1.5)
        assert relay.position() == away_at  # nothing is confirmed while the broker is away
        proxy.up()
        writer.join(60)
        wait_for("caught up again", lambda: relay.position() == relay.last() == 600, CATCH_UP_TIMEOUT)
        info = relay.state.runner.store.get(RELAY)

    assert info is not None and info.state == "active"
    assert relay.state.runner.store.parked(RELAY) == []
    check_delivered(broker, relay.stored())


# -- across processes -------------------------------------------------------------------------------


def relay_process(url: str, broker: Broker, log: Path) -> SubscriptionsRun:
    """``flask --app tests.relay_app:create_app shimmie subscriptions run``, relaying to ``broker``."""
    return SubscriptionsRun("tests.relay_app:create_app", url, log, TAKEOVER, broker.environment())


def append_events(store: EventStore, count: int) -> None:
    """Write ``count`` events straight to the store in one transaction, as another process would."""
    pending = []
    for n in range(count):
        data = {"n": n}
        name = ("CREATED", "RENAMED")[n % 2]
        pending.append(PendingEvent(f"s{n % 5}", name, str(uuid.uuid4()), data, json.dumps(data), {}, "{}"))
    store.append(AppendBatch(tuple(pending)))


@pytest.mark.parametrize("backend", DURABLE_BACKENDS)
def test_a_relay_process_sigkilled_mid_backlog_is_taken_over_and_nothing_is_lost_or_doubled(
    broker: Broker, backend: str, tmp_path: Path
) -> None:
    require_backend(backend)
    with fresh_store_url(backend, tmp_path) as url:
        store = event_store_from_url(url)
        store.open()
        processes: list[SubscriptionsRun] = []

        def logs() -> str:
            return "\n".join(f"--- relay {p.pid} ---\n{p.log_tail()}" for p in processes if p.process)

        def holder() -> int | None:
            info = store.subscription_store().get(RELAY)
            return int(info.runner.split(":")[-2]) if info is not None and info.runner else None

        def position() -> int:
            info = store.subscription_store().get(RELAY)
            return info.position if info is not None else 0

        try:
            append_events(store, 50)
            first = relay_process(url, broker, tmp_path / "relay-0.log").start()
            processes.append(first)
            wait_for("the first process relays", lambda: position() == 50 and holder() == first.pid, 30, logs)
            second = relay_process(url, broker, tmp_path / "relay-1.log").start()
            processes.append(second)
            time.sleep(0.5)  # the second one is up, trying the lease in vain
            backlog = 4000 if broker.kind == "nats" else 800  # RabbitMQ confirms one at a time
            append_events(store, backlog)  # several batches to publish
            wait_for("the backlog's first batch", lambda: position() > 50, 30, logs)
            first.kill()
            killed_at = position()
            assert killed_at < 50 + backlog, "the kill came after the backlog was published"
            wait_for("the second process takes over", lambda: holder() == second.pid, TAKEOVER + 10, logs)
            append_events(store, 100)
            wait_for("caught up", lambda: position() == 150 + backlog, CATCH_UP_TIMEOUT, logs)
            assert second.terminate() == 0, logs()
            events = store.read(0, 10_000)
        finally:
            for process in processes:
                process.kill()
            store.close()

    copies = check_delivered(broker, events)
    # JetStream drops the copies of what the killed process sent but had not saved; a RabbitMQ
    # consumer gets them, and drops them by message_id.
    if broker.kind == "nats":
        assert copies == 0


# -- an event the broker refuses ----------------------------------------------------------------------


@pytest.fixture
def nats_broker() -> Iterator[Broker]:
    yield from _nats()


@pytest.mark.nats
def test_an_event_too_large_for_the_stream_is_parked_and_the_others_go_on(
    nats_broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner_module, "RETRY_DELAY", 0.001)
    broker = nats_broker
    asyncio.run(_add_stream(broker.url, broker.destination, [f"{broker.prefix}.>"], max_msg_size=1000))
    stack = ShimmieStack()
    stack.relay(RELAY, broker.sink(), max_attempts=2)
    app = Flask("relay_refused")
    app.config.update(TESTING=True, SHIMMIE_EVENT_STORE="memory://")
    stack.init_app(app)
    with app.app_context():
        small = stack.record_unchecked_event("s", "CREATED", {"n": 1})
        big = stack.record_unchecked_event("s", "CREATED", {"blob": "x" * 2000})
        after = stack.record_unchecked_event("s", "CREATED", {"n": 3})
        assert stack.run_subscriptions() == {RELAY: 2}
        state: AppState = app.extensions["shimmie"]
        (parked,) = state.runner.store.parked(RELAY)
    stack.shutdown(app)

    assert (parked.event_id, parked.attempts) == (big.event_id, 2)
    assert "maximum" in parked.error.lower() or "size" in parked.error.lower(), parked.error
    check_delivered(broker, [small, after])

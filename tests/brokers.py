"""The message brokers the sink tests publish to, and ways to break the way to them.

:func:`nats_url` / :func:`rabbitmq_url` name the servers (``$SHIMMIE_TEST_NATS_URL``,
``$SHIMMIE_TEST_RABBITMQ_URL``; by default the ones on 127.0.0.1); :func:`require_nats` /
:func:`require_rabbitmq` skip a test whose broker does not answer, or fail it when ``$CI`` is set
(as :func:`tests.backends.skip_or_fail` does for PostgreSQL), saying why.

:class:`TcpProxy` forwards a local port to a broker, so a test can cut every connection through
it (:meth:`~TcpProxy.cut`: both sides reset, as a network failure or a broker restart does), keep
it away for a while (:meth:`~TcpProxy.down` until :meth:`~TcpProxy.up`: new connections are reset
too), or stall them (:meth:`~TcpProxy.stall`: bytes stop flowing, connections stay open, as with
a hung broker or a dead link). :class:`SilentServer` accepts connections and never says a word.

Plain module: fixtures live in the test modules.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from urllib.parse import urlsplit

from flask_shimmie import Event
from flask_shimmie.sinks import Sink, SinkError
from tests.backends import skip_or_fail

HOST = "127.0.0.1"
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
DEFAULT_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"

_problems: dict[str, str | None] = {}


def nats_url() -> str:
    return os.environ.get("SHIMMIE_TEST_NATS_URL") or DEFAULT_NATS_URL


def rabbitmq_url() -> str:
    return os.environ.get("SHIMMIE_TEST_RABBITMQ_URL") or DEFAULT_RABBITMQ_URL


def _answers(url: str, name: str, variable: str, module: str, extra: str) -> str | None:
    try:
        __import__(module)
    except ImportError as error:
        return f"{module} is not installed ({error}); pip install -e .[{extra}] (or .[test])"
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname or HOST, parts.port or 0), timeout=2).close()
    except OSError as error:
        where = f"{parts.hostname}:{parts.port}"
        return f"{name} does not answer at {where} ({error}); start it or set {variable}"
    return None


def require_nats() -> str:
    """The NATS URL, once the server answers (else skip, or fail in CI)."""
    if "nats" not in _problems:
        _problems["nats"] = _answers(nats_url(), "NATS", "SHIMMIE_TEST_NATS_URL", "nats", "nats")
    problem = _problems["nats"]
    if problem:
        skip_or_fail(problem)
    return nats_url()


def require_rabbitmq() -> str:
    """The RabbitMQ URL, once the server answers (else skip, or fail in CI)."""
    if "rabbitmq" not in _problems:
        _problems["rabbitmq"] = _answers(
            rabbitmq_url(), "RabbitMQ", "SHIMMIE_TEST_RABBITMQ_URL", "pika", "rabbitmq"
        )
    problem = _problems["rabbitmq"]
    if problem:
        skip_or_fail(problem)
    return rabbitmq_url()


def via(url: str, port: int) -> str:
    """``url`` with its host and port replaced by 127.0.0.1:``port`` (credentials and path kept)."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{HOST}:{port}" if userinfo else f"{HOST}:{port}"
    return parts._replace(netloc=netloc).geturl()


def _reset(sock: socket.socket) -> None:
    with suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with suppress(OSError):
        sock.close()


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target``; :meth:`cut` and :meth:`stall` break the way."""

    def __init__(self, target_url: str) -> None:
        parts = urlsplit(target_url)
        self.target = (parts.hostname or HOST, parts.port or 0)
        self._listener = socket.create_server((HOST, 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._flowing = threading.Event()
        self._flowing.set()
        self._refusing = False
        self._closed = False
        self.accepted = 0
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def url(self, broker_url: str) -> str:
        """``broker_url`` pointed at the proxy."""
        return via(broker_url, self.port)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._refusing:
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            upstream.settimeout(None)
            for sock in (client, upstream):  # small frames must not wait for Nagle's algorithm
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._pairs.append((client, upstream))
                self.accepted += 1
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        while True:
            if not self._flowing.is_set():
                time.sleep(0.01)
                continue
            try:
                ready, _, _ = select.select([source], [], [], 0.05)
                if not ready:
                    continue
                data = source.recv(65536)
            except (OSError, ValueError):  # ValueError: the socket was closed by cut()
                break
            if not data:
                break
            self._flowing.wait()  # bytes read just before a stall are held back too
            try:
                sink.sendall(data)
            except OSError:
                break
        _reset(source)
        _reset(sink)

    def cut(self) -> int:
        """Reset every connection through the proxy (both sides); new ones are still accepted."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for client, upstream in pairs:
            _reset(client)
            _reset(upstream)
        return len(pairs)

    def down(self) -> int:
        """Cut every connection and reset new ones until :meth:`up`: the broker is away (restarting)."""
        self._refusing = True
        return self.cut()

    def up(self) -> None:
        """Accept and forward connections again."""
        self._refusing = False

    def stall(self) -> None:
        """Stop forwarding bytes (connections stay open)."""
        self._flowing.clear()

    def flow(self) -> None:
        """Forward bytes again."""
        self._flowing.set()

    def close(self) -> None:
        self._closed = True
        self._flowing.set()
        with suppress(OSError):
            self._listener.close()
        self.cut()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SilentServer:
    """Accepts TCP connections on 127.0.0.1 and never sends a byte: a broker that hangs."""

    def __init__(self) -> None:
        self._listener = socket.create_server((HOST, 0))
        self.port: int = self._listener.getsockname()[1]
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, name="silent-accept", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._held.append(client)

    def close(self) -> None:
        with suppress(OSError):
            self._listener.close()
        for client in self._held:
            _reset(client)

    def __enter__(self) -> SilentServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def refused_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def cut_while_publishing(
    proxy: TcpProxy, sink: Sink, events: Sequence[Event], stored: Callable[[], int], after: int = 20
) -> SinkError:
    """Publish ``events`` in a thread, cut ``proxy`` once ``stored()`` passes ``after``; the error raised.

    Asserts that the cut closed a connection and that the publish raised a
    :class:`SinkError` naming the event a retry starts from.
    """
    outcome: list[BaseException] = []

    def publish() -> None:
        try:
            sink.publish(events)
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=publish)
    thread.start()
    while stored() <= after:
        time.sleep(0.005)
    assert proxy.cut() >= 1
    thread.join(20)
    assert outcome and isinstance(outcome[0], SinkError), outcome
    assert outcome[0].event is not None
    return outcome[0]

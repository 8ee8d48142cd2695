"""Publishing events to NATS JetStream (``pip install "flask-shimmie[nats]"``, nats-py).

nats-py is asyncio only; the sink keeps it off the caller's thread. Each
sink runs, per process, one private event loop on a daemon thread
(``shimmie-nats-sink``) that owns its connection; :meth:`NatsJetStreamSink.publish`
hands the batch to that loop and blocks until every message is acknowledged
or a deadline passes. A forked child builds its own loop and connection on
first use. Nothing of the application runs on the loop.

Each message carries the header ``Nats-Msg-Id: <event_id>``: within the
stream's duplicate window (two minutes unless the stream says otherwise),
JetStream stores a message id once and acknowledges a copy as a duplicate,
so a batch sent again after a crash or a lost acknowledgement is not stored
twice. Messages are sent in windows of :data:`PUBLISH_WINDOW`, pipelined on
the one connection (the server stores them in the order sent), and each
window's acknowledgements are awaited before the next is sent.

When a window fails part way, the :class:`~flask_shimmie.sinks.SinkError`
names where to retry from: the first refused event, or the window's first
when the connection was lost (what the server had stored is then a prefix of
what was sent, and the broker drops the copies). Order per subject holds
across such retries, but for one case: the server refusing one message of a
window (a per-message limit of the stream) and storing a later one; that
later one then precedes the retried one. A message larger than the server's
``max_payload`` is refused before anything of its batch is sent.

A lost connection ends the wait for its acknowledgements at once (they
cannot come); a stalled one, after ``timeout``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigurationError
from ..events import Event
from ..storage.process import ProcessLocal
from .base import Sink, SinkError, describe, event_body, import_client, redact_url
from .loop import LoopThread
from .templates import SubjectTemplate

logger = logging.getLogger(__name__)

#: Messages sent before their acknowledgements are awaited.
PUBLISH_WINDOW = 256
#: JetStream's error code for a message larger than the stream's ``max_msg_size``: the one
#: refusal that concerns the message itself, and that no retry can change.
MESSAGE_TOO_LARGE = 10054
#: The header JetStream deduplicates on.
MSG_ID_HEADER = "Nats-Msg-Id"


def subject_covers(pattern: str, subject: str) -> bool:
    """Whether the NATS subject filter ``pattern`` matches every subject the filter ``subject`` does.

    ``"songs.>"`` and ``"songs.*"`` cover ``"songs.*"``; ``"songs.x"`` does not.
    """
    wanted = subject.split(".")
    tokens = pattern.split(".")
    for index, token in enumerate(tokens):
        if token == ">":
            return len(wanted) > index
        if index >= len(wanted):
            return False
        if token == "*":
            if wanted[index] == ">":
                return False
        elif token != wanted[index]:
            return False
    return len(tokens) == len(wanted)


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Take the outcome of an abandoned future, so asyncio does not log it as never retrieved."""
    if not future.cancelled():
        future.exception()


def _check_subject(subject: str, template: str) -> None:
    tokens = subject.split(".")
    if any(not token or token in ("*", ">") or any(c.isspace() for c in token) for token in tokens):
        raise ConfigurationError(
            f"The subject template {template!r} does not make a NATS subject one can publish to "
            f"(e.g. {subject!r}): words between dots must be non-empty, without spaces, '*' or '>'."
        )


@dataclass
class _Connection:
    """What one process holds for a sink: its loop thread, the client, the JetStream context."""

    loop: LoopThread
    client: Any = None
    jetstream: Any = None
    stream_ready: bool = False
    #: Set (on the loop) when the client loses its connection.
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


class NatsJetStreamSink(Sink):
    """Publish events to NATS JetStream subjects built from ``subject`` (``"songs.{event_name}"``).

    ``url`` is a NATS server URL (``nats://127.0.0.1:4222``). With
    ``stream``, the first publish makes sure a JetStream stream of that name
    exists covering every subject the template makes (creating it, with file
    storage, when missing; an existing stream that does not cover them is an
    error, never changed), and each message is published with
    ``Nats-Expected-Stream`` so that only that stream may store it. Without
    it, some stream must already cover the subjects.

    ``timeout`` bounds connecting and each acknowledgement (seconds). The
    client does not reconnect on its own: a publish that meets a broken
    connection raises :class:`~flask_shimmie.sinks.SinkError`, and the next publish connects afresh.

    Raises :class:`ImportError` naming the extra when nats-py is missing, and
    :class:`~flask_shimmie.ConfigurationError` for a bad template or stream name.
    """

    def __init__(self, url: str, subject: str, stream: str | None = None, *, timeout: float = 5.0) -> None:
        self._nats = import_client("nats", "nats-py", "nats", "NatsJetStreamSink")
        self._js_errors = import_client("nats.js.errors", "nats-py", "nats", "NatsJetStreamSink")
        if not isinstance(url, str) or not url:
            raise ConfigurationError(
                f"NatsJetStreamSink needs a server URL such as 'nats://127.0.0.1:4222', not {url!r}."
            )
        if stream is not None and (
            not isinstance(stream, str) or not stream or any(c in stream for c in ". *>\t\r\n/\\")
        ):
            raise ConfigurationError(
                f"JetStream stream name {stream!r} must be a non-empty name without '.', '*', '>', '/', "
                "'\\' or spaces."
            )
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
            raise ConfigurationError(f"NatsJetStreamSink timeout = {timeout!r} must be seconds > 0.")
        self.url = url
        self.subject = SubjectTemplate(subject, "subject")
        _check_subject(self.subject.wildcard("x"), subject)
        #: The subjects the template can produce, as a NATS filter (``"songs.*"``).
        self.subject_filter = self.subject.wildcard("*")
        self.stream = stream
        self.timeout = float(timeout)
        self._process: ProcessLocal[_Connection] = ProcessLocal(
            lambda: _Connection(LoopThread("shimmie-nats-sink")), lambda _inherited: None
        )

    def __repr__(self) -> str:
        return (
            f"NatsJetStreamSink({redact_url(self.url)!r}, {self.subject.template!r}, stream={self.stream!r})"
        )

    # -- publishing -------------------------------------------------------------

    def publish(self, events: Sequence[Event]) -> None:
        if not events:
            return
        messages = [(event, self.subject.render(event), event_body(event)) for event in events]
        connection = self._process.get()
        with connection.lock:
            jetstream = self._connect(connection)
            limit = connection.client.max_payload
            for event, _subject, body in messages:
                if len(body) > limit:
                    raise SinkError(
                        f"Event {event.sequence_num} ({event.event_id}) is {len(body)} bytes as JSON; the "
                        f"NATS server takes at most {limit} per message. Nothing of this batch was sent.",
                        event,
                        refused=True,
                    )
            for start in range(0, len(messages), PUBLISH_WINDOW):
                self._publish_window(connection, jetstream, messages[start : start + PUBLISH_WINDOW])

    def _publish_window(
        self, connection: _Connection, jetstream: Any, window: list[tuple[Event, str, bytes]]
    ) -> None:
        lost = connection.lost

        async def send() -> list[Any]:
            publishing = asyncio.gather(
                *(
                    jetstream.publish(
                        subject,
                        body,
                        timeout=self.timeout,
                        stream=self.stream,
                        headers={MSG_ID_HEADER: event.event_id, "Content-Type": "application/json"},
                    )
                    for event, subject, body in window
                ),
                return_exceptions=True,
            )
            # The acknowledgements of a lost connection never come: stop waiting for them then.
            losing: asyncio.Future[Any] = asyncio.ensure_future(lost.wait())
            await asyncio.wait([publishing, losing], return_when=asyncio.FIRST_COMPLETED)
            losing.cancel()
            if not publishing.done():
                publishing.cancel()
                publishing.add_done_callback(_retrieve)
                raise ConnectionError("the connection to the NATS server was lost")
            return publishing.result()

        try:
            outcomes = connection.loop.run(send(), self.timeout + 1.0)
        except Exception as error:
            self._drop(connection)
            raise SinkError(
                f"NATS at {redact_url(self.url)} did not acknowledge events {window[0][0].sequence_num} to "
                f"{window[-1][0].sequence_num}: {describe(error)}",
                window[0][0],
            ) from error
        for (event, subject, _), outcome in zip(window, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, self._js_errors.APIError):
                    self._drop(connection)  # the connection may be broken: start afresh next time
                raise SinkError(
                    f"NATS JetStream did not store event {event.sequence_num} ({event.event_id}) on "
                    f"{subject!r}: {describe(outcome)}",
                    event,
                    refused=getattr(outcome, "err_code", None) == MESSAGE_TOO_LARGE,
                ) from outcome

    # -- the connection -----------------------------------------------------------

    def _connect(self, connection: _Connection) -> Any:
        client = connection.client
        if client is not None and client.is_connected and connection.jetstream is not None:
            return connection.jetstream
        if client is not None:
            self._drop(connection)
        try:
            connection.loop.run(self._open(connection), self.timeout * 2 + 1.0)
        except SinkError:
            self._drop(connection)
            raise
        except Exception as error:
            self._drop(connection)
            raise SinkError(f"Cannot connect to NATS at {redact_url(self.url)}: {describe(error)}") from error
        return connection.jetstream

    async def _open(self, connection: _Connection) -> None:
        async def on_error(error: Exception) -> None:
            logger.debug("NATS client error (%s): %s", redact_url(self.url), describe(error))

        lost = asyncio.Event()

        async def on_lost() -> None:
            lost.set()

        connection.lost = lost
        connection.client = await self._nats.connect(
            self.url,
            connect_timeout=self.timeout,
            allow_reconnect=False,
            # nats-py retries a refused first connection until this many attempts fail
            # (0 would mean forever), pausing reconnect_time_wait between them.
            max_reconnect_attempts=1,
            reconnect_time_wait=0.05,
            name="flask-shimmie sink",
            error_cb=on_error,
            disconnected_cb=on_lost,
            closed_cb=on_lost,
        )
        connection.jetstream = connection.client.jetstream(timeout=self.timeout)
        if self.stream is not None and not connection.stream_ready:
            await self._ensure_stream(connection.jetstream)
            connection.stream_ready = True

    async def _ensure_stream(self, jetstream: Any) -> None:
        try:
            info = await jetstream.stream_info(self.stream)
        except self._js_errors.NotFoundError:
            await jetstream.add_stream(name=self.stream, subjects=[self.subject_filter])
            logger.info("Created JetStream stream %s for %s", self.stream, self.subject_filter)
            return
        subjects = list(info.config.subjects or ())
        if not any(subject_covers(pattern, self.subject_filter) for pattern in subjects):
            raise SinkError(
                f"JetStream stream {self.stream!r} exists but its subjects {subjects} do not cover "
                f"{self.subject_filter!r}; add that subject to the stream, or name another stream."
            )

    def _drop(self, connection: _Connection) -> None:
        client, connection.client, connection.jetstream = connection.client, None, None
        if client is not None and not client.is_closed:
            try:
                connection.loop.run(client.close(), self.timeout)
            except Exception as error:  # it is being abandoned anyway
                logger.debug("Closing a NATS connection failed: %s", describe(error))

    def close(self) -> None:
        connection = self._process.pop()
        if connection is None:
            return
        with connection.lock:
            self._drop(connection)
            connection.loop.stop()

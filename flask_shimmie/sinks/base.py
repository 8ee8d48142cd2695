"""The sink interface, its error, the message body, and importing a client library on demand."""

from __future__ import annotations

import importlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from types import ModuleType
from urllib.parse import urlsplit, urlunsplit

from ..errors import ShimmieError
from ..events import Event

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class SinkError(ShimmieError):
    """A broker did not confirm a publish.

    ``event`` is the event to publish again from: every event before it in
    the batch was confirmed (``None`` when the failure came before any was
    sent, e.g. while connecting). The broker's own exception is ``__cause__``.

    ``refused`` is True when the broker (or the sink, on the broker's limits)
    refuses that very event and always will, such as a message larger than
    the server takes: publishing it again cannot succeed. It is False for
    everything that may pass later (a lost or refused connection, a timeout, a
    missing stream or binding, a full queue): a relay waits those out.
    """

    def __init__(self, message: str, event: Event | None = None, *, refused: bool = False) -> None:
        self.event = event
        self.refused = refused
        super().__init__(message)


class Sink(ABC):
    """Where a relay publishes events: one broker destination."""

    @abstractmethod
    def publish(self, events: Sequence[Event]) -> None:
        """Publish ``events`` in order; return once the broker confirmed every one.

        Raises :class:`~flask_shimmie.sinks.SinkError` when one is not confirmed (refused, timed
        out, connection lost), and sends nothing more. Its ``event`` is where
        a retry starts: the events from there on may or may not have reached
        the broker (a sink that pipelines sends a few before it hears back),
        and publishing them again is safe, since they keep their message ids.
        A later call starts on a fresh connection if this one broke. An empty
        batch publishes nothing and does not connect.
        """

    @abstractmethod
    def close(self) -> None:
        """Close the connection (a later :meth:`publish` opens a new one)."""

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def event_body(event: Event) -> bytes:
    """The message body: the event as compact JSON (:meth:`Event.to_json`), UTF-8."""
    return _encode(event.to_json()).encode("utf-8")


def import_client(module: str, package: str, extra: str, sink: str) -> ModuleType:
    """Import a sink's client library, or raise ImportError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f'{sink} needs the {package} package: pip install "flask-shimmie[{extra}]" ({error})'
        ) from error


def describe(error: BaseException) -> str:
    """``TypeName: message`` of a broker error; a message-less one shows its arguments (pika's do)."""
    text = str(error).strip() or ", ".join(str(arg) or repr(arg) for arg in error.args)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def redact_url(url: str) -> str:
    """``url`` without its credentials, for messages: ``nats://user:secret@host`` → ``nats://***@host``.

    A user name alone is hidden too: NATS takes a token in that place.
    """
    parts = urlsplit(url)
    _userinfo, at, host = parts.netloc.rpartition("@")
    if not at:
        return url
    return urlunsplit(parts._replace(netloc=f"***@{host}"))

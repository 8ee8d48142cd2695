"""A small Server-Sent Events client over :mod:`http.client`, for the event stream tests.

:class:`SseClient` opens ``GET <path>`` on a connection of its own and parses the stream as a
browser's ``EventSource`` would: fields until a blank line make one :class:`SseMessage`; comment
lines (``: ...``) are kept apart, in :attr:`SseClient.comments`. :meth:`SseClient.drop` cuts the
connection at once, as a client that vanishes does (no orderly HTTP ending).

Also :class:`LiveServer`: an app served by werkzeug's threaded server on 127.0.0.1 in this process,
for apps on the memory store, which no other process can open.

Plain module: no pytest imports, no fixtures.
"""

from __future__ import annotations

import http.client
import json
import socket
import struct
import threading
import time
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from werkzeug.serving import BaseWSGIServer, make_server

HOST = "127.0.0.1"


@dataclass
class SseMessage:
    """One SSE message: its fields (``None`` when absent) and the comment lines before it."""

    id: str | None = None
    event: str | None = None
    data: str | None = None
    retry: str | None = None

    def json(self) -> Any:
        assert self.data is not None, f"message {self} has no data"
        return json.loads(self.data)


@dataclass
class SseClient:
    """An open event stream; :attr:`status` and :attr:`headers` are the response's."""

    base_url: str
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 10.0
    comments: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        self.connection = http.client.HTTPConnection(parts.hostname or HOST, parts.port, timeout=self.timeout)
        self.connection.request("GET", self.path, headers={"Accept": "text/event-stream", **self.headers})
        self.response = self.connection.getresponse()
        self.status = self.response.status
        self.header = {name.lower(): value for name, value in self.response.getheaders()}
        self.ended = False

    def body(self) -> Any:
        """The JSON body of a response that is not a stream (an error)."""
        return json.loads(self.response.read())

    def next_message(self, timeout: float | None = None) -> SseMessage | None:
        """The next message, or ``None`` when the server ended the stream.

        Raises :class:`TimeoutError` when no whole message came within ``timeout`` seconds.
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        message = SseMessage()
        seen_field = False
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no whole SSE message on {self.path} within the time given")
            sock = self.connection.sock
            if sock is not None:
                sock.settimeout(remaining)
            try:
                raw = self.response.readline()
            except TimeoutError:
                raise TimeoutError(f"no whole SSE message on {self.path} within the time given") from None
            if not raw:
                self.ended = True
                return None
            line = raw.decode("utf-8").rstrip("\r\n")
            if line == "":
                if seen_field:
                    return message
                continue
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            seen_field = True
            if name == "data":
                message.data = value if message.data is None else f"{message.data}\n{value}"
            elif name in ("id", "event", "retry"):
                setattr(message, name, value)

    def events(self, count: int, timeout: float = 10.0) -> list[SseMessage]:
        """The next ``count`` messages that carry data (skipping the opening one), in order."""
        deadline = time.monotonic() + timeout
        found: list[SseMessage] = []
        while len(found) < count:
            message = self.next_message(max(deadline - time.monotonic(), 0.001))
            if message is None:
                raise AssertionError(f"the stream ended after {len(found)} of {count} events")
            if message.data is not None:
                found.append(message)
        return found

    def drop(self) -> None:
        """Cut the connection at once (RST, no orderly close), as a vanished client does."""
        sock = self.connection.sock
        if sock is not None:
            with suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # The response's file holds the socket open until it is closed too.
        self.response.close()
        self.connection.close()

    def close(self) -> None:
        self.drop()

    def __enter__(self) -> SseClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LiveServer:
    """``app`` served by werkzeug's threaded WSGI server on 127.0.0.1, in a thread of this process."""

    def __init__(self, app: Any) -> None:
        self.server: BaseWSGIServer = make_server(HOST, 0, app, threaded=True)
        self.base_url = f"http://{HOST}:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="live-server", daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

"""Serve example_songs with granian: ``python -m example_songs.serve`` (``pip install -e ".[serve]"``).

This is the recommended deployment. granian reads requests on its own I/O threads (Rust, no GIL):
the application sees a request only once its headers are in, so slow clients cannot tie up the
threads that run the app. A client that has not sent a whole request header within
``SONGS_HEADER_TIMEOUT`` seconds is disconnected, and so is a kept-alive connection that starts
no new request within that time.

Settings come from the environment, as in ``gunicorn.conf.py``:

``SONGS_BIND``
    ``host:port`` to listen on (default ``127.0.0.1:8000``).
``SONGS_WORKERS``
    worker processes (default 3); each is a full copy of the app that opens its own connections
    after the fork and follows the store, so any worker answers any request.
``SONGS_HEADER_TIMEOUT``
    seconds a client may take to send a request's headers (default 5, at most 60).

A request body is read when the view reads it, on one of the worker's application threads
(granian's "blocking threads": started on demand, up to half of the worker's connection limit of
1024 / workers), with no deadline of its own: a body that trickles in holds one such thread
until it ends or the client goes away, and its size is capped by ``SHIMMIE_MAX_REQUEST_SIZE``.
That many threads is deliberate (granian warns about it at start): an idle one costs nothing, and a
few slow bodies then cannot take them all. Only HTTP/1 is served, since the header timeout does not
apply to HTTP/2.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from granian.server.common import AbstractServer

#: What the workers load: the app factory, called once in every worker.
TARGET = "example_songs:create_app"
DEFAULT_BIND = "127.0.0.1:8000"
DEFAULT_WORKERS = 3
#: Seconds for a request's headers: ample for any real client, short for a slow one.
DEFAULT_HEADER_TIMEOUT = 5.0
#: granian's own bounds for the header read timeout (it counts milliseconds).
MAX_HEADER_TIMEOUT = 60.0
MIN_HEADER_TIMEOUT = 0.001
#: Seconds a stopping worker may finish its requests before it is killed.
GRACEFUL_TIMEOUT = 10

Number = TypeVar("Number", int, float)


class SettingError(ValueError):
    """An environment setting has a value the launcher cannot use; the message names both."""


@dataclass(frozen=True)
class ServeSettings:
    """Where and how to serve: read from the environment by :meth:`from_env`."""

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = DEFAULT_WORKERS
    header_timeout: float = DEFAULT_HEADER_TIMEOUT

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ServeSettings:
        """Read ``SONGS_BIND``, ``SONGS_WORKERS`` and ``SONGS_HEADER_TIMEOUT``.

        Raises :class:`SettingError` naming the variable and its value when one is malformed or
        out of range.
        """
        host, port = _bind(environ.get("SONGS_BIND", DEFAULT_BIND))
        workers = _number(environ, "SONGS_WORKERS", DEFAULT_WORKERS, int, 1, 64)
        timeout = _number(
            environ,
            "SONGS_HEADER_TIMEOUT",
            DEFAULT_HEADER_TIMEOUT,
            float,
            MIN_HEADER_TIMEOUT,
            MAX_HEADER_TIMEOUT,
        )
        return cls(host=host, port=port, workers=workers, header_timeout=timeout)


def _bind(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SettingError(f"SONGS_BIND = {value!r}: expected host:port, e.g. {DEFAULT_BIND!r}")
    return host.strip("[]"), int(port)


def _number(
    environ: Mapping[str, str],
    name: str,
    default: Number,
    parse: Callable[[str], Number],
    low: float,
    high: float,
) -> Number:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = parse(raw)
    except ValueError:
        raise SettingError(f"{name} = {raw!r}: expected a number") from None
    if not low <= value <= high:
        raise SettingError(f"{name} = {raw!r}: expected a value from {low:g} to {high:g}")
    return value


def build_server(settings: ServeSettings, target: str = TARGET) -> AbstractServer[Any]:
    """A granian server for example_songs under ``settings`` (not started: call ``serve()``).

    ``target`` is the app factory each worker calls (``module:function``); the
    benchmarks serve other apps with the same settings. granian is imported
    here, so the app itself does not need it.
    """
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings

    return Granian(
        target,
        factory=True,
        interface=Interfaces.WSGI,
        address=settings.host,
        port=settings.port,
        workers=settings.workers,
        # The header timeout is an HTTP/1 setting: an HTTP/2 connection would bypass it.
        http=HTTPModes.http1,
        http1_settings=HTTP1Settings(header_read_timeout=max(1, round(settings.header_timeout * 1000))),
        websockets=False,
        workers_kill_timeout=GRACEFUL_TIMEOUT,
    )


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Serve until stopped (SIGINT/SIGTERM); return the exit code (2 for a bad setting)."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args:
        print(f"example_songs.serve takes no arguments (got {args}); it reads SONGS_*", file=sys.stderr)
        return 2
    try:
        settings = ServeSettings.from_env(os.environ if environ is None else environ)
    except SettingError as error:
        print(f"example_songs.serve: {error}", file=sys.stderr)
        return 2
    try:
        server = build_server(settings)
    except ImportError:
        print('example_songs.serve needs granian: python -m pip install -e ".[serve]"', file=sys.stderr)
        return 2
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())

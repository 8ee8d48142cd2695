"""``GET <admin>/events/stream``: the stored events, then the live ones, as Server-Sent Events.

One SSE message per event: ``id:`` its ``sequence_num``, ``event:`` its
``event_name``, ``data:`` the event as JSON (:meth:`Event.to_json`, one line).
The first message carries only ``retry:`` (the reconnection delay a browser
uses) and ``id:`` (the position the stream starts after), so a client that
loses the connection before any event still resumes where it began; an
``EventSource`` dispatches nothing for it. While no event comes, a comment
line (``: heartbeat``) is sent every ``SHIMMIE_SSE_HEARTBEAT`` seconds so
proxies keep the connection open and a vanished client is noticed.

Where a stream starts: after the ``Last-Event-ID`` header's position (what a
browser sends when it reconnects), else after ``?after=N`` (for clients that
cannot set headers), else after the last event stored when it opens (live
only). Events are read in position order from the store, through the stack's
own reading path (PII merged, payloads upcast), so a reconnection with the
last ``id:`` seen gets every later event once: none skipped, none repeated.
``?stream=`` and ``?type=`` keep one stream id and one event name.

Access (``SHIMMIE_SSE_ACCESS``): with ``"admin"`` (the default) the admin
authorizer must admit the caller (401 / 403, as every admin route), and the
events carry their PII. With ``"authenticated"`` any caller with an identity
may open a stream, and the PII is merged only for callers the admin
authorizer admits; others get the anonymised values an erasure leaves
(``""``, ``0``, ``False``, ``null``), with ``pii_fields`` still naming them.
Without a registered admin authorizer the route answers 403 either way. The
decision is made again at every heartbeat: when the caller would no longer
be admitted, or would no longer get the same PII, the stream ends, and the
client's reconnection gets the new answer.

Threads: a WSGI response is produced by one server thread from its first
byte to its last, so each open stream holds one thread while it waits (it
sleeps on the store's position signal, using no CPU). At most
``SHIMMIE_SSE_MAX_CLIENTS`` streams are open per process; past that, 503
JSON with ``Retry-After``. Under gunicorn's ``gthread`` worker each stream
takes one of its ``--threads``: keep the limit well below them, or streams
leave no thread for other requests. Sync workers must not serve streams.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from flask import Blueprint, Response, current_app, request, stream_with_context
from werkzeug.exceptions import BadRequest, Forbidden, HTTPException

from .auth import any_identity, forget_identity, guarded_by, require
from .errors import TooManyStreamsError
from .events import Event
from .recording import check_name, parse_position
from .state import AppState
from .storage.process import ProcessLocal

logger = logging.getLogger(__name__)

#: The reconnection delay (milliseconds) the stream asks clients to wait.
RETRY_MS = 2000
#: Events read from the store at a time (and sent in one write).
PAGE_SIZE = 500
#: The header a reconnecting ``EventSource`` sends.
LAST_EVENT_ID_HEADER = "Last-Event-ID"
HEARTBEAT = ": heartbeat\n\n"

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def format_event(event: Event) -> str:
    """One SSE message for ``event``: ``id:``, ``event:`` and ``data:`` lines, then a blank line.

    JSON escapes every line break, so ``data:`` is one line. An event name
    holding a CR or LF could not be one ``event:`` line: such an event goes
    without one (a browser dispatches it as ``message``); its JSON names it.
    """
    name = event.event_name
    kind = "" if "\n" in name or "\r" in name else f"event: {name}\n"
    return f"id: {event.sequence_num}\n{kind}data: {_encode(event.to_json())}\n\n"


def _state() -> AppState:
    state: AppState = current_app.extensions["shimmie"]
    return state


def stream_access() -> bool:
    """Raise 401 / 403 unless the caller may open a stream; return whether it gets PII."""
    state = _state()
    check = state.registry.admin_authorizer
    if check is None:
        raise Forbidden("The admin API is closed: register a check with @stack.admin_authorizer.")
    if state.settings.sse_access == "admin":
        require(check)
        return True
    identity = require(any_identity)
    return bool(check(identity))


def _still_admitted(with_pii: bool) -> bool:
    """Whether the caller is still admitted, with the same PII decision (never raises)."""
    forget_identity()
    try:
        return stream_access() == with_pii
    except HTTPException as refusal:
        logger.info("Ending an event stream: its caller is no longer admitted (%s)", refusal.code)
    except Exception:
        logger.warning("Ending an event stream: authenticating its caller failed", exc_info=True)
    return False


def resume_position() -> int | None:
    """Where the stream starts: ``Last-Event-ID``, else ``?after=``, else ``None`` (live); 400 if bad."""
    raw = request.headers.get(LAST_EVENT_ID_HEADER)
    source = LAST_EVENT_ID_HEADER
    if raw is None or not raw.strip(" \t"):
        raw, source = request.args.get("after"), "after"
    if raw is None or raw == "":
        return None
    value = parse_position(raw.strip(" \t"))
    if value is None:
        raise BadRequest(f"{source} must be a whole number (an event position), not {raw[:40]!r}.")
    return value


def _name_filter(name: str, what: str) -> list[str] | None:
    value = request.args.get(name)
    if value is None or value == "":
        return None
    return [check_name(value, what)]


class _Count:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.value = 0


class StreamSlots:
    """How many streams one process serves, at most ``limit`` at a time."""

    def __init__(self) -> None:
        self._count = ProcessLocal(_Count, lambda _inherited: None)

    @property
    def open(self) -> int:
        """Streams open in this process now."""
        return self._count.get().value

    def try_enter(self, limit: int) -> Callable[[], None] | None:
        """Take a slot if fewer than ``limit`` are taken; return the function that gives it back."""
        count = self._count.get()
        with count.lock:
            if count.value >= limit:
                return None
            count.value += 1
        released = threading.Event()

        def leave() -> None:
            with count.lock:
                if not released.is_set():
                    released.set()
                    count.value -= 1

        return leave


@dataclass(frozen=True)
class StreamRequest:
    """What one stream sends: from where, which events, with PII or not, how often a heartbeat."""

    start: int
    stream_ids: list[str] | None
    event_names: list[str] | None
    with_pii: bool
    heartbeat: float


def stream_messages(state: AppState, asked: StreamRequest) -> Iterator[str]:
    """The stream's messages, forever (until the client goes or is no longer admitted).

    ``seen`` is the position up to which every event was sent or filtered
    out. A page shorter than :data:`PAGE_SIZE`, read after the store was
    known to hold ``horizon``, covers every committed event up to there:
    positions are given in commit order, so no event at or below ``horizon``
    can appear later. Waiting is the store's ``wait_for_events``, which the
    engine's listener (PostgreSQL) or poll (SQLite) wakes for other
    processes' writes, and this process's own commits wake at once.
    """
    store = state.event_store
    stack = state.stack
    yield f"retry: {RETRY_MS}\nid: {asked.start}\n\n"
    seen = horizon = asked.start
    next_beat = time.monotonic() + asked.heartbeat
    while True:
        while True:
            events = stack.read_events(
                seen,
                PAGE_SIZE,
                stream_ids=asked.stream_ids,
                event_names=asked.event_names,
                with_pii=asked.with_pii,
            )
            if events:
                yield "".join(map(format_event, events))
                next_beat = time.monotonic() + asked.heartbeat
            if len(events) < PAGE_SIZE:
                seen = max(seen, horizon, events[-1].sequence_num if events else 0)
                break
            seen = events[-1].sequence_num
        while True:
            remaining = next_beat - time.monotonic()
            if remaining <= 0:
                if not _still_admitted(asked.with_pii):
                    return
                yield HEARTBEAT
                next_beat = time.monotonic() + asked.heartbeat
                continue
            horizon = store.wait_for_events(seen, remaining)
            if horizon > seen:
                break


def add_event_stream_route(admin: Blueprint) -> None:
    """Add ``GET /events/stream`` to the admin blueprint ``admin`` (one blueprint per app)."""
    slots = StreamSlots()

    @admin.get("/events/stream")
    @guarded_by(stream_access)
    def event_stream() -> Response:
        """The events as Server-Sent Events: ``Last-Event-ID`` or ``?after=``, ``?stream=``, ``?type=``."""
        state = _state()
        with_pii = stream_access()
        start = resume_position()
        stream_ids = _name_filter("stream", "stream")
        event_names = _name_filter("type", "type")
        if start is None:
            start = state.event_store.last_sequence_num()
        settings = state.settings
        leave = slots.try_enter(settings.sse_max_clients)
        if leave is None:
            raise TooManyStreamsError(settings.sse_max_clients)
        try:
            asked = StreamRequest(start, stream_ids, event_names, with_pii, settings.sse_heartbeat)
            response = Response(
                stream_with_context(stream_messages(state, asked)),
                mimetype="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        except BaseException:
            leave()
            raise
        # The server closes the response when the client goes (or the stream
        # ends), whether or not the generator ever started.
        response.call_on_close(leave)
        return response

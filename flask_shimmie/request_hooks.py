"""Request hooks: body size, read-your-writes positions, and catching up before commands.

Also ``X-Seq-Num`` on the responses to admitted callers, a relative ``Location``
on routing redirects, and CORS (``SHIMMIE_CORS``).
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from flask import Flask, Request, Response, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge
from werkzeug.routing import RequestRedirect

from .auth import admit, admitted
from .errors import SequenceTimeoutError, TooManyWaitersError
from .recording import unique_keys
from .storage.process import ProcessLocal

if TYPE_CHECKING:
    from .extension import ShimmieStack
    from .state import AppState

#: Methods that change state: they catch up to the store before the view runs.
COMMAND_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

SEQ_NUM_HEADER = "X-Seq-Num"
SEQ_NUM_MIN_HEADER = "X-Seq-Num-Min"
#: Where a WSGI server puts the ``X-Seq-Num-Min`` header.
_SEQ_NUM_MIN_ENVIRON = "HTTP_" + SEQ_NUM_MIN_HEADER.upper().replace("-", "_")


class DepthSafeJSONProvider(DefaultJSONProvider):
    """Flask's JSON provider, but bodies too deep to parse, or repeating a key, are a 400.

    ``json.loads`` raises ``RecursionError`` on a body nested too deeply for
    Python, which werkzeug does not treat as malformed JSON; as a
    ``ValueError`` it becomes the usual 400 (not a 500). ``json.loads`` keeps
    the last of two equal keys in an object where other parsers keep the
    first: such a payload is ambiguous, and refused with a 400 naming the key.
    """

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            if not kwargs:
                return _loads_unique(s)
            kwargs.setdefault("object_pairs_hook", unique_keys)
            return super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("The JSON body nests objects and arrays too deeply.") from None


#: ``json.loads(..., object_pairs_hook=unique_keys)`` builds a decoder per call; one serves them all.
_unique_decoder = json.JSONDecoder(object_pairs_hook=unique_keys)


def _loads_unique(s: str | bytes) -> Any:
    """``json.loads(s, object_pairs_hook=unique_keys)``, with the same checks, on one shared decoder."""
    if isinstance(s, str):
        if s.startswith("\ufeff"):
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", s, 0)
    elif isinstance(s, (bytes, bytearray)):
        s = s.decode(json.detect_encoding(s), "surrogatepass")
    else:
        raise TypeError(f"the JSON object must be str, bytes or bytearray, not {s.__class__.__name__}")
    return _unique_decoder.decode(s)


def parse_seq_num_min(raw: str) -> int:
    """The position an ``X-Seq-Num-Min`` header asks for; 400 when malformed."""
    value = raw.strip(" \t")  # HTTP's whitespace, not str.strip()'s
    if not value.isascii() or not value.isdigit() or len(value) > 18:
        raise BadRequest(f"{SEQ_NUM_MIN_HEADER} must be a whole number >= 0, not {raw[:40]!r}.")
    return int(value)


def enforce_body_limit(limit: int) -> None:
    """Answer 413 for a body over ``limit`` bytes, with or without a Content-Length.

    werkzeug stops reading a chunked body at the limit and hands the view the
    truncated part, so such a body is read here, at most ``limit + 1`` bytes,
    and put back for the view when it fits.
    """
    environ = request.environ
    if "CONTENT_LENGTH" not in environ and "HTTP_TRANSFER_ENCODING" not in environ:
        # No body (most GETs): werkzeug reads none, and in HTTP/1 a request with neither header
        # has none (RFC 9112, 6.3) even where the server ends the input (``wsgi.input_terminated``),
        # so there is nothing to read and measure.
        http1 = environ.get("SERVER_PROTOCOL", "").startswith("HTTP/1")
        if http1 or not environ.get("wsgi.input_terminated"):
            return
    length = request.content_length
    if length is not None:
        if length > limit:
            raise RequestEntityTooLarge(f"The request body is larger than {limit} bytes.")
        return
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    if not (chunked or environ.get("wsgi.input_terminated")):
        return  # no body werkzeug would read
    body = environ["wsgi.input"].read(limit + 1)
    if len(body) > limit:
        raise RequestEntityTooLarge(f"The request body is larger than {limit} bytes.")
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    environ.pop("HTTP_TRANSFER_ENCODING", None)
    environ.pop("wsgi.input_terminated", None)


def matched_view(app: Flask) -> Callable[..., Any] | None:
    """The view the current request's URL and method matched; ``None`` for 404, 405, redirects."""
    return _matched_view(app, request._get_current_object())  # type: ignore[attr-defined]


def _matched_view(app: Flask, req: Request) -> Callable[..., Any] | None:
    rule = req.url_rule
    if rule is None or req.routing_exception is not None or rule.endpoint is None:
        return None
    return app.view_functions.get(rule.endpoint)


def relative_location(url: str) -> str:
    """``url`` without its scheme and host: ``http://evil.example/v1/songs?a=1`` → ``/v1/songs?a=1``.

    Leading slashes (and backslashes, which browsers read as slashes) are
    folded into one, so the result can never name another host.
    """
    parts = urlsplit(url)
    path = "/" + parts.path.lstrip("/\\")
    return f"{path}?{parts.query}" if parts.query else path


class WaiterSlots:
    """At most ``limit`` requests of one app wait for a position at a time, per process."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slots = ProcessLocal(lambda: threading.BoundedSemaphore(limit), lambda _inherited: None)

    def try_enter(self) -> bool:
        """Take a slot if one is free, without waiting."""
        return self._slots.get().acquire(blocking=False)

    def leave(self) -> None:
        """Give back the slot taken by :meth:`try_enter`."""
        self._slots.get().release()


def install_request_hooks(app: Flask, stack: ShimmieStack, state: AppState) -> None:
    """Register the stack's ``before_request`` and ``after_request`` hooks on ``app``.

    With ``SHIMMIE_CORS`` set, CORS (see :func:`cors_response_hook`) runs in the
    same ``after_request`` hook, before ``X-Seq-Num`` is added: one hook instead
    of three on every response.
    """
    settings = state.settings
    slots = WaiterSlots(settings.max_seq_waiters)
    cors = cors_response_hook(app, settings.cors) if settings.cors is not None else None

    def wait_for_position(req: Request, wanted: int, started: float) -> None:
        """Wait until ``wanted`` is applied here, only for a caller who may call the matched view.

        An unmatched route (404, 405) or an automatic OPTIONS answer never
        waits; a refused caller gets its 401 / 403 at once. The wait ends at
        the request's deadline, ``SHIMMIE_SEQ_WAIT_TIMEOUT`` after it began.
        """
        view = _matched_view(app, req)
        if view is None:
            return  # the routing error answers, at once
        if req.method == "OPTIONS" and getattr(req.url_rule, "provide_automatic_options", False):
            return  # Flask answers it without running the view
        admit(view)
        dispatcher = state.dispatcher
        timeout = settings.seq_wait_timeout
        remaining = started + timeout - time.monotonic()
        handled = dispatcher.last_handled
        if remaining > 0 and handled < wanted:
            if not slots.try_enter():
                raise TooManyWaitersError(wanted, handled, slots.limit)
            try:
                handled = dispatcher.wait_for(wanted, remaining)
            finally:
                slots.leave()
        if handled < wanted:
            raise SequenceTimeoutError(wanted, handled, timeout)

    def before_request() -> None:
        started = time.monotonic()
        # The request object itself, not its proxy: every proxied attribute costs a context lookup.
        req: Request = request._get_current_object()  # type: ignore[attr-defined]
        redirect = req.routing_exception
        if isinstance(redirect, RequestRedirect):
            # werkzeug builds the URL of a merge_slashes / strict_slashes redirect
            # from the Host header, which the client chose.
            redirect.new_url = relative_location(redirect.new_url)
        limit = settings.max_request_size
        if limit is not None:
            configured = app.config.get("MAX_CONTENT_LENGTH")
            limit = limit if configured is None else min(limit, configured)
            req.max_content_length = limit
            enforce_body_limit(limit)
        # What request.headers.get(SEQ_NUM_MIN_HEADER) reads, without building the headers view.
        raw_min = req.environ.get(_SEQ_NUM_MIN_ENVIRON)
        wanted = parse_seq_num_min(raw_min) if raw_min is not None else None
        rule = req.url_rule
        endpoint = rule.endpoint if rule is not None else None
        if endpoint is not None:
            if endpoint == "shimmie_admin.health":
                return  # health reports on the stores itself, even when they are down
            if endpoint.rpartition(".")[0] == "shimmie_openapi":
                return  # the API description needs no store
        state.ready()  # starts the stack on the first request (SHIMMIE_AUTO_STARTUP)
        dispatcher = state.dispatcher
        if req.method in COMMAND_METHODS:
            dispatcher.ensure_handled()
        if wanted is not None and dispatcher.last_handled < wanted:
            wait_for_position(req, wanted, started)

    def after_request(response: Response) -> Response:
        if cors is not None:
            response = cors(response)
        # The store's size is no one's business but an admitted caller's.
        if response.status_code not in (401, 403):
            view = _matched_view(app, request._get_current_object())  # type: ignore[attr-defined]
            if view is not None and admitted(view):
                response.headers[SEQ_NUM_HEADER] = str(state.dispatcher.last_handled)
        return response

    if type(app.json) is DefaultJSONProvider:  # leave an app's own provider alone
        app.json = DepthSafeJSONProvider(app)
    app.before_request(before_request)
    app.after_request(after_request)


def cors_response_hook(app: Flask, options: Mapping[str, Any]) -> Callable[[Response], Response]:
    """Configure flask-cors on ``app`` with ``options`` (``SHIMMIE_CORS``, which win over ours).

    Ours: CORS headers only on requests that carry an ``Origin``
    (``always_send=False``), and ``Vary: Origin`` on every response (unless
    ``vary_header`` is false), since whether a response carries them depends
    on the request's ``Origin``: a cache must not hand one origin's answer to another.

    flask-cors's response hook is taken off ``app`` and returned inside the
    function that adds ``Vary``, for the stack's own ``after_request`` to call.
    It is skipped for a request without an ``Origin`` when no resource sets
    ``always_send``: it would add nothing to such a response, and looking
    costs more than the rest of a simple GET. (flask-cors's wrapping of the
    error handlers stays as it installs it.)
    """
    from flask_cors import CORS

    merged = {"always_send": False, **dict(options)}
    hooks = app.after_request_funcs.setdefault(None, [])
    before = len(hooks)
    CORS(app, **merged)
    # What flask-cors registered, in the order Flask would have run it (the last registered first).
    cors_hooks = cast("list[Callable[[Response], Response]]", hooks[before:][::-1])
    del hooks[before:]
    origin_needed = not _may_always_send(app, merged)
    vary = bool(merged.get("vary_header", True))

    def apply_cors(response: Response) -> Response:
        if not origin_needed or request.environ.get("HTTP_ORIGIN"):
            for hook in cors_hooks:
                response = hook(response)
        if vary:
            values = {v.strip().lower() for line in response.headers.getlist("Vary") for v in line.split(",")}
            if not values & {"origin", "*"}:
                response.headers.add("Vary", "Origin")
        return response

    return apply_cors


def _may_always_send(app: Flask, options: Mapping[str, Any]) -> bool:
    """Whether some CORS resource may send its headers to a request without an ``Origin``.

    Read from the options as given, not from flask-cors's resolved ones (their
    shape is private and changes between its releases): ``options`` always
    hold ``always_send`` (they win over ``CORS_ALWAYS_SEND``), and a resource
    given as a mapping (``resources`` here, else ``CORS_RESOURCES``) may set
    its own.
    """
    if options.get("always_send"):
        return True
    resources = options.get("resources", app.config.get("CORS_RESOURCES"))
    if not isinstance(resources, Mapping):
        return False
    return any(isinstance(own, Mapping) and own.get("always_send") for own in resources.values())

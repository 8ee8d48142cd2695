"""The exception hierarchy and the JSON error responses.

Every exception the stack raises derives from :class:`ShimmieError`. Errors a
client can cause also derive from the matching werkzeug exception, so Flask's
own handlers, and the application's, treat them as HTTP errors.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, cast

from flask import Flask, Response, jsonify, request
from marshmallow import ValidationError
from werkzeug.exceptions import (
    BadRequest,
    Conflict,
    HTTPException,
    InternalServerError,
    NotFound,
    ServiceUnavailable,
    UnprocessableEntity,
)

from .events import ExpectedVersion

logger = logging.getLogger(__name__)


class ShimmieError(Exception):
    """Base class of every error raised by flask_shimmie."""


class ConfigurationError(ShimmieError):
    """A configuration value is wrong; the message names the key and the value."""


class HTTPShimmieError(ShimmieError):
    """A :class:`ShimmieError` that is also a werkzeug HTTP exception.

    Subclasses mix in the werkzeug class of their status; ``str()`` and the
    JSON ``message`` are both the description.
    """

    def __init__(self, message: str) -> None:
        # The mixed-in werkzeug class's own __init__ (e.g. Retry-After on a 503),
        # then the exception's args, which HTTPException's chain leaves empty.
        super(ShimmieError, self).__init__(message)
        Exception.__init__(self, message)

    def __str__(self) -> str:
        return str(cast(HTTPException, self).description)


class InvalidEventError(HTTPShimmieError, BadRequest):
    """An event (stream id, name, data, meta, event id) is not well formed."""


class StreamVersionError(HTTPShimmieError, Conflict):
    """A checked write found a stream at another version than expected.

    ``conflicts`` lists one ``{"stream_id", "expected", "actual"}`` per
    stream that did not match; ``actual`` is 0 for a stream with no events.
    Nothing was written.
    """

    def __init__(self, conflicts: list[dict[str, Any]]) -> None:
        self.conflicts = conflicts
        names = ", ".join(
            f"{c['stream_id']} (expected {_version_name(c['expected'])}, actual {c['actual']})"
            for c in conflicts
        )
        super().__init__(f"Stream version mismatch: {names}")

    def conflicts_json(self) -> list[dict[str, Any]]:
        """Return ``conflicts`` with the expected-version constants shown by name."""
        return [{**c, "expected": _version_name(c["expected"])} for c in self.conflicts]


class ObjectLockedError(HTTPShimmieError, Conflict):
    """A stream lock was not obtained within its timeout."""

    def __init__(self, stream_id: str, timeout: float) -> None:
        self.stream_id = stream_id
        super().__init__(f"Lock for {stream_id} already in use (waited {timeout:g}s).")


class StreamNotFoundError(HTTPShimmieError, NotFound):
    """An operation on an existing stream named a stream that has no events (HTTP 404).

    ``stream_id`` is the id asked for. Nothing was recorded.
    """

    def __init__(self, stream_id: str, action: str) -> None:
        self.stream_id = stream_id
        super().__init__(f"No stream {stream_id!r:.300}: it has no events, so there is nothing to {action}.")


class ReplayError(ShimmieError):
    """A model failed while events were replayed into it.

    ``event`` is the event being applied and ``handler`` names the model
    method or function that raised; the original exception is ``__cause__``.
    """

    def __init__(self, event: Any, handler: str, error: BaseException) -> None:
        self.event = event
        self.handler = handler
        super().__init__(
            f"Replay failed at event {event.sequence_num} ({event.event_name} on stream "
            f"{event.stream_id!r}) in {handler}: {type(error).__name__}: {error}"
        )


class StoreUnavailableError(HTTPShimmieError, ServiceUnavailable):
    """The event store or the PII store cannot be reached."""


class TooManyWaitersError(HTTPShimmieError, ServiceUnavailable):
    """``SHIMMIE_MAX_SEQ_WAITERS`` requests already wait for a position here (HTTP 503).

    The response carries ``Retry-After: 1``.
    """

    def __init__(self, wanted: int, handled: int, limit: int) -> None:
        self.wanted = wanted
        self.handled = handled
        super().__init__(
            f"Position {wanted} is not applied here yet (this process has applied up to {handled}) "
            f"and {limit} requests already wait for a position; try again."
        )
        self.retry_after = 1


class TooManyStreamsError(HTTPShimmieError, ServiceUnavailable):
    """``SHIMMIE_SSE_MAX_CLIENTS`` event streams are open in this process already (HTTP 503).

    The response carries ``Retry-After: 5``; another process of the
    deployment may have room.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(
            f"This process serves {limit} event streams already (SHIMMIE_SSE_MAX_CLIENTS); try again later."
        )
        self.retry_after = 5


class SequenceTimeoutError(HTTPShimmieError, ServiceUnavailable):
    """A position asked for with ``X-Seq-Num-Min`` was not applied in time."""

    def __init__(self, wanted: int, handled: int, timeout: float) -> None:
        self.wanted = wanted
        self.handled = handled
        super().__init__(
            f"Position {wanted} was not reached within {timeout:g}s "
            f"(this process has applied up to {handled}); try again."
        )


class PiiNotConfiguredError(ShimmieError):
    """PII was recorded while ``SHIMMIE_PII_STORE`` is ``False``."""


class UnknownSubscriptionError(HTTPShimmieError, NotFound):
    """No subscription of that name is registered, or it has no such parked event."""


class SubscriptionResetError(HTTPShimmieError, Conflict):
    """A reset was refused: its position is past the store's end, or it would corrupt a projection."""


def _version_name(value: Any) -> Any:
    return value.name if isinstance(value, ExpectedVersion) else value


def error_body(code: int, message: str, **extra: Any) -> dict[str, Any]:
    """Build the JSON body every error response uses."""
    body: dict[str, Any] = {
        "code": code,
        "status": HTTPStatus(code).phrase if code in HTTPStatus._value2member_map_ else "Error",
        "message": message,
    }
    body.update(extra)
    return body


def json_error(code: int, message: str, **extra: Any) -> Response:
    """Return a JSON error response with ``code`` as its status."""
    response = jsonify(error_body(code, message, **extra))
    response.status_code = code
    return response


def handle_http_exception(error: HTTPException) -> Response:
    """Turn any werkzeug HTTP exception into the stack's JSON error shape."""
    code = error.code or 500
    if code >= 500 and not isinstance(error, ServiceUnavailable):
        if not isinstance(error, InternalServerError) or error.original_exception:
            logger.error("Request to %s failed", request.path, exc_info=error)
        return _with_headers(json_error(500 if code == 500 else code, "Something went wrong"), error)
    extra: dict[str, Any] = {}
    message = str(error.description or HTTPStatus(code).phrase)
    if isinstance(error, NotFound) and error.description == NotFound.description:
        message = f"Nothing here: {request.path}"  # a URL no view answers
    elif type(error) is BadRequest and isinstance(error.__cause__, BadRequest):
        # Flask hides why a JSON body failed to parse unless debugging; the
        # reason (line and column) is no internal detail, so give it.
        message = str(error.__cause__.description)
    if isinstance(error, StreamVersionError):
        extra["conflicts"] = error.conflicts_json()
    data = getattr(error, "data", None)
    if isinstance(error, UnprocessableEntity) and isinstance(data, Mapping) and "messages" in data:
        extra["errors"] = data["messages"]
    return _with_headers(json_error(code, message, **extra), error)


def _with_headers(response: Response, error: HTTPException) -> Response:
    # Keep headers werkzeug sets on purpose, such as Allow on a 405.
    for name, value in error.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def handle_unexpected_error(error: Exception) -> Response:
    """Answer 500 without internals, and log the traceback."""
    if isinstance(error, HTTPException):
        return handle_http_exception(error)
    logger.error("Unhandled error on %s %s", request.method, request.path, exc_info=error)
    return json_error(500, "Something went wrong")


def validation_messages(error: ValidationError) -> dict[str, Any]:
    """A marshmallow error's messages as a dict (a list becomes ``{"_schema": [...]}``)."""
    messages: dict[str, Any] = error.normalized_messages()  # type: ignore[no-untyped-call]
    return messages


def handle_validation_error(error: ValidationError) -> Response:
    """A payload failed its event schema while recording: 422, errors under ``data``."""
    return json_error(422, "The event data is not valid.", errors={"data": validation_messages(error)})


def register_error_handlers(app: Flask) -> None:
    """Make every error of ``app`` answer with the stack's JSON shape."""
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(ValidationError, handle_validation_error)
    app.register_error_handler(Exception, handle_unexpected_error)

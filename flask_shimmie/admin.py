"""The admin blueprint: health, browsing events, rebuilding models, erasing PII, subscriptions.

Mounted at ``SHIMMIE_ADMIN_URL`` (without the API version prefix). Every
route but ``/health`` needs ``@stack.admin_authorizer``'s approval: without
one registered they answer 403. A CORS preflight (``OPTIONS``) needs none, so
a browser front end on another origin can call the API. ``/health`` is open,
but names the stores' locations only to callers the authorizer admits; others
see the backend kind. No route rewrites or deletes stored events.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import BadRequest, Forbidden

from .admin_schemas import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    STREAM_ID_PARAMETER,
    EventsPage,
    EventsQuery,
    Health,
    PiiErased,
    Replayed,
    StreamEvents,
)
from .admin_subscriptions import add_subscription_routes
from .auth import get_identity, guarded_by, require
from .declarations import doc, response
from .errors import StoreUnavailableError
from .recording import parse_position
from .sse import add_event_stream_route
from .subscription_control import degraded as degraded_subscriptions

if TYPE_CHECKING:
    from .state import AppState
    from .storage.interface import Backend

logger = logging.getLogger(__name__)


def _state() -> AppState:
    state: AppState = current_app.extensions["shimmie"]
    return state


def _int_arg(name: str, default: int, minimum: int, maximum: int | None = None) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    value = parse_position(raw)
    if value is None:
        raise BadRequest(f"Query parameter {name!r} must be a whole number, not {raw[:40]!r}.")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"{minimum} to {maximum}" if maximum is not None else f">= {minimum}"
        raise BadRequest(f"Query parameter {name!r} must be {bound}, not {raw[:40]}.")
    return value


def require_admin() -> None:
    """Raise 403 unless an admin authorizer is registered, then 401 / 403 as it decides."""
    check = _state().registry.admin_authorizer
    if check is None:
        raise Forbidden("The admin API is closed: register a check with @stack.admin_authorizer.")
    require(check)


def _admits_admin() -> bool:
    """Whether the admin authorizer admits the caller; never raises (health must answer)."""
    check = _state().registry.admin_authorizer
    if check is None:
        return False
    try:
        identity = get_identity()
        return identity is not None and bool(check(identity))
    except Exception:  # a failing authenticator must not take health down
        logger.warning("The authenticator or admin authorizer failed on /health", exc_info=True)
        return False


def _store(store: Backend | None, full: bool) -> str | None:
    if store is None:
        return None
    return store.describe() if full else store.backend


_admin_only = guarded_by(require_admin)


def create_admin_blueprint() -> Blueprint:
    """Build the admin blueprint (one per app)."""
    admin = Blueprint("shimmie_admin", __name__)

    @admin.get("/health")
    @response(200, Health)
    @response(503, Health, description="A store cannot be reached")
    def health() -> tuple[Response, int]:
        """Status of the app and its stores; 503 when a store cannot be reached.

        The stores' descriptions (paths, URLs) go only to callers the admin
        authorizer admits; others see the backend kind (``"sqlite"``, ...).
        """
        state = _state()
        full = _admits_admin()
        body: dict[str, Any] = {
            "event_store": _store(state.event_store, full),
            "pii_store": _store(state.pii_store, full),
            "last_handled": state.dispatcher.last_handled,
            "degraded_models": sorted(state.dispatcher.degraded),
            "degraded_subscriptions": [],
        }
        try:
            state.open_stores()
            state.event_store.ping()
            if state.pii_store is not None:
                state.pii_store.ping()
            body["last_stored"] = state.event_store.last_sequence_num()
            body["degraded_subscriptions"] = degraded_subscriptions(state, body["last_stored"])
        except Exception as error:  # any failure to reach a store is "unavailable"
            if not full:
                message = "A store cannot be reached."
            elif isinstance(error, StoreUnavailableError):
                message = str(error)
            else:
                message = type(error).__name__
            body.update(status="unavailable", last_stored=None, error=message)
            return jsonify(body), 503
        degraded = body["degraded_models"] or body["degraded_subscriptions"]
        body["status"] = "degraded" if degraded else "ok"
        return jsonify(body), 200

    @admin.get("/events")
    @_admin_only
    @doc(parameters=[{"in": "query", "schema": EventsQuery}])
    @response(200, EventsPage)
    def events() -> Response:
        """Stored events in order: ``after``, ``limit`` (≤ 1000), filters ``stream`` and ``type``."""
        after = _int_arg("after", 0, 0)
        limit = _int_arg("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        stream = request.args.get("stream")
        name = request.args.get("type")
        found = _state().stack.read_events(
            after, limit, stream_ids=[stream] if stream else None, event_names=[name] if name else None
        )
        next_after = found[-1].sequence_num if len(found) == limit else None
        return jsonify({"events": [event.to_json() for event in found], "next_after": next_after})

    @admin.get("/streams/<stream_id>")
    @_admin_only
    @doc(parameters=[STREAM_ID_PARAMETER])
    @response(200, StreamEvents)
    def stream(stream_id: str) -> Response:
        """Every event of one stream (empty for an unknown stream)."""
        found = _state().stack.history(stream_id)["history"]
        return jsonify({"events": [event.to_json() for event in found]})

    @admin.post("/replay")
    @_admin_only
    @response(200, Replayed)
    def replay() -> Response:
        """Rebuild the models from every stored event."""
        state = _state()
        count = state.stack.replay()
        return jsonify({"replayed": count, "last_handled": state.dispatcher.last_handled})

    @admin.post("/streams/<stream_id>/erase-pii")
    @_admin_only
    @doc(parameters=[STREAM_ID_PARAMETER])
    @response(200, PiiErased)
    def erase_pii(stream_id: str) -> Response:
        """Erase the PII of every event of the stream, for good; 404 for an unknown stream."""
        return jsonify({"erased_events": _state().stack.erase_pii(stream_id)})

    add_subscription_routes(admin, _admin_only)
    add_event_stream_route(admin)
    return admin

"""The admin blueprint: health, browsing events, rebuilding models, erasing PII, subscriptions.

Mounted at ``SHIMMIE_ADMIN_URL`` (without the API version prefix). Every
route but ``/health`` needs ``@stack.admin_authorizer``'s approval: without
one registered they answer 403. No route rewrites or deletes stored events.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import BadRequest, Forbidden

from .admin_subscriptions import add_subscription_routes
from .auth import require
from .errors import StoreUnavailableError
from .recording import MAX_POSITION
from .subscription_control import degraded as degraded_subscriptions

if TYPE_CHECKING:
    from .state import AppState

#: ``GET /events`` page size when ``limit`` is not given, and its maximum.
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def _state() -> AppState:
    state: AppState = current_app.extensions["shimmie"]
    return state


def _int_arg(name: str, default: int | None, minimum: int, maximum: int | None = None) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.isdigit():
        raise BadRequest(f"Query parameter {name!r} must be a whole number, not {raw[:40]!r}.")
    value = min(int(raw), MAX_POSITION)
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"{minimum} to {maximum}" if maximum is not None else f">= {minimum}"
        raise BadRequest(f"Query parameter {name!r} must be {bound}, not {value}.")
    return value


def create_admin_blueprint() -> Blueprint:
    """Build the admin blueprint (one per app)."""
    admin = Blueprint("shimmie_admin", __name__)

    @admin.before_request
    def guard() -> None:
        if request.endpoint == "shimmie_admin.health":
            return
        check = _state().registry.admin_authorizer
        if check is None:
            raise Forbidden("The admin API is closed: register a check with @stack.admin_authorizer.")
        require(check)

    @admin.get("/health")
    def health() -> tuple[Response, int]:
        """Status of the app and its stores; 503 when a store cannot be reached."""
        state = _state()
        body: dict[str, Any] = {
            "event_store": state.event_store.describe(),
            "pii_store": state.pii_store.describe() if state.pii_store is not None else None,
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
            message = str(error) if isinstance(error, StoreUnavailableError) else type(error).__name__
            body.update(status="unavailable", last_stored=None, error=message)
            return jsonify(body), 503
        degraded = body["degraded_models"] or body["degraded_subscriptions"]
        body["status"] = "degraded" if degraded else "ok"
        return jsonify(body), 200

    @admin.get("/events")
    def events() -> Response:
        """Stored events in order: ``after``, ``limit`` (≤ 1000), filters ``stream`` and ``type``."""
        after = _int_arg("after", 0, 0) or 0
        limit = _int_arg("limit", DEFAULT_LIMIT, 1, MAX_LIMIT) or DEFAULT_LIMIT
        stream = request.args.get("stream")
        name = request.args.get("type")
        found = _state().stack.read_events(
            after, limit, stream_ids=[stream] if stream else None, event_names=[name] if name else None
        )
        next_after = found[-1].sequence_num if len(found) == limit else None
        return jsonify({"events": [event.to_json() for event in found], "next_after": next_after})

    @admin.get("/streams/<path:stream_id>")
    def stream(stream_id: str) -> Response:
        """Every event of one stream (empty for an unknown stream)."""
        found = _state().stack.history(stream_id)["history"]
        return jsonify({"events": [event.to_json() for event in found]})

    @admin.post("/replay")
    def replay() -> Response:
        """Rebuild the models from every stored event."""
        state = _state()
        count = state.stack.replay()
        return jsonify({"replayed": count, "last_handled": state.dispatcher.last_handled})

    @admin.post("/streams/<path:stream_id>/erase-pii")
    def erase_pii(stream_id: str) -> Response:
        """Erase the PII of every event of the stream, for good."""
        return jsonify({"erased_events": _state().stack.erase_pii(stream_id)})

    add_subscription_routes(admin)
    return admin

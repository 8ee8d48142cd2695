"""The admin routes of the durable subscriptions: list them and their parked events, retry, reset.

Added to the admin blueprint by :func:`flask_shimmie.admin.create_admin_blueprint`,
behind the same authorization as the other admin routes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import BadRequest

from . import subscription_control as control
from .recording import MAX_POSITION, check_event_id

if TYPE_CHECKING:
    from .state import AppState

#: A view of this module (the guard is applied to each).
View = Callable[..., Response]


def _state() -> AppState:
    state: AppState = current_app.extensions["shimmie"]
    return state


def _options(allowed: tuple[str, ...]) -> dict[str, Any]:
    """The request's optional JSON object (an empty body is ``{}``); 400 for anything else."""
    if not request.get_data(cache=True):
        return {}
    body = request.get_json(force=True)
    if not isinstance(body, dict):
        raise BadRequest(f"The body must be a JSON object with {' or '.join(map(repr, allowed))}, or empty.")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise BadRequest(f"Unknown field {unknown[0]!r}; this route takes {' or '.join(map(repr, allowed))}.")
    return body


def add_subscription_routes(admin: Blueprint, admin_only: Callable[[View], View]) -> None:
    """Add ``/subscriptions``, ``/subscriptions/<name>/parked``, ``.../retry`` and ``.../reset``.

    ``admin_only`` is the admin API's guard; every route here is behind it.
    """

    @admin.get("/subscriptions")
    @admin_only
    def subscriptions() -> Response:
        """Every registered subscription: position, lag, state, runner, error, parked count."""
        found = control.statuses(_state())
        return jsonify({"subscriptions": [status.to_json() for status in found]})

    @admin.get("/subscriptions/<name>/parked")
    @admin_only
    def parked_events(name: str) -> Response:
        """The events ``name`` parked, in position order: tries, when, error, whether a retry is asked."""
        control.lookup(_state(), name)
        found = _state().runner.store.parked(name)
        return jsonify(
            {
                "name": name,
                "parked": [
                    {
                        "event_id": item.event_id,
                        "sequence_num": item.sequence_num,
                        "attempts": item.attempts,
                        "parked_at": item.parked_at.isoformat(),
                        "retry_requested": item.retry_requested,
                        "error": item.error,
                    }
                    for item in found
                ],
            }
        )

    @admin.post("/subscriptions/<name>/retry")
    @admin_only
    def retry_subscription(name: str) -> Response:
        """Resume a stopped subscription and retry its parked events (``{"event_id": ...}``: just one)."""
        control.lookup(_state(), name)
        options = _options(("event_id",))
        raw = options.get("event_id")
        event_id = None if raw is None else check_event_id(raw)
        outcome = control.retry(_state(), name, event_id)
        return jsonify({"name": name, "resumed": outcome.resumed, "retried": outcome.retried})

    @admin.post("/subscriptions/<name>/reset")
    @admin_only
    def reset_subscription(name: str) -> Response:
        """Move a subscription to ``{"to": N}`` (default 0: from the first event; a projection rebuilds)."""
        control.lookup(_state(), name)
        options = _options(("to",))
        to = options.get("to", 0)
        if not isinstance(to, int) or isinstance(to, bool) or not 0 <= to <= MAX_POSITION:
            raise BadRequest(f"'to' must be a position (a whole number >= 0), not {to!r:.60}.")
        outcome = control.reset(_state(), name, to)
        return jsonify(
            {
                "name": name,
                "position": outcome.position,
                "rebuild": outcome.rebuild,
                "rebuilt_now": outcome.rebuilt_now,
            }
        )

"""The admin API of the subscriptions: list, parked events, retry, reset; errors are JSON, change nothing."""

from __future__ import annotations

from typing import Any

import pytest
from flask import request
from flask.testing import FlaskClient

from flask_shimmie import Event, ShimmieStack
from flask_shimmie.state import AppState
from tests.subscription_fixtures import quick as quick
from tests.subscription_fixtures import subs as subs
from tests.subscription_harness import SubsHarness, Tally, projection_db, tally_rows

ADMIN = {"Authorization": "Bearer admin"}


class Setup:
    def __init__(self, subs: SubsHarness, *, authorizer: bool = True) -> None:
        self.stack = stack = ShimmieStack()
        self.fixed = False
        self.seen: list[int] = []

        @stack.authenticator
        def authenticate() -> dict[str, Any] | None:
            return {"admin": True} if request.headers.get("Authorization") == ADMIN["Authorization"] else None

        if authorizer:
            stack.admin_authorizer(lambda identity: bool(identity.get("admin")))

        @stack.reactor("mailer", start="beginning", max_attempts=1)
        def mailer(event: Event) -> None:
            if event.event_name == "BAD" and not self.fixed:
                raise RuntimeError("no")
            self.seen.append(event.sequence_num)

        stack.register_projection(Tally)
        self.app = subs.app(stack, SHIMMIE_ADMIN_URL="/admin")
        with self.app.app_context():
            for name in ("GOOD", "BAD", "GOOD"):
                stack.record_unchecked_event("s", name, {})
            stack.run_subscriptions()
        self.client: FlaskClient = self.app.test_client()

    @property
    def state(self) -> AppState:
        state: AppState = self.app.extensions["shimmie"]
        return state

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.client.post(path, headers=ADMIN, **kwargs)


@pytest.fixture
def setup(subs: SubsHarness) -> Setup:
    return Setup(subs)


def test_the_list_shows_position_lag_state_runner_error_and_parked(setup: Setup) -> None:
    with setup.app.app_context():
        setup.stack.record_unchecked_event("s", "GOOD", {})
    response = setup.client.get("/admin/subscriptions", headers=ADMIN)
    assert response.status_code == 200
    assert response.get_json() == {
        "subscriptions": [
            {
                "name": "mailer",
                "kind": "reactor",
                "position": 3,
                "lag": 1,
                "state": "active",
                "runner": None,
                "error": None,
                "parked": 1,
            },
            {
                "name": "tally",
                "kind": "projection",
                "position": 3,
                "lag": 1,
                "state": "active",
                "runner": None,
                "error": None,
                "parked": 0,
            },
        ]
    }


def test_the_parked_events_are_listed_with_their_error_and_tries(setup: Setup) -> None:
    with setup.app.app_context():
        (stored,) = setup.state.runner.store.parked("mailer")
        bad = setup.stack.read_events(1, 1)[0]
    response = setup.client.get("/admin/subscriptions/mailer/parked", headers=ADMIN)
    assert response.status_code == 200
    body = response.get_json()
    (parked,) = body["parked"]
    assert body["name"] == "mailer"
    assert {key: parked[key] for key in ("event_id", "sequence_num", "attempts", "retry_requested")} == {
        "event_id": bad.event_id,
        "sequence_num": 2,
        "attempts": 1,
        "retry_requested": False,
    }
    assert parked["error"].rstrip().endswith("RuntimeError: no")
    assert parked["parked_at"] == stored.parked_at.isoformat()
    setup.post("/admin/subscriptions/mailer/retry")
    again = setup.client.get("/admin/subscriptions/mailer/parked", headers=ADMIN).get_json()
    assert again["parked"][0]["retry_requested"] is True
    assert setup.client.get("/admin/subscriptions/tally/parked", headers=ADMIN).get_json() == {
        "name": "tally",
        "parked": [],
    }


def test_the_parked_events_of_an_unknown_subscription_are_404(setup: Setup) -> None:
    response = setup.client.get("/admin/subscriptions/ghost/parked", headers=ADMIN)
    assert response.status_code == 404
    assert "No subscription named 'ghost'" in response.get_json()["message"]


def test_retry_marks_the_parked_events_then_the_runner_handles_them(setup: Setup) -> None:
    setup.fixed = True
    response = setup.post("/admin/subscriptions/mailer/retry")
    assert response.status_code == 200
    assert response.get_json() == {"name": "mailer", "resumed": False, "retried": 1}
    with setup.app.app_context():
        setup.stack.run_subscriptions()
    assert setup.seen == [1, 3, 2]
    assert (
        setup.client.get("/admin/subscriptions", headers=ADMIN).get_json()["subscriptions"][0]["parked"] == 0
    )


def test_retry_one_event_by_id(setup: Setup) -> None:
    with setup.app.app_context():
        (parked,) = setup.state.runner.store.parked("mailer")
    response = setup.post("/admin/subscriptions/mailer/retry", json={"event_id": parked.event_id})
    assert response.get_json()["retried"] == 1
    missing = setup.post(
        "/admin/subscriptions/mailer/retry", json={"event_id": "00000000-0000-4000-8000-000000000000"}
    )
    assert missing.status_code == 404 and "has no parked event" in missing.get_json()["message"]


def test_reset_moves_a_reactor_and_rebuilds_a_projection(setup: Setup) -> None:
    response = setup.post("/admin/subscriptions/mailer/reset", json={"to": 1})
    assert response.get_json() == {"name": "mailer", "position": 1, "rebuild": False, "rebuilt_now": False}
    response = setup.post("/admin/subscriptions/tally/reset")
    assert response.get_json() == {"name": "tally", "position": 0, "rebuild": True, "rebuilt_now": True}
    with projection_db(setup.stack, setup.app) as db:
        assert tally_rows(db) == []
    with setup.app.app_context():
        assert setup.state.runner.store.parked("mailer") == []  # the reset dropped them
        setup.fixed = True
        setup.stack.run_subscriptions()
    assert setup.seen == [1, 3, 2, 3]
    with projection_db(setup.stack, setup.app) as db:
        assert len(tally_rows(db)) == 3


@pytest.mark.parametrize(
    ("path", "kwargs", "code", "message"),
    [
        ("/admin/subscriptions/ghost/retry", {}, 404, "No subscription named 'ghost'"),
        ("/admin/subscriptions/ghost/reset", {}, 404, "No subscription named 'ghost'"),
        ("/admin/subscriptions/mailer/reset", {"json": {"to": -1}}, 400, "'to' must be a position"),
        ("/admin/subscriptions/mailer/reset", {"json": {"to": "1"}}, 400, "'to' must be a position"),
        ("/admin/subscriptions/mailer/reset", {"json": {"to": True}}, 400, "'to' must be a position"),
        ("/admin/subscriptions/mailer/reset", {"json": [1]}, 400, "must be a JSON object"),
        ("/admin/subscriptions/mailer/reset", {"json": {"position": 1}}, 400, "Unknown field 'position'"),
        ("/admin/subscriptions/mailer/reset", {"json": {"to": 99}}, 409, "the store's last position is 3"),
        ("/admin/subscriptions/tally/reset", {"json": {"to": 2}}, 409, "Cannot move projection 'tally' back"),
        ("/admin/subscriptions/mailer/retry", {"json": {"event_id": "x"}}, 400, "event_id"),
        ("/admin/subscriptions/mailer/retry", {"json": {"event_id": 7}}, 400, "event_id"),
        (
            "/admin/subscriptions/mailer/retry",
            {"data": "{not json", "content_type": "application/json"},
            400,
            "",
        ),
    ],
)
def test_bad_requests_get_json_errors_and_change_nothing(
    setup: Setup, path: str, kwargs: dict[str, Any], code: int, message: str
) -> None:
    before = setup.client.get("/admin/subscriptions", headers=ADMIN).get_json()
    with setup.app.app_context():
        parked_before = setup.state.runner.store.parked("mailer")
    response = setup.post(path, **kwargs)
    body = response.get_json()
    assert response.status_code == code and set(body) >= {"code", "status", "message"}
    assert body["code"] == code and message in body["message"]
    assert setup.client.get("/admin/subscriptions", headers=ADMIN).get_json() == before
    with setup.app.app_context():
        assert setup.state.runner.store.parked("mailer") == parked_before


def test_the_routes_need_an_identity(setup: Setup) -> None:
    assert setup.client.get("/admin/subscriptions").status_code == 401
    assert setup.client.get("/admin/subscriptions/mailer/parked").status_code == 401
    assert setup.client.post("/admin/subscriptions/tally/reset").status_code == 401


def test_without_an_admin_authorizer_the_routes_are_closed(subs: SubsHarness) -> None:
    closed = Setup(subs, authorizer=False)
    assert closed.client.get("/admin/subscriptions", headers=ADMIN).status_code == 403
    assert closed.client.get("/admin/subscriptions/mailer/parked", headers=ADMIN).status_code == 403
    assert closed.post("/admin/subscriptions/mailer/reset").status_code == 403
    with closed.app.app_context():
        assert closed.state.runner.store.get("mailer").position == 3

"""Test helpers: given these events, when I call this endpoint, then these events are recorded.

The ``shimmie`` pytest fixture (see :mod:`flask_shimmie.pytest_plugin`) gives
a :class:`ShimmieTester` for the test's app::

    def test_create_song(shimmie):
        shimmie.post("/v1/songs", json={"title": "Hound Dog", ...}, expect=201)
        (created,) = shimmie.recorded("SONG_CREATED")
        assert shimmie.model(SongList).all()[0]["title"] == "Hound Dog"
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, TypeVar

from flask import Flask
from werkzeug.test import TestResponse

from .dispatch import WILDCARD
from .events import Event, NewEvent
from .extension import ShimmieStack
from .models import Model

M = TypeVar("M", bound=Model)


class ShimmieTester:
    """Drives one app through its HTTP surface and its stack, for tests."""

    def __init__(self, app: Flask, headers: dict[str, str] | None = None) -> None:
        state = app.extensions.get("shimmie")
        if state is None:
            raise RuntimeError("The app has no ShimmieStack. Call stack.init_app(app) in your app fixture.")
        self.app = app
        self.stack: ShimmieStack = state.stack
        self.client = app.test_client()
        #: Headers sent with every request (e.g. ``Authorization``); a call's own win.
        self.headers: dict[str, str] = dict(headers or {})
        with app.app_context():
            self._start = self.stack.ensure_handled()
        self._given: set[str] = set()

    # -- when: requests -------------------------------------------------------

    def request(self, method: str, path: str, expect: int | None = 200, **kwargs: Any) -> TestResponse:
        """Send a request; fail showing status, body and recorded events unless it answers ``expect``."""
        headers = {**self.headers, **dict(kwargs.pop("headers", None) or {})}
        response = self.client.open(path, method=method, headers=headers, **kwargs)
        if expect is not None and response.status_code != expect:
            raise AssertionError(self._explain(method, path, expect, response))
        return response

    def get(self, path: str, expect: int | None = 200, **kwargs: Any) -> TestResponse:
        """GET ``path``, expecting status ``expect``."""
        return self.request("GET", path, expect, **kwargs)

    def post(self, path: str, expect: int | None = 200, **kwargs: Any) -> TestResponse:
        """POST to ``path``, expecting status ``expect``."""
        return self.request("POST", path, expect, **kwargs)

    def put(self, path: str, expect: int | None = 200, **kwargs: Any) -> TestResponse:
        """PUT to ``path``, expecting status ``expect``."""
        return self.request("PUT", path, expect, **kwargs)

    def patch(self, path: str, expect: int | None = 200, **kwargs: Any) -> TestResponse:
        """PATCH ``path``, expecting status ``expect``."""
        return self.request("PATCH", path, expect, **kwargs)

    def delete(self, path: str, expect: int | None = 200, **kwargs: Any) -> TestResponse:
        """DELETE ``path``, expecting status ``expect``."""
        return self.request("DELETE", path, expect, **kwargs)

    def _explain(self, method: str, path: str, expect: int, response: TestResponse) -> str:
        body = response.get_data(as_text=True)
        lines = [
            f"{method} {path} answered {response.status_code}, expected {expect}.",
            f"Body: {body[:2000]}",
            "Events recorded so far:",
        ]
        recorded = self.recorded()
        lines += [f"  {e.sequence_num} {e.stream_id} {e.event_name} {json.dumps(e.data)}" for e in recorded]
        if not recorded:
            lines.append("  (none)")
        return "\n".join(lines)

    # -- given / then: events -------------------------------------------------

    def given(
        self,
        stream_id: str,
        event_name: str,
        data: dict[str, Any] | None = None,
        *,
        meta: dict[str, Any] | None = None,
        pii_fields: Sequence[str] | None = None,
        event_id: str | None = None,
    ) -> Event:
        """Record an event as the test's starting state; it does not count as recorded."""
        with self.app.app_context():
            event = self.stack.record_unchecked_event(
                stream_id, event_name, data or {}, meta=meta, pii_fields=pii_fields, event_id=event_id
            )
        self._given.add(event.event_id)
        return event

    def recorded(self, event_name: str | None = None, stream_id: str | None = None) -> list[Event]:
        """Events recorded during the test, not counting the ``given`` ones, in order."""
        with self.app.app_context():
            events = self.stack.read_events(
                self._start,
                stream_ids=[stream_id] if stream_id is not None else None,
                event_names=[event_name] if event_name is not None else None,
            )
        return [e for e in events if e.event_id not in self._given]

    def model(self, model_cls: type[M]) -> M:
        """The app's instance of ``model_cls``, up to date with the store."""
        with self.app.app_context():
            self.stack.ensure_handled()
            return self.stack.model(model_cls)

    def run_subscriptions(self, names: str | Collection[str] | None = None) -> dict[str, int]:
        """Run the reactors and projections (or those named) in this thread, up to the store's last event.

        So a test can assert their effects right after; returns how many
        events each one's handlers took. Failures follow each subscription's
        policy (retries with backoff, then park or stop).
        """
        with self.app.app_context():
            return self.stack.run_subscriptions(names)

    @contextmanager
    def projection_db(self) -> Iterator[Any]:
        """A read connection to the projections' tables.

        See :meth:`~flask_shimmie.ShimmieStack.projection_db`.
        """
        with self.app.app_context(), self.stack.projection_db() as db:
            yield db

    @staticmethod
    def apply(model: M, events: Iterable[Event | NewEvent]) -> M:
        """Apply events to ``model`` alone (no store, no other model) and return it.

        :class:`~flask_shimmie.NewEvent`\\ s get positions from 1 and per-stream versions.
        """
        versions: dict[str, int] = {}
        handlers: dict[str, list[str]] = {}
        for event_name, method in type(model).subscriptions():
            handlers.setdefault(event_name, []).append(method)
        for position, item in enumerate(events, start=1):
            event = item if isinstance(item, Event) else _as_event(item, position, versions)
            versions[event.stream_id] = event.stream_version
            for method in handlers.get(event.event_name, []) + handlers.get(WILDCARD, []):
                getattr(model, method)(event)
        return model


def _as_event(new: NewEvent, position: int, versions: dict[str, int]) -> Event:
    data = json.loads(json.dumps(new.data))
    return Event(
        sequence_num=position,
        stream_id=new.stream_id,
        stream_version=versions.get(new.stream_id, 0) + 1,
        event_id=new.event_id or f"00000000-0000-4000-8000-{position:012d}",
        event_name=new.event_name,
        data=data,
        meta=dict(new.meta or {}),
        recorded_at=datetime.now(timezone.utc),
        pii_fields=tuple(new.pii_fields or ()),
    )

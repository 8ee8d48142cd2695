"""``erase_pii`` against writes that land while it erases.

It reads the stream, erases the PII, then records ``shimmie.pii_erased``. Recorded without a
check, a write that landed in between came before the erasure event with its PII intact (models
then anonymise a value the store still has), and two erasures at once both claimed the same
events. Recorded against the version read, the erasure is done again when the stream moved, and
each event is counted by exactly one erasure.

The interleavings are made exact by wrapping the PII store's ``erase_stream``: the other write
runs right after the rows were deleted, the widest window there is. Likewise for model snapshots:
one taken at a checkpoint between the deletion of the snapshots and the erasure event still held
the erased values, so the snapshots are deleted again once the erasure is applied.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from flask_shimmie import (
    NO_STREAM,
    PII_ERASED_EVENT,
    Event,
    Model,
    NewEvent,
    ShimmieStack,
    StreamNotFoundError,
    StreamVersionError,
    subscribe,
)
from flask_shimmie.extension import ERASE_ATTEMPTS
from flask_shimmie.state import AppState
from tests.pii_backends import PLACEMENTS, AppFactory, Backend, assert_absent

FIRST = {"name": "Ada First-Secret"}
SECOND = {"name": "Bea Second-Secret"}


def register(stack: ShimmieStack, stream_id: str, data: dict[str, Any], expected: Any = NO_STREAM) -> None:
    stack.record_event(stream_id, "PERSON_NAMED", data, expected_version=expected, pii_fields=["name"])


def after_erase_stream(state: AppState, monkeypatch: pytest.MonkeyPatch, act: Callable[[int], None]) -> None:
    """Run ``act(call number)`` right after each ``erase_stream`` of the app's PII store."""
    store = state.pii_store
    assert store is not None
    original = store.erase_stream
    calls = [0]

    def erase_stream(stream_id: str) -> int:
        deleted = original(stream_id)
        calls[0] += 1
        act(calls[0])
        return deleted

    monkeypatch.setattr(store, "erase_stream", erase_stream)


def erasures(stack: ShimmieStack, stream_id: str) -> list[Any]:
    return [e.data for e in stack.history(stream_id, event_names=[PII_ERASED_EVENT])["history"]]


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_a_write_landing_during_the_erasure_is_erased_and_counted(
    pii_backend: Backend, make_pii_app: AppFactory, monkeypatch: pytest.MonkeyPatch, placement: str
) -> None:
    stack = ShimmieStack()
    app = make_pii_app(stack, **pii_backend.config(placement))
    with app.app_context():
        register(stack, "p1", FIRST)
        state: AppState = app.extensions["shimmie"]

        def sneak_in(call: int) -> None:
            if call == 1:
                register(stack, "p1", SECOND, expected=1)

        after_erase_stream(state, monkeypatch, sneak_in)
        assert stack.erase_pii("p1") == 2

        events = stack.history("p1")["history"]
        assert [(e.event_name, e.stream_version) for e in events] == [
            ("PERSON_NAMED", 1),
            ("PERSON_NAMED", 2),
            (PII_ERASED_EVENT, 3),
        ]
        assert [(e.data, e.pii_erased) for e in events[:2]] == [({"name": ""}, True), ({"name": ""}, True)]
        assert events[2].data == {"erased_events": 2}
    # The event that landed mid-erasure kept no PII: the erasure was done again.
    assert_absent(pii_backend.raw_pii_rows(app), "Ada First-Secret", "Bea Second-Secret")


def test_two_erasures_at_once_count_each_event_once(
    pii_backend: Backend, make_pii_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = ShimmieStack()
    app = make_pii_app(stack, **pii_backend.config())
    with app.app_context():
        register(stack, "p1", FIRST)
        state: AppState = app.extensions["shimmie"]
        inner: list[int] = []

        def other_erasure(call: int) -> None:
            if call == 1:  # the outer erasure has deleted the rows; another one runs to its end
                inner.append(stack.erase_pii("p1"))

        after_erase_stream(state, monkeypatch, other_erasure)
        outer = stack.erase_pii("p1")

        assert (inner, outer) == ([1], 0)
        assert erasures(stack, "p1") == [{"erased_events": 1}, {"erased_events": 0}]
    assert_absent(pii_backend.raw_pii_rows(app), "Ada First-Secret")


def test_expected_version_refuses_before_erasing_anything(
    pii_backend: Backend, make_pii_app: AppFactory
) -> None:
    stack = ShimmieStack()
    app = make_pii_app(stack, **pii_backend.config())
    with app.app_context():
        register(stack, "p1", FIRST)
        register(stack, "p1", SECOND, expected=1)
        before = stack.read_events()
        with pytest.raises(StreamVersionError) as raised:
            stack.erase_pii("p1", expected_version=1)
        assert raised.value.conflicts == [{"stream_id": "p1", "expected": 1, "actual": 2}]
        assert stack.read_events() == before
        assert [e.data["name"] for e in stack.history("p1")["history"]] == [
            "Ada First-Secret",
            "Bea Second-Secret",
        ]
        with pytest.raises(StreamNotFoundError):  # no events: nothing to check, nothing recorded
            stack.erase_pii("nobody", expected_version=1)

        assert stack.erase_pii("p1", expected_version=2) == 2


def test_erasure_gives_up_with_a_conflict_when_the_stream_never_holds_still(
    pii_backend: Backend, make_pii_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = ShimmieStack()
    app = make_pii_app(stack, **pii_backend.config())
    with app.app_context():
        register(stack, "p1", FIRST)
        state: AppState = app.extensions["shimmie"]
        after_erase_stream(
            state, monkeypatch, lambda call: stack.record_unchecked_event("p1", "PERSON_SEEN", {"n": call})
        )
        with pytest.raises(StreamVersionError):
            stack.erase_pii("p1")
        seen = stack.history("p1", event_names=["PERSON_SEEN"])["history"]
        assert len(seen) == ERASE_ATTEMPTS
        assert erasures(stack, "p1") == []
        # The PII is gone all the same: every attempt erased it.
        assert stack.history("p1")["history"][0].pii_erased


class Names(Model):
    """Names by stream, anonymised on erasure; snapshots enabled."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    @subscribe("PERSON_NAMED")
    def named(self, event: Event) -> None:
        self.names[event.stream_id] = event.data["name"]

    @subscribe(PII_ERASED_EVENT)
    def erased(self, event: Event) -> None:
        if event.stream_id in self.names:
            self.names[event.stream_id] = ""

    @subscribe("PERSON_SEEN")
    def seen(self, event: Event) -> None:
        pass

    def snapshot(self) -> Any:
        return self.names

    def restore(self, state: Any) -> None:
        self.names = dict(state)


def test_a_snapshot_taken_during_the_erasure_keeps_no_erased_value(
    pii_backend: Backend, make_pii_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Other writes reach a snapshot checkpoint after the snapshots were deleted and before the
    erasure event is applied: that snapshot (with the name in it) must go too."""
    stack = ShimmieStack()
    stack.register_model(Names)
    app = make_pii_app(stack, SHIMMIE_SNAPSHOT_EVERY=3, **pii_backend.config())
    with app.app_context():
        register(stack, "p1", FIRST)
        state: AppState = app.extensions["shimmie"]
        store = state.event_store
        original = store.delete_snapshots
        calls = [0]

        def delete_then_others_write() -> int:
            deleted = original()
            calls[0] += 1
            if calls[0] == 1:
                stack.record_unchecked_events([NewEvent(f"o{n}", "PERSON_SEEN", {}) for n in range(2)])
                assert [s.position for s in store.load_snapshots()] == [3]  # taken with the name in it
            return deleted

        monkeypatch.setattr(store, "delete_snapshots", delete_then_others_write)
        assert stack.erase_pii("p1") == 1
        kept = [s.state_json for s in store.load_snapshots()]
        assert not any("Ada First-Secret" in text for text in kept), kept
        assert stack.model(Names).names["p1"] == ""

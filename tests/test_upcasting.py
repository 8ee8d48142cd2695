"""Upcasters: new events stored at the newest version, old ones delivered upcast, never rewritten."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask

from flask_shimmie import NO_STREAM, Event, Model, ShimmieStack, subscribe
from tests.pii_backends import (
    AppFactory,
    Backend,
    assert_absent,
)


class Songs(Model):
    """The SONG_CREATED payloads as delivered, with the version each was stored at."""

    def __init__(self) -> None:
        self.created: list[tuple[dict[str, Any], int, bool]] = []

    @subscribe("SONG_CREATED")
    def song_created(self, event: Event) -> None:
        self.created.append((dict(event.data), event.schema_version, event.replay))


class Calls:
    """Upcasters that count their calls: v1 ``name`` -> v2 ``title``; v2 -> v3 adds ``genre``."""

    def __init__(self) -> None:
        self.v1: list[dict[str, Any]] = []
        self.v2: list[dict[str, Any]] = []

    def v1_to_v2(self, data: dict[str, Any]) -> dict[str, Any]:
        self.v1.append(dict(data))
        # Mutates its input on purpose: the stored data must not change for it.
        data["title"] = data.pop("name")
        return data

    def v2_to_v3(self, data: dict[str, Any]) -> dict[str, Any]:
        self.v2.append(dict(data))
        return {**data, "genre": data.get("genre", "unknown")}


def new_stack(calls: Calls | None = None, upto: int = 3) -> ShimmieStack:
    """A stack whose SONG_CREATED payloads are at version ``upto`` (upcasters below it)."""
    stack = ShimmieStack()
    stack.register_model(Songs)
    if calls is not None and upto >= 2:
        stack.upcaster("SONG_CREATED", 1, calls.v1_to_v2)
    if calls is not None and upto >= 3:
        stack.upcaster("SONG_CREATED", 2, calls.v2_to_v3)
    return stack


def raw_songs(backend: Backend, app: Flask) -> list[tuple[str, dict[str, Any], int]]:
    return [
        (row["stream_id"], json.loads(row["data"]), row["schema_version"])
        for row in backend.raw_event_rows(app)
        if row["event_name"] == "SONG_CREATED"
    ]


def test_new_events_are_stored_at_one_plus_the_highest_from_version(
    pii_backend: Backend, make_pii_app: AppFactory
) -> None:
    calls = Calls()
    stack = ShimmieStack()
    stack.register_model(Songs)
    stack.upcaster("SONG_CREATED", 2, calls.v2_to_v3)  # registered out of order on purpose
    stack.upcaster("SONG_CREATED", 1, calls.v1_to_v2)
    app = make_pii_app(stack, **pii_backend.config())
    v3 = {"title": "Blue", "genre": "folk"}
    with app.app_context():
        song = stack.record_event("song-1", "SONG_CREATED", v3, expected_version=NO_STREAM)
        other = stack.record_unchecked_event("song-1", "SONG_PLAYED", {"times": 1})

        assert (song.schema_version, song.data) == (3, v3)
        assert other.schema_version == 1
        assert stack.model(Songs).created == [(v3, 3, False)]
        assert [(e.data, e.schema_version) for e in stack.history("song-1")["history"]] == [
            (v3, 3),
            ({"times": 1}, 1),
        ]
        stack.replay()
        assert stack.model(Songs).created == [(v3, 3, True)]

    assert calls.v1 == [] and calls.v2 == []
    assert raw_songs(pii_backend, app) == [("song-1", v3, 3)]
    assert [row["schema_version"] for row in pii_backend.raw_event_rows(app)] == [3, 1]


def test_old_events_are_delivered_upcast_to_the_newest_version_after_a_restart(
    durable_pii_backend: Backend, make_pii_app: AppFactory
) -> None:
    config = durable_pii_backend.config()
    # Version 1, before any upcaster existed.
    first = new_stack()
    app = make_pii_app(first, **config)
    with app.app_context():
        first.record_event("song-1", "SONG_CREATED", {"name": "Blue"}, expected_version=NO_STREAM)
    first.shutdown(app)
    # Version 2: one upcaster.
    second = new_stack(Calls(), upto=2)
    app = make_pii_app(second, **config)
    with app.app_context():
        assert second.model(Songs).created == []  # model() does not start the stack
        second.startup()
        assert second.model(Songs).created == [({"title": "Blue"}, 1, True)]
        second.record_event("song-2", "SONG_CREATED", {"title": "River"}, expected_version=NO_STREAM)
    second.shutdown(app)
    # Version 3: the whole chain.
    calls = Calls()
    stack = new_stack(calls)
    app = make_pii_app(stack, **config)
    stack.startup(app)
    with app.app_context():
        newest = {"title": "Both Sides Now", "genre": "folk"}
        stack.record_event("song-3", "SONG_CREATED", newest, expected_version=NO_STREAM)

        blue = {"title": "Blue", "genre": "unknown"}
        river = {"title": "River", "genre": "unknown"}
        assert stack.model(Songs).created == [(blue, 1, True), (river, 2, True), (newest, 3, False)]
        # The v1 event went through both upcasters, the v2 one through the second only.
        assert calls.v1 == [{"name": "Blue"}]
        assert calls.v2 == [{"title": "Blue"}, {"title": "River"}]

        histories = stack.history(["song-1", "song-2", "song-3"])["history"]
        assert [(e.data, e.schema_version) for e in histories] == [(blue, 1), (river, 2), (newest, 3)]
        assert [e.data for e in stack.read_events()] == [blue, river, newest]
        stack.replay()
        assert stack.model(Songs).created == [(blue, 1, True), (river, 2, True), (newest, 3, True)]

    # The stored data was never rewritten.
    assert raw_songs(durable_pii_backend, app) == [
        ("song-1", {"name": "Blue"}, 1),
        ("song-2", {"title": "River"}, 2),
        ("song-3", {"title": "Both Sides Now", "genre": "folk"}, 3),
    ]


def test_upcasters_registered_after_events_were_recorded_apply_to_every_reader(
    pii_backend: Backend, make_pii_app: AppFactory
) -> None:
    stack = new_stack()
    app = make_pii_app(stack, **pii_backend.config())
    calls = Calls()
    with app.app_context():
        stack.record_event("song-1", "SONG_CREATED", {"name": "Blue"}, expected_version=NO_STREAM)
        stack.upcaster("SONG_CREATED", 1, calls.v1_to_v2)
        stack.upcaster("SONG_CREATED", 2, calls.v2_to_v3)
        upcast = {"title": "Blue", "genre": "unknown"}

        for _ in range(2):  # reading twice gives the same: the upcaster's mutation stays in memory
            (event,) = stack.history("song-1")["history"]
            assert (event.data, event.schema_version) == (upcast, 1)
        stack.replay()
        stack.replay()
        assert stack.model(Songs).created == [(upcast, 1, True)]
        newest = stack.record_unchecked_event("song-2", "SONG_CREATED", {"title": "River", "genre": "folk"})
        assert newest.schema_version == 3
        assert [e.data for e in stack.read_events()] == [upcast, {"title": "River", "genre": "folk"}]

    assert raw_songs(pii_backend, app) == [
        ("song-1", {"name": "Blue"}, 1),
        ("song-2", {"title": "River", "genre": "folk"}, 3),
    ]


def test_upcasters_see_the_pii_merged_back_and_then_its_anonymised_form(
    pii_backend: Backend, make_pii_app: AppFactory
) -> None:
    stack = ShimmieStack()
    seen: list[dict[str, Any]] = []

    def nest_contact(data: dict[str, Any]) -> dict[str, Any]:
        seen.append(dict(data))
        return {"name": data["name"], "contact": {"email": data["email"]}}

    app = make_pii_app(stack, **pii_backend.config())
    with app.app_context():
        stack.record_unchecked_event(
            "fan-1", "FAN_JOINED", {"name": "Fan", "email": "fan.secret@example.com"}, pii_fields=["email"]
        )
        stack.upcaster("FAN_JOINED", 1, nest_contact)

        (event,) = stack.history("fan-1")["history"]
        assert event.data == {"name": "Fan", "contact": {"email": "fan.secret@example.com"}}
        assert stack.erase_pii("fan-1") == 1
        (event,) = stack.history("fan-1", event_names=["FAN_JOINED"])["history"]
        assert (event.data, event.pii_erased) == ({"name": "Fan", "contact": {"email": ""}}, True)

    assert seen == [
        {"name": "Fan", "email": "fan.secret@example.com"},
        {"name": "Fan", "email": ""},
    ]
    assert_absent(pii_backend.raw_event_rows(app) + pii_backend.raw_pii_rows(app), "fan.secret@example.com")


def identity(data: dict[str, Any]) -> dict[str, Any]:
    return data


@pytest.mark.parametrize(
    "from_version",
    [0, -1, True, "1", 1.0, None],
    ids=["zero", "negative", "bool", "str", "float", "None"],
)
def test_an_upcaster_from_a_version_below_1_or_not_a_whole_number_is_refused(from_version: Any) -> None:
    stack = ShimmieStack()
    with pytest.raises(ValueError, match="from_version"):
        stack.upcaster("SONG_CREATED", from_version, identity)


def test_registering_the_same_from_version_twice_is_refused_and_changes_nothing(
    make_pii_app: AppFactory,
) -> None:
    calls = Calls()
    stack = ShimmieStack()
    stack.upcaster("SONG_CREATED", 1, calls.v1_to_v2)
    with pytest.raises(ValueError, match="already registered"):
        stack.upcaster("SONG_CREATED", 1, identity)
    app = make_pii_app(stack)
    with pytest.raises(ValueError, match="already registered"):
        stack.upcaster("SONG_CREATED", 1, identity)
    with pytest.raises(ValueError):
        stack.upcaster("SONG_CREATED", 0, identity)

    stack.upcaster("SONG_PLAYED", 1, identity)  # another event's chain is its own
    with app.app_context():
        event = stack.record_unchecked_event("song-1", "SONG_CREATED", {"title": "Blue"})
        assert event.schema_version == 2
        assert stack.record_unchecked_event("song-1", "SONG_PLAYED", {}).schema_version == 2
        assert stack.record_unchecked_event("song-1", "SONG_LIKED", {}).schema_version == 1

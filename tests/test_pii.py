"""PII: kept out of the event store, merged back for readers, erasable per stream, on every backend.

Every test reads what the stores really hold (``tests.pii_backends``): the raw rows of
``shimmie_events`` and of every ``shimmie_pii`` table, behind the stack's back.
"""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import Schema, ValidationError, fields

import example_songs
from flask_shimmie import (
    NO_STREAM,
    PII_ERASED_EVENT,
    Event,
    Model,
    NewEvent,
    PiiNotConfiguredError,
    ShimmieStack,
    StreamVersionError,
    pii_erased,
    subscribe,
)
from flask_shimmie.pii import may_hold_pii, split_pii
from flask_shimmie.state import AppState
from flask_shimmie.storage.interface import PiiRecord, PiiStore
from tests.helpers import Journal, songs_app
from tests.pii_backends import (
    PII_COLUMNS,
    PLACEMENTS,
    AppFactory,
    Backend,
    MadeApps,
    assert_absent,
    raw_text,
)

# -- the payloads -------------------------------------------------------------------------------


class Contact(Schema):
    email = fields.String(required=True, metadata={"pii": True})
    phone = fields.String(load_default=None, allow_none=True, metadata={"pii": True})
    city = fields.String(required=True)


class PersonRegistered(Schema):
    name = fields.String(required=True, metadata={"pii": True})
    age = fields.Integer(required=True, metadata={"pii": True})
    height = fields.Float(required=True, metadata={"pii": True})
    vip = fields.Boolean(required=True, metadata={"pii": True})
    nickname = fields.String(allow_none=True, load_default=None, metadata={"pii": True})
    tags = fields.List(fields.String(), required=True, metadata={"pii": True})
    address = fields.Dict(required=True, metadata={"pii": True})
    contact = fields.Nested(Contact, required=True)
    plan = fields.String(required=True)


PERSON: dict[str, Any] = {
    "name": "Zoë Secretname",
    "age": 4711,
    "height": 187.25,
    "vip": True,
    "nickname": None,
    "tags": ["secret-tag-one", "secret-tag-two"],
    "address": {"street": "1 Secret Lane", "floor": 3, "lift": True, "flat": None},
    "contact": {"email": "zoe.secret@example.com", "phone": "+44 7700 900123", "city": "Leeds"},
    "plan": "gold",
}

#: PERSON as it reads once its PII is gone: "" strings, 0 numbers, False booleans, null stays null.
ANONYMISED: dict[str, Any] = {
    "name": "",
    "age": 0,
    "height": 0,
    "vip": False,
    "nickname": None,
    "tags": ["", ""],
    "address": {"street": "", "floor": 0, "lift": False, "flat": None},
    "contact": {"email": "", "phone": "", "city": "Leeds"},
    "plan": "gold",
}

PERSON_PII_FIELDS = {"name", "age", "height", "vip", "nickname", "tags", "address", "contact.email"}
PERSON_PII_FIELDS |= {"contact.phone"}

#: Strings of PERSON that are PII: none may appear in the event store.
PERSON_SECRETS = (
    "Zoë Secretname",
    "Secretname",
    "187.25",
    "secret-tag-one",
    "secret-tag-two",
    "1 Secret Lane",
    "zoe.secret@example.com",
    "+44 7700 900123",
)

#: An event without a schema whose PII is named at record time (dotted path for the nested one).
NOTE: dict[str, Any] = {
    "note": "the secret note text",
    "author": {"email": "author.secret@example.com", "role": "editor"},
}
NOTE_PII = ["note", "author.email"]
NOTE_SECRETS = ("the secret note text", "author.secret@example.com")
NOTE_ANONYMISED = {"note": "", "author": {"email": "", "role": "editor"}}


def person(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(PERSON)
    data.update(changes)
    return data


class People(Model):
    """What a read model would keep: the data it was given, and the erasures it heard of."""

    def __init__(self) -> None:
        self.people: dict[str, dict[str, Any]] = {}
        self.erasures: list[tuple[str, dict[str, Any], bool]] = []

    @subscribe("PERSON_REGISTERED")
    def registered(self, event: Event) -> None:
        self.people[event.stream_id] = {
            "data": copy.deepcopy(event.data),
            "pii_erased": event.pii_erased,
            "replay": event.replay,
        }

    @subscribe(PII_ERASED_EVENT)
    def erased(self, event: Event) -> None:
        self.erasures.append((event.stream_id, dict(event.data), event.replay))
        found = self.people.get(event.stream_id)
        if found is not None:
            found["data"]["name"] = ""
            found["forgotten"] = True


def new_stack() -> ShimmieStack:
    stack = ShimmieStack()
    stack.register_model(People)
    stack.register_model(Journal)
    stack.event_schema("PERSON_REGISTERED", PersonRegistered)
    return stack


def pii_app(make_pii_app: AppFactory, config: dict[str, Any]) -> tuple[ShimmieStack, Flask]:
    """A :func:`new_stack` and its testing app with ``config``."""
    stack = new_stack()
    return stack, make_pii_app(stack, **config)


def state_of(app: Flask) -> AppState:
    state: AppState = app.extensions["shimmie"]
    return state


def record_people(stack: ShimmieStack) -> tuple[Event, Event, Event]:
    """A PII event and a PII-free one on ``person-1``; a note with PII named at record time."""
    registered = stack.record_event("person-1", "PERSON_REGISTERED", PERSON, expected_version=NO_STREAM)
    moved = stack.record_event("person-1", "PERSON_MOVED", {"city": "York"}, expected_version=1)
    note = stack.record_unchecked_event("note-1", "NOTE_TAKEN", NOTE, pii_fields=NOTE_PII)
    return registered, moved, note


def leaf_strings(value: Any) -> list[str]:
    """Every scalar in ``value``, as text."""
    if isinstance(value, dict):
        return [s for item in value.values() for s in leaf_strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in leaf_strings(item)]
    return [str(value)]


def assert_pii_rows(
    backend: Backend, app: Flask, expected: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]]
) -> None:
    """The PII rows are exactly ``{event_id: (stream_id, secrets it holds, values it must not hold)}``."""
    rows = backend.raw_pii_rows(app)
    assert sorted(row["event_id"] for row in rows) == sorted(expected), rows
    for row in rows:
        assert set(row) == PII_COLUMNS, row
        stream_id, secrets, public = expected[row["event_id"]]
        assert row["stream_id"] == stream_id
        held = leaf_strings(json.loads(row["data"]))
        for secret in secrets:
            assert any(secret in value for value in held), (secret, row)
        for value in public:
            assert value not in held, (value, row)


def assert_event_store_clean(backend: Backend, app: Flask, *secrets: str) -> None:
    rows = backend.raw_event_rows(app)
    assert rows, "the event store holds no rows at all"
    assert_absent(rows, *secrets)


def stored_data(backend: Backend, app: Flask) -> dict[str, Any]:
    """The stored ``data`` by event id, decoded from the raw rows."""
    return {row["event_id"]: json.loads(row["data"]) for row in backend.raw_event_rows(app)}


# -- PII stays out of the event store ----------------------------------------------------------


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_pii_values_never_reach_the_event_store(
    pii_backend: Backend, make_pii_app: AppFactory, placement: str
) -> None:
    stack, app = pii_app(make_pii_app, pii_backend.config(placement))
    with app.app_context():
        registered, moved, note = record_people(stack)

    assert registered.data == PERSON
    assert set(registered.pii_fields) == PERSON_PII_FIELDS
    assert note.data == NOTE and set(note.pii_fields) == set(NOTE_PII)
    assert moved.pii_fields == ()
    assert_event_store_clean(pii_backend, app, *PERSON_SECRETS, *NOTE_SECRETS)
    # The event row keeps typed placeholders, never the values.
    stored = stored_data(pii_backend, app)
    assert stored[registered.event_id] == ANONYMISED
    assert stored[note.event_id] == NOTE_ANONYMISED
    assert stored[moved.event_id] == {"city": "York"}
    assert_pii_rows(
        pii_backend,
        app,
        {
            registered.event_id: ("person-1", PERSON_SECRETS, ("gold", "Leeds")),
            note.event_id: ("note-1", NOTE_SECRETS, ("editor",)),
        },
    )
    beside_events = pii_backend.pii_rows_in_event_database(app)
    if placement == "colocated":
        assert len(beside_events) == 2
    else:
        assert beside_events == [], "a separate PII store left PII rows beside the events"


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_the_pii_table_has_only_the_event_id_the_stream_id_the_values_and_a_timestamp(
    durable_pii_backend: Backend, make_pii_app: AppFactory, placement: str
) -> None:
    stack, app = pii_app(make_pii_app, durable_pii_backend.config(placement))
    with app.app_context():
        record_people(stack)

    url = durable_pii_backend.event_url if placement == "colocated" else durable_pii_backend.pii_url
    assert durable_pii_backend.pii_columns(url) == PII_COLUMNS


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_models_history_reads_replay_and_retries_see_the_pii_merged_back(
    pii_backend: Backend, make_pii_app: AppFactory, placement: str
) -> None:
    stack, app = pii_app(make_pii_app, pii_backend.config(placement))
    with app.app_context():
        registered, moved, note = record_people(stack)

        people = stack.model(People)
        assert people.people["person-1"] == {"data": PERSON, "pii_erased": False, "replay": False}
        history = stack.history("person-1")["history"]
        assert [e.data for e in history] == [PERSON, {"city": "York"}]
        assert [e.pii_erased for e in history] == [False, False]
        read = stack.read_events()
        assert [e.data for e in read] == [PERSON, {"city": "York"}, NOTE]
        assert set(read[0].pii_fields) == PERSON_PII_FIELDS

        stack.replay()
        replayed = stack.model(People)
        assert replayed is not people
        assert replayed.people["person-1"] == {"data": PERSON, "pii_erased": False, "replay": True}
        assert [e.data for e in stack.model(Journal).events] == [PERSON, {"city": "York"}, NOTE]

        # A retry with a known event_id returns the stored event, PII merged back, writing nothing.
        retried = stack.record_event(
            "person-1",
            "PERSON_REGISTERED",
            PERSON,
            expected_version=NO_STREAM,
            event_id=registered.event_id,
        )
        assert retried.sequence_num == registered.sequence_num
        assert retried.data == PERSON
        assert len(stack.read_events()) == 3


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_cli_export_with_pii_merges_it_back_and_without_leaves_it_out(
    pii_backend: Backend, make_pii_app: AppFactory, placement: str, tmp_path: Path
) -> None:
    stack, app = pii_app(make_pii_app, pii_backend.config(placement))
    with app.app_context():
        registered, moved, note = record_people(stack)
    runner = app.test_cli_runner()

    with_pii = tmp_path / "with-pii.jsonl"
    result = runner.invoke(args=["shimmie", "export", "--with-pii", str(with_pii)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in with_pii.read_text(encoding="utf-8").splitlines()]
    assert [line["data"] for line in lines] == [PERSON, {"city": "York"}, NOTE]
    assert set(lines[0]["pii_fields"]) == PERSON_PII_FIELDS
    assert set(lines[2]["pii_fields"]) == set(NOTE_PII)
    assert lines[1]["pii_fields"] == []

    without = tmp_path / "without.jsonl"
    result = runner.invoke(args=["shimmie", "export", str(without)])
    assert result.exit_code == 0, result.output
    text = without.read_text(encoding="utf-8")
    for secret in (*PERSON_SECRETS, *NOTE_SECRETS):
        assert secret not in text
    assert [json.loads(line)["event_id"] for line in text.splitlines()] == [
        registered.event_id,
        moved.event_id,
        note.event_id,
    ]


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_a_restarted_app_sees_the_pii_merged_back(
    durable_pii_backend: Backend, make_pii_app: AppFactory, placement: str
) -> None:
    config = durable_pii_backend.config(placement)
    first_stack, first = pii_app(make_pii_app, config)
    with first.app_context():
        record_people(first_stack)
    first_stack.shutdown(first)

    stack, app = pii_app(make_pii_app, config)
    stack.startup(app)
    with app.app_context():
        assert stack.model(People).people["person-1"] == {"data": PERSON, "pii_erased": False, "replay": True}
        assert [e.data for e in stack.history(["person-1", "note-1"])["history"]] == [
            PERSON,
            {"city": "York"},
            NOTE,
        ]
        stack.replay()
        assert stack.model(People).people["person-1"]["data"] == PERSON
    assert_event_store_clean(durable_pii_backend, app, *PERSON_SECRETS, *NOTE_SECRETS)


# -- refused writes leave no PII behind ----------------------------------------------------------


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_a_refused_write_leaves_no_pii_anywhere(
    pii_backend: Backend, make_pii_app: AppFactory, placement: str
) -> None:
    stack, app = pii_app(make_pii_app, pii_backend.config(placement))
    other = person(name="Ottilie Otherperson", contact={"email": "otti@example.com", "city": "Hull"})
    with app.app_context():
        first = stack.record_event("person-1", "PERSON_REGISTERED", PERSON, expected_version=NO_STREAM)
        with pytest.raises(StreamVersionError):
            stack.record_event("person-1", "PERSON_REGISTERED", other, expected_version=NO_STREAM)
        with pytest.raises(StreamVersionError):
            stack.record_events(
                [
                    NewEvent("person-2", "PERSON_REGISTERED", other),
                    NewEvent("person-1", "PERSON_RENAMED", {"name": "Otto"}, pii_fields=["name"]),
                ],
                expected_versions={"person-2": NO_STREAM, "person-1": 7},
            )
        with pytest.raises(ValidationError):
            stack.record_unchecked_event("person-3", "PERSON_REGISTERED", person(age="old", name="Otto"))
        assert [e.event_id for e in stack.read_events()] == [first.event_id]

    assert_pii_rows(pii_backend, app, {first.event_id: ("person-1", PERSON_SECRETS, ())})
    everything = pii_backend.raw_event_rows(app) + pii_backend.raw_pii_rows(app)
    assert_absent(everything, "Ottilie", "otti@example.com", "Otto")


# -- SHIMMIE_PII_STORE = False ---------------------------------------------------------------------


def test_without_a_pii_store_recording_pii_raises_and_records_nothing(
    pii_backend: Backend, make_pii_app: AppFactory
) -> None:
    stack, app = pii_app(make_pii_app, pii_backend.config("off"))
    with app.app_context():
        with pytest.raises(PiiNotConfiguredError):
            stack.record_event("person-1", "PERSON_REGISTERED", PERSON, expected_version=NO_STREAM)
        with pytest.raises(PiiNotConfiguredError):
            stack.record_unchecked_event("note-1", "NOTE_TAKEN", NOTE, pii_fields=NOTE_PII)
        with pytest.raises(PiiNotConfiguredError):
            stack.record_events(
                [
                    NewEvent("plain-1", "PLAIN", {"n": 1}),
                    NewEvent("note-2", "NOTE_TAKEN", NOTE, None, NOTE_PII),
                ]
            )
        assert stack.read_events() == []
        assert stack.model(Journal).events == []

        # Events without PII still work, and so do PII fields that are absent from the data.
        plain = stack.record_unchecked_event("plain-1", "PLAIN", {"n": 1})
        unnamed = stack.record_unchecked_event("note-3", "NOTE_TAKEN", {"topic": "x"}, pii_fields=["note"])
        assert [e.event_id for e in stack.read_events()] == [plain.event_id, unnamed.event_id]
        assert unnamed.data == {"topic": "x"}
        with pytest.raises(PiiNotConfiguredError):
            stack.erase_pii("plain-1")

    assert_absent(pii_backend.raw_event_rows(app), *PERSON_SECRETS, *NOTE_SECRETS)
    if pii_backend.name == "memory":
        assert pii_backend.raw_pii_rows(app) == []
    else:
        assert pii_backend.pii_rows_in_event_database(app) == []


# -- erasure -------------------------------------------------------------------------------------


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_erase_pii_deletes_the_pii_for_good_and_readers_see_anonymised_values(
    pii_backend: Backend, make_pii_app: AppFactory, placement: str
) -> None:
    stack, app = pii_app(make_pii_app, pii_backend.config(placement))
    bob = {
        "name": "Bob Untouched",
        "age": 33,
        "height": 170.5,
        "vip": False,
        "nickname": "bobby-kept",
        "tags": ["bob-tag"],
        "address": {"street": "2 Kept Road"},
        "contact": {"email": "bob.kept@example.com", "phone": None, "city": "Bath"},
        "plan": "basic",
    }
    signals: list[tuple[Any, dict[str, Any]]] = []

    def on_erased(sender: Any, **kwargs: Any) -> None:
        signals.append((sender, kwargs))

    with app.app_context(), pii_erased.connected_to(on_erased):
        first = stack.record_event("person-1", "PERSON_REGISTERED", PERSON, expected_version=NO_STREAM)
        moved = stack.record_event("person-1", "PERSON_MOVED", {"city": "York"}, expected_version=1)
        renamed = stack.record_event(
            "person-1", "PERSON_RENAMED", {"name": "Zoë Newsecret"}, expected_version=2, pii_fields=["name"]
        )
        kept = stack.record_event("person-2", "PERSON_REGISTERED", bob, expected_version=NO_STREAM)
        before = len(stack.read_events())

        assert stack.erase_pii("person-1") == 2

        # The erasure is an event on the stream, with no PII in it.
        events = stack.read_events()
        assert len(events) == before + 1
        erasure = events[-1]
        assert (erasure.stream_id, erasure.event_name, erasure.data) == (
            "person-1",
            PII_ERASED_EVENT,
            {"erased_events": 2},
        )
        assert erasure.stream_version == 4 and erasure.pii_fields == ()
        assert signals == [(app, {"stream_id": "person-1", "erased_events": 2})]

        # Every reader sees anonymised values, marked pii_erased; other streams are untouched.
        by_id = {e.event_id: e for e in events}
        assert by_id[first.event_id].data == ANONYMISED and by_id[first.event_id].pii_erased
        assert by_id[renamed.event_id].data == {"name": ""} and by_id[renamed.event_id].pii_erased
        assert by_id[moved.event_id].data == {"city": "York"} and not by_id[moved.event_id].pii_erased
        assert by_id[kept.event_id].data == bob and not by_id[kept.event_id].pii_erased
        history = stack.history("person-1")["history"]
        assert [(e.data, e.pii_erased) for e in history] == [
            (ANONYMISED, True),
            ({"city": "York"}, False),
            ({"name": ""}, True),
            ({"erased_events": 2}, False),
        ]

        # The models heard of it live.
        people = stack.model(People)
        assert people.erasures == [("person-1", {"erased_events": 2}, False)]
        assert people.people["person-1"]["data"]["name"] == ""
        assert people.people["person-2"]["data"] == bob

        # A replay gives the same result, from anonymised data.
        stack.replay()
        people = stack.model(People)
        assert people.people["person-1"]["data"] == ANONYMISED
        assert people.people["person-1"]["pii_erased"] is True
        assert people.people["person-2"] == {"data": bob, "pii_erased": False, "replay": True}
        assert people.erasures == [("person-1", {"erased_events": 2}, True)]

        # Retrying the original write (same event_id) returns the erased event and brings nothing back.
        retried = stack.record_event(
            "person-1", "PERSON_REGISTERED", PERSON, expected_version=NO_STREAM, event_id=first.event_id
        )
        assert (retried.sequence_num, retried.data, retried.pii_erased) == (
            first.sequence_num,
            ANONYMISED,
            True,
        )

        # Erasing again is harmless.
        assert stack.erase_pii("person-1") == 0
        assert [(e.data, e.pii_erased) for e in stack.history("person-1")["history"]][:3] == [
            (ANONYMISED, True),
            ({"city": "York"}, False),
            ({"name": ""}, True),
        ]
        later = stack.history("person-1", event_names=[PII_ERASED_EVENT])["history"]
        assert [e.data["erased_events"] for e in later][1:] == [0] * (len(later) - 1)
        assert stack.history("person-2")["history"][0].data == bob

    # No copy of the erased values is left in any table; the other stream's PII is.
    bob_secrets = ("Bob Untouched", "170.5", "bobby-kept", "bob-tag", "2 Kept Road", "bob.kept@example.com")
    assert_pii_rows(pii_backend, app, {kept.event_id: ("person-2", bob_secrets, ("basic", "Bath"))})
    everything = pii_backend.raw_event_rows(app) + pii_backend.raw_pii_rows(app)
    assert_absent(everything, *PERSON_SECRETS, "Zoë Newsecret", "Newsecret")
    assert_absent(pii_backend.raw_event_rows(app), *bob_secrets)


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_a_restart_after_erasure_shows_the_anonymised_values(
    durable_pii_backend: Backend, make_pii_app: AppFactory, placement: str
) -> None:
    config = durable_pii_backend.config(placement)
    first_stack, first = pii_app(make_pii_app, config)
    with first.app_context():
        registered = first_stack.record_event(
            "person-1", "PERSON_REGISTERED", PERSON, expected_version=NO_STREAM
        )
        first_stack.record_unchecked_event("note-1", "NOTE_TAKEN", NOTE, pii_fields=NOTE_PII)
        assert first_stack.erase_pii("person-1") == 1
    first_stack.shutdown(first)

    stack, app = pii_app(make_pii_app, config)
    stack.startup(app)
    with app.app_context():
        people = stack.model(People)
        assert people.people["person-1"] == {
            "data": {**ANONYMISED, "name": ""},
            "pii_erased": True,
            "replay": True,
            "forgotten": True,
        }
        assert people.erasures == [("person-1", {"erased_events": 1}, True)]
        (event,) = stack.history("person-1", event_names=["PERSON_REGISTERED"])["history"]
        assert (event.event_id, event.data, event.pii_erased) == (registered.event_id, ANONYMISED, True)
        assert [e.data for e in stack.history("note-1")["history"]] == [NOTE]
        stack.replay()
        assert stack.model(People).people["person-1"]["data"] == ANONYMISED

    assert_absent(
        durable_pii_backend.raw_event_rows(app) + durable_pii_backend.raw_pii_rows(app), *PERSON_SECRETS
    )


# -- orphaned PII rows (separate PII store) ----------------------------------------------------


def pii_store_of(app: Flask) -> PiiStore:
    """``app``'s PII store (there must be one)."""
    pii_store = state_of(app).pii_store
    assert isinstance(pii_store, PiiStore)
    return pii_store


def orphan(stream_id: str) -> PiiRecord:
    """A PII row whose event never committed, as a crash between the two writes leaves it."""
    return PiiRecord(str(uuid.uuid4()), stream_id, json.dumps({"name": "Orphaned Secret"}))


def test_an_orphaned_pii_row_is_never_read_and_purge_orphans_deletes_it(
    pii_backend: Backend, make_pii_app: AppFactory
) -> None:
    stack, app = pii_app(make_pii_app, pii_backend.config("separate"))
    with app.app_context():
        kept = stack.record_event("person-1", "PERSON_REGISTERED", PERSON, expected_version=NO_STREAM)
        state = state_of(app)
        pii_store = pii_store_of(app)
        lost = orphan("person-1")
        pii_store.put([lost])

        assert "Orphaned Secret" not in json.dumps([e.to_json() for e in stack.read_events()])
        assert "Orphaned Secret" not in json.dumps(
            [e.to_json() for e in stack.history("person-1")["history"]]
        )
        stack.replay()
        assert "Orphaned Secret" not in repr(stack.model(Journal).events)

        # Too young to be told from a write in flight: kept.
        assert pii_store.purge_orphans(state.event_store.existing_event_ids) == 0
        assert lost.event_id in pii_store.get_json([lost.event_id])

        assert pii_store.purge_orphans(state.event_store.existing_event_ids, older_than=0) == 1
        assert pii_store.get_json([lost.event_id]) == {}
        assert stack.history("person-1")["history"][0].data == PERSON

    assert_pii_rows(pii_backend, app, {kept.event_id: ("person-1", PERSON_SECRETS, ())})


def test_an_old_orphaned_pii_row_is_purged_at_the_next_startup(
    pii_backend: Backend, make_pii_app: AppFactory
) -> None:
    stack, app = pii_app(make_pii_app, pii_backend.config("separate"))
    with app.app_context():
        kept = stack.record_event("person-1", "PERSON_REGISTERED", PERSON, expected_version=NO_STREAM)
        pii_store = pii_store_of(app)
        old = orphan("person-1")
        pii_store.put([old])
    pii_backend.backdate_pii_rows(app, 3600)
    young = orphan("person-2")
    with app.app_context():
        pii_store.put([young])

    stack.shutdown(app)
    stack.startup(app)

    assert sorted(row["event_id"] for row in pii_backend.raw_pii_rows(app)) == sorted(
        [kept.event_id, young.event_id]
    )
    with app.app_context():
        assert stack.history("person-1")["history"][0].data == PERSON


def test_erase_pii_counts_only_events_that_were_recorded(
    pii_backend: Backend, make_pii_app: AppFactory
) -> None:
    stack, app = pii_app(make_pii_app, pii_backend.config("separate"))
    with app.app_context():
        stack.record_event("person-1", "PERSON_REGISTERED", PERSON, expected_version=NO_STREAM)
        pii_store = pii_store_of(app)
        pii_store.put([orphan("person-1")])

        assert stack.erase_pii("person-1") == 1
        assert stack.history("person-1")["history"][-1].data == {"erased_events": 1}


# -- the songs example ---------------------------------------------------------------------------

SUBMITTER = {"name": "Sally Submitter", "email": "sally.secret@example.com"}


def made_songs_app(backend: Backend, made_apps: MadeApps) -> Flask:
    app = songs_app({"TESTING": True, **backend.config("colocated")})
    made_apps.append((example_songs.stack, app))
    return app


def test_songs_submitter_stays_out_of_the_event_store_and_can_be_erased(
    pii_backend: Backend, made_apps: MadeApps
) -> None:
    app = made_songs_app(pii_backend, made_apps)
    client = app.test_client()
    song = {"title": "Blue", "artist": "Joni Mitchell", "year": "1971", "submitted_by": SUBMITTER}
    response = client.post("/v1/songs", json=song)
    assert response.status_code == 201, response.get_data(as_text=True)
    location = response.headers["Location"]
    song_id = location.rsplit("/", 1)[1]
    other = client.post("/v1/songs", json={**song, "title": "River", "submitted_by": {**SUBMITTER}})
    assert other.status_code == 201
    other_location = other.headers["Location"]

    assert client.get(location).get_json()["submitted_by"] == SUBMITTER
    assert_absent(pii_backend.raw_event_rows(app), "Sally", "sally.secret@example.com")
    assert json.loads(pii_backend.raw_event_rows(app)[0]["data"])["submitted_by"] == {"name": "", "email": ""}

    erased = client.delete(f"/v1/songs/{song_id}/submitter")
    assert erased.status_code == 200, erased.get_data(as_text=True)
    assert erased.get_json() == {"erased_events": 1}
    assert client.get(location).get_json()["submitted_by"] == {"name": "", "email": ""}
    assert client.get(other_location).get_json()["submitted_by"] == SUBMITTER
    with app.app_context():
        (created,) = example_songs.stack.history(song_id, event_names=["SONG_CREATED"])["history"]
        assert created.pii_erased and created.data["submitted_by"] == {"name": "", "email": ""}
    rows = pii_backend.raw_event_rows(app) + pii_backend.raw_pii_rows(app)
    assert raw_text(rows).count("sally.secret@example.com") == 1  # the other song's PII row only

    if pii_backend.durable:
        example_songs.stack.shutdown(app)
        app = made_songs_app(pii_backend, made_apps)
        client = app.test_client()
    else:
        with app.app_context():
            example_songs.stack.replay()
    restored = client.get(location)
    assert restored.status_code == 200, restored.get_data(as_text=True)
    assert restored.get_json()["submitted_by"] == {"name": "", "email": ""}
    assert restored.get_json()["title"] == "Blue"
    assert client.get(other_location).get_json()["submitted_by"] == SUBMITTER


_keys = st.sampled_from(["a", "b", "email", "members"])
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=3),
    max_leaves=8,
)
_paths = st.lists(
    st.lists(st.sampled_from(["a", "b", "email", "members[]"]), min_size=1, max_size=3).map(".".join),
    max_size=3,
)


# No deadline: on a loaded machine one example can take longer than hypothesis' default 200 ms.
@settings(deadline=None, database=None)
@given(data=st.dictionaries(_keys, _json, max_size=4), paths=_paths)
def test_a_payload_that_may_hold_no_pii_has_none_to_split(data: dict[str, Any], paths: list[str]) -> None:
    # The recorder skips split_pii when may_hold_pii says no: it must then find nothing.
    _, values, present = split_pii(copy.deepcopy(data), paths)
    if not may_hold_pii(data, paths):
        assert values == {} and present == ()
    if present:
        assert may_hold_pii(data, paths)

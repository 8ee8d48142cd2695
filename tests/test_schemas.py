"""Event schemas and ``@stack.arguments``: validation at record time and at the request, on every backend."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any

import pytest
from flask import Blueprint, Flask
from marshmallow import Schema, ValidationError, fields, validate

from flask_shimmie import (
    NO_STREAM,
    InvalidEventError,
    NewEvent,
    ShimmieStack,
)
from tests.helpers import Journal
from tests.pii_backends import (
    AppFactory,
    Backend,
    assert_absent,
)


class AlbumReleased(Schema):
    title = fields.String(required=True, validate=validate.Length(min=1))
    artist_name = fields.String(required=True, data_key="artistName")
    released = fields.Date(required=True)
    announced_at = fields.DateTime(required=True)
    price = fields.Decimal(as_string=True, required=True)
    tracks = fields.Integer(load_default=10)
    rating = fields.Float(load_default=0.5)
    tags = fields.List(fields.String(), load_default=list)


ALBUM_IN = {
    "title": "Blue",
    "artistName": "Joni Mitchell",
    "released": "1971-06-22",
    "announced_at": "1971-05-01T09:30:00+00:00",
    "price": "9.99",
    "rating": 5,
}

#: ``schema.dump(schema.load(ALBUM_IN))``: defaults applied, plain JSON.
ALBUM_STORED = {
    "title": "Blue",
    "artistName": "Joni Mitchell",
    "released": "1971-06-22",
    "announced_at": "1971-05-01T09:30:00+00:00",
    "price": "9.99",
    "tracks": 10,
    "rating": 5.0,
    "tags": [],
}


def new_stack() -> ShimmieStack:
    stack = ShimmieStack()
    stack.register_model(Journal)
    stack.event_schema("ALBUM_RELEASED", AlbumReleased)
    return stack


def stored_rows(backend: Backend, app: Flask) -> list[dict[str, Any]]:
    return [{**row, "data": json.loads(row["data"])} for row in backend.raw_event_rows(app)]


# -- event schemas -------------------------------------------------------------------------------


def test_invalid_data_raises_validation_error_and_records_nothing(
    pii_backend: Backend, make_pii_app: AppFactory
) -> None:
    stack = new_stack()
    app = make_pii_app(stack, **pii_backend.config())
    with app.app_context():
        with pytest.raises(ValidationError) as missing:
            stack.record_event("album-1", "ALBUM_RELEASED", {"title": "Blue"}, expected_version=NO_STREAM)
        assert set(missing.value.messages) == {"artistName", "released", "announced_at", "price"}

        with pytest.raises(ValidationError) as wrong:
            stack.record_unchecked_event(
                "album-1", "ALBUM_RELEASED", {**ALBUM_IN, "title": "", "tracks": "many", "label": "Reprise"}
            )
        assert set(wrong.value.messages) == {"title", "tracks", "label"}

        with pytest.raises(ValidationError):
            stack.record_events(
                [
                    NewEvent("album-2", "ALBUM_RELEASED", ALBUM_IN),
                    NewEvent("album-3", "ALBUM_RELEASED", {**ALBUM_IN, "released": "last spring"}),
                ]
            )

        assert stack.read_events() == []
        assert stack.model(Journal).events == []
    assert pii_backend.raw_event_rows(app) == []


def test_the_stored_data_is_the_dump_of_the_loaded_data(
    pii_backend: Backend, make_pii_app: AppFactory
) -> None:
    stack = new_stack()
    app = make_pii_app(stack, **pii_backend.config())
    with app.app_context():
        event = stack.record_event("album-1", "ALBUM_RELEASED", ALBUM_IN, expected_version=NO_STREAM)

        assert event.data == ALBUM_STORED
        assert stack.model(Journal).events[0].data == ALBUM_STORED
        assert stack.history("album-1")["history"][0].data == ALBUM_STORED
        stack.replay()
        assert stack.model(Journal).events[0].data == ALBUM_STORED

    (row,) = stored_rows(pii_backend, app)
    assert row["data"] == ALBUM_STORED
    assert isinstance(row["data"]["rating"], float)


def test_the_dumped_data_survives_a_restart(durable_pii_backend: Backend, make_pii_app: AppFactory) -> None:
    first_stack = new_stack()
    first = make_pii_app(first_stack, **durable_pii_backend.config())
    with first.app_context():
        first_stack.record_event("album-1", "ALBUM_RELEASED", ALBUM_IN, expected_version=NO_STREAM)
    first_stack.shutdown(first)

    stack = new_stack()
    app = make_pii_app(stack, **durable_pii_backend.config())
    stack.startup(app)
    with app.app_context():
        assert [e.data for e in stack.model(Journal).events] == [ALBUM_STORED]
        assert [e.data for e in stack.read_events()] == [ALBUM_STORED]


ANY_JSON: dict[str, Any] = {
    "text": "Zoë – 東京 🎵",
    "int": 2**53 + 1,
    "negative": -7,
    "float": 0.1,
    "true": True,
    "false": False,
    "null": None,
    "empty_list": [],
    "empty_object": {},
    "nested": {"list": [1, "two", [3.5, None], {"deep": {"deeper": ["x"]}}]},
    "quotes": 'it\'s "quoted" \\ back\nslash',
}


def test_an_event_without_a_schema_accepts_any_json_object(
    pii_backend: Backend, make_pii_app: AppFactory
) -> None:
    stack = new_stack()
    app = make_pii_app(stack, **pii_backend.config())
    with app.app_context():
        event = stack.record_event("thing-1", "THING_HAPPENED", ANY_JSON, expected_version=NO_STREAM)
        empty = stack.record_unchecked_event("thing-1", "NOTHING_HAPPENED", {})

        assert event.data == ANY_JSON and empty.data == {}
        assert [e.data for e in stack.history("thing-1")["history"]] == [ANY_JSON, {}]
        assert [e.data for e in stack.model(Journal).events] == [ANY_JSON, {}]

    assert [row["data"] for row in stored_rows(pii_backend, app)] == [ANY_JSON, {}]


class Anything(Schema):
    value = fields.Raw(required=True)


#: Values JSON cannot carry, with what the error names.
NOT_JSON: list[Any] = [
    pytest.param({1, 2}, "set", id="set"),
    pytest.param(datetime(2024, 1, 2, tzinfo=timezone.utc), "datetime", id="datetime"),
    pytest.param(b"raw bytes", "bytes", id="bytes"),
    pytest.param(object(), "object", id="object"),
    pytest.param(math.nan, "float", id="NaN"),
    pytest.param(math.inf, "float", id="Infinity"),
]


@pytest.mark.parametrize(("value", "named"), NOT_JSON)
def test_data_that_is_not_json_is_refused_with_a_clear_error(
    pii_backend: Backend, make_pii_app: AppFactory, value: Any, named: str
) -> None:
    stack = new_stack()
    stack.event_schema("RAW_THING", Anything)
    app = make_pii_app(stack, **pii_backend.config())
    with app.app_context():
        with pytest.raises(InvalidEventError, match="data is not JSON-serialisable") as plain:
            stack.record_event("thing-1", "THING_HAPPENED", {"nested": {"value": value}}, expected_version=0)
        assert named in str(plain.value)
        with pytest.raises(InvalidEventError, match="not JSON-serialisable"):
            stack.record_unchecked_event("thing-2", "RAW_THING", {"value": value})
        with pytest.raises(InvalidEventError, match="meta is not JSON-serialisable"):
            stack.record_unchecked_event("thing-3", "THING_HAPPENED", {"ok": 1}, meta={"value": value})
        with pytest.raises(InvalidEventError):
            stack.record_unchecked_events(
                [NewEvent("thing-4", "THING_HAPPENED", {"ok": 1}), NewEvent("thing-4", "X", {"v": value})]
            )
        assert stack.read_events() == []
    assert pii_backend.raw_event_rows(app) == []


@pytest.mark.parametrize("data", [["a", "list"], "a string", None, 42], ids=["list", "str", "None", "int"])
def test_data_that_is_not_a_json_object_is_refused(
    pii_backend: Backend, make_pii_app: AppFactory, data: Any
) -> None:
    stack = new_stack()
    app = make_pii_app(stack, **pii_backend.config())
    with app.app_context():
        with pytest.raises(InvalidEventError, match="data must be a JSON object"):
            stack.record_unchecked_event("thing-1", "THING_HAPPENED", data)
        assert stack.read_events() == []
    assert pii_backend.raw_event_rows(app) == []


def test_a_schema_error_in_a_request_answers_422_with_the_errors_under_data(
    pii_backend: Backend, make_pii_app: AppFactory
) -> None:
    stack = new_stack()
    albums = Blueprint("albums", __name__)

    @albums.post("/<album_id>")
    def release(album_id: str) -> tuple[dict[str, Any], int]:
        from flask import request

        event = stack.record_event(album_id, "ALBUM_RELEASED", request.get_json(), expected_version=NO_STREAM)
        return event.data, 201

    stack.mount_processor("Albums", "/albums", albums)
    app = make_pii_app(stack, **pii_backend.config())
    client = app.test_client()

    response = client.post("/albums/album-1", json={**ALBUM_IN, "price": "cheap", "title": None})
    assert response.status_code == 422, response.get_data(as_text=True)
    body = response.get_json()
    assert body["code"] == 422 and body["status"] == "Unprocessable Entity" and body["message"]
    assert set(body["errors"]) == {"data"}
    assert set(body["errors"]["data"]) == {"price", "title"}
    assert all(isinstance(m, str) for ms in body["errors"]["data"].values() for m in ms)
    assert pii_backend.raw_event_rows(app) == []

    created = client.post("/albums/album-1", json=ALBUM_IN)
    assert created.status_code == 201, created.get_data(as_text=True)
    assert created.get_json() == ALBUM_STORED
    assert [row["data"] for row in stored_rows(pii_backend, app)] == [ALBUM_STORED]


def test_an_event_schema_registered_after_startup_applies_to_later_writes(
    pii_backend: Backend, make_pii_app: AppFactory
) -> None:
    stack = ShimmieStack()
    app = make_pii_app(stack, **pii_backend.config())
    with app.app_context():
        stack.record_unchecked_event("album-1", "ALBUM_RELEASED", {"anything": "goes"})
        stack.event_schema("ALBUM_RELEASED", AlbumReleased())  # an instance works as well as a class
        with pytest.raises(ValidationError):
            stack.record_unchecked_event("album-2", "ALBUM_RELEASED", {"anything": "goes"})
        assert stack.record_unchecked_event("album-3", "ALBUM_RELEASED", ALBUM_IN).data == ALBUM_STORED
        assert [e.stream_id for e in stack.read_events()] == ["album-1", "album-3"]
    with pytest.raises(TypeError):
        stack.event_schema("ALBUM_RELEASED", dict)  # type: ignore[arg-type]


class Subscriber(Schema):
    email_address = fields.Email(required=True, data_key="emailAddress", metadata={"pii": True})
    plan = fields.String(required=True)


def test_a_pii_field_with_a_data_key_is_kept_out_of_the_event_store(
    pii_backend: Backend, make_pii_app: AppFactory
) -> None:
    stack = ShimmieStack()
    stack.event_schema("SUBSCRIBED", Subscriber)
    app = make_pii_app(stack, **pii_backend.config())
    data = {"emailAddress": "keyed.secret@example.com", "plan": "pro"}
    with app.app_context():
        event = stack.record_unchecked_event("sub-1", "SUBSCRIBED", data)
        assert event.data == data and event.pii_fields == ("emailAddress",)
        assert stack.read_events()[0].data == data

    assert_absent(pii_backend.raw_event_rows(app), "keyed.secret@example.com")
    assert [row["data"] for row in stored_rows(pii_backend, app)] == [{"emailAddress": "", "plan": "pro"}]


class Member(Schema):
    email = fields.Email(required=True, metadata={"pii": True})
    role = fields.String(required=True)


class TeamFormed(Schema):
    name = fields.String(required=True)
    members = fields.Nested(Member, many=True, required=True)


def test_pii_inside_a_list_of_nested_objects_never_reaches_the_event_store(
    pii_backend: Backend, make_pii_app: AppFactory
) -> None:
    stack = ShimmieStack()
    stack.event_schema("TEAM_FORMED", TeamFormed)
    app = make_pii_app(stack, **pii_backend.config())
    data = {"name": "Blue", "members": [{"email": "listed.secret@example.com", "role": "lead"}]}
    with app.app_context():
        event = stack.record_unchecked_event("team-1", "TEAM_FORMED", data)
        assert event.data == data

    assert_absent(pii_backend.raw_event_rows(app), "listed.secret@example.com")


# -- @stack.arguments ----------------------------------------------------------------------------


class Filters(Schema):
    page = fields.Integer(required=True, validate=validate.Range(min=1))
    size = fields.Integer(load_default=20)


class Signup(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1))
    age = fields.Integer(required=True)
    newsletter = fields.Boolean(load_default=False)


class ApiKey(Schema):
    api_key = fields.String(required=True, data_key="X-Api-Key", validate=validate.Length(min=8))


def arguments_app(
    stack: ShimmieStack, make_app: AppFactory, backend: Backend, schema: type[Schema], location: str
) -> Flask:
    """An app whose ``/things/<thing_id>`` view records what ``@stack.arguments`` gave it."""
    things = Blueprint(f"things_{location}", __name__)

    @things.route("/<thing_id>", methods=["GET", "POST"])
    @stack.arguments(schema, location=location)
    def record(args: dict[str, Any], thing_id: str) -> dict[str, Any]:
        event = stack.record_unchecked_event(thing_id, "ARGUMENTS_LOADED", args)
        return {"args": args, "sequence_num": event.sequence_num}

    stack.mount_processor("Things", "/things", things)
    return make_app(stack, **backend.config())


def check_422(response: Any, location: str) -> dict[str, Any]:
    assert response.status_code == 422, response.get_data(as_text=True)
    body = response.get_json()
    assert body["code"] == 422 and body["status"] == "Unprocessable Entity" and body["message"]
    assert set(body["errors"]) == {location}, body
    errors: dict[str, Any] = body["errors"][location]
    return errors


def test_arguments_json_passes_the_loaded_body_then_the_url_arguments(
    pii_backend: Backend, make_pii_app: AppFactory
) -> None:
    stack = ShimmieStack()
    app = arguments_app(stack, make_pii_app, pii_backend, Signup, "json")
    client = app.test_client()

    ok = client.post("/things/t-1", json={"name": "Ann", "age": "41"})
    assert ok.status_code == 200, ok.get_data(as_text=True)
    assert ok.get_json()["args"] == {"name": "Ann", "age": 41, "newsletter": False}

    errors = check_422(client.post("/things/t-2", json={"name": "", "age": "old", "extra": 1}), "json")
    assert set(errors) == {"name", "age", "extra"}
    assert errors["age"] == ["Not a valid integer."]
    assert check_422(client.post("/things/t-2", json={}), "json") == {
        "name": ["Missing data for required field."],
        "age": ["Missing data for required field."],
    }
    assert "_schema" in check_422(client.post("/things/t-2", json=["not", "an", "object"]), "json")
    malformed = client.post("/things/t-2", data="{nope", content_type="application/json")
    assert malformed.status_code == 400 and malformed.get_json()["code"] == 400

    rows = pii_backend.raw_event_rows(app)
    assert [(row["stream_id"], json.loads(row["data"])) for row in rows] == [
        ("t-1", {"name": "Ann", "age": 41, "newsletter": False})
    ]


def test_arguments_query_errors_are_under_query(pii_backend: Backend, make_pii_app: AppFactory) -> None:
    stack = ShimmieStack()
    app = arguments_app(stack, make_pii_app, pii_backend, Filters, "query")
    client = app.test_client()

    ok = client.get("/things/t-1?page=3")
    assert ok.status_code == 200, ok.get_data(as_text=True)
    assert ok.get_json()["args"] == {"page": 3, "size": 20}
    assert check_422(client.get("/things/t-2?page=zero"), "query") == {"page": ["Not a valid integer."]}
    assert set(check_422(client.get("/things/t-2?page=0&size=big"), "query")) == {"page", "size"}
    assert check_422(client.get("/things/t-2"), "query") == {"page": ["Missing data for required field."]}

    assert [json.loads(row["data"]) for row in pii_backend.raw_event_rows(app)] == [{"page": 3, "size": 20}]


def test_arguments_form_errors_are_under_form(pii_backend: Backend, make_pii_app: AppFactory) -> None:
    stack = ShimmieStack()
    app = arguments_app(stack, make_pii_app, pii_backend, Signup, "form")
    client = app.test_client()

    ok = client.post("/things/t-1", data={"name": "Ann", "age": "41", "newsletter": "true"})
    assert ok.status_code == 200, ok.get_data(as_text=True)
    assert ok.get_json()["args"] == {"name": "Ann", "age": 41, "newsletter": True}
    errors = check_422(client.post("/things/t-2", data={"name": "Bo", "age": "x"}), "form")
    assert errors == {"age": ["Not a valid integer."]}
    assert set(check_422(client.post("/things/t-2", data={}), "form")) == {"name", "age"}

    rows = pii_backend.raw_event_rows(app)
    assert [json.loads(row["data"]) for row in rows] == [{"name": "Ann", "age": 41, "newsletter": True}]


def test_arguments_headers_errors_are_under_headers(pii_backend: Backend, make_pii_app: AppFactory) -> None:
    stack = ShimmieStack()
    app = arguments_app(stack, make_pii_app, pii_backend, ApiKey, "headers")
    client = app.test_client()

    errors = check_422(client.get("/things/t-2", headers={"X-Api-Key": "short"}), "headers")
    assert set(errors) == {"X-Api-Key"}
    assert set(check_422(client.get("/things/t-2"), "headers")) == {"X-Api-Key"}
    ok = client.get("/things/t-1", headers={"X-Api-Key": "long-enough-key"})
    assert ok.status_code == 200, ok.get_data(as_text=True)
    assert ok.get_json()["args"] == {"api_key": "long-enough-key"}
    assert [json.loads(row["data"]) for row in pii_backend.raw_event_rows(app)] == [
        {"api_key": "long-enough-key"}
    ]


def test_arguments_query_ignores_unknown_parameters_as_flask_smorest_does(
    pii_backend: Backend, make_pii_app: AppFactory
) -> None:
    stack = ShimmieStack()
    app = arguments_app(stack, make_pii_app, pii_backend, Filters, "query")

    response = app.test_client().get("/things/t-1?page=2&utm_source=newsletter")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["args"] == {"page": 2, "size": 20}


class Tagged(Schema):
    tag = fields.List(fields.String(), required=True)


def test_arguments_query_list_fields_read_every_repeated_parameter(
    pii_backend: Backend, make_pii_app: AppFactory
) -> None:
    stack = ShimmieStack()
    app = arguments_app(stack, make_pii_app, pii_backend, Tagged, "query")

    response = app.test_client().get("/things/t-1?tag=a&tag=b")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["args"] == {"tag": ["a", "b"]}


def test_arguments_refuses_an_unknown_location_and_a_non_schema() -> None:
    stack = ShimmieStack()
    with pytest.raises(ValueError, match="location"):
        stack.arguments(Signup, location="body")
    with pytest.raises(TypeError):
        stack.arguments(dict)  # type: ignore[arg-type]

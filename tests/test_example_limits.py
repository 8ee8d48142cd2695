"""Bounds on what ``POST /v1/songs`` accepts: every value has a size or a range.

The e-mail address is at most 254 characters, the name at most 200; a year is a whole number
from 1 to 9999 or a non-blank text of at most 20 characters. Anything past a bound answers 422
(or 400 for a number JSON itself refuses) and records nothing.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.helpers import stored
from tests.songs_fixtures import app as app
from tests.songs_fixtures import client as client


def song(**fields: Any) -> dict[str, Any]:
    return {"title": "Blue", "artist": "Joni Mitchell", "year": "1971", **fields}


def submitter(name: str = "Ann", email: str = "ann@example.com") -> dict[str, Any]:
    return {"submitted_by": {"name": name, "email": email}}


def email_of(length: int) -> str:
    domain = "@example.com"
    return "a" * (length - len(domain)) + domain


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(song(**submitter(email=email_of(254))), id="email-254"),
        pytest.param(song(**submitter(name="N" * 200)), id="name-200"),
        pytest.param(song(year=1), id="year-1"),
        pytest.param(song(year=9999), id="year-9999"),
        pytest.param(song(year="MMXXIV"), id="year-roman"),
        pytest.param(song(year="y" * 20), id="year-text-20"),
    ],
)
def test_values_at_their_bounds_are_accepted(app: Flask, client: FlaskClient, body: dict[str, Any]) -> None:
    response = client.post("/v1/songs", json=body)
    assert response.status_code == 201, response.get_data(as_text=True)
    listed = client.get(response.headers["Location"]).get_json()
    assert listed["year"] == body["year"]
    assert listed.get("submitted_by") == body.get("submitted_by")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param(song(**submitter(email=email_of(255))), "submitted_by", id="email-255"),
        pytest.param(song(**submitter(email=email_of(900_000))), "submitted_by", id="email-900kb"),
        pytest.param(song(**submitter(name="N" * 201)), "submitted_by", id="name-201"),
        pytest.param(song(year=0), "year", id="year-0"),
        pytest.param(song(year=-1971), "year", id="year-negative"),
        pytest.param(song(year=10_000), "year", id="year-10000"),
        pytest.param(song(year=10**4000), "year", id="year-4001-digits"),
        pytest.param(song(year="y" * 21), "year", id="year-text-21"),
        pytest.param(song(year=" " * 5), "year", id="year-blank"),
        pytest.param(song(year="1971" * 100_000), "year", id="year-text-400kb"),
    ],
)
def test_values_past_their_bounds_are_422_and_record_nothing(
    app: Flask, client: FlaskClient, body: dict[str, Any], field: str
) -> None:
    response = client.post("/v1/songs", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 422, response.get_data(as_text=True)[:300]
    error = response.get_json()
    assert error["code"] == 422 and set(error["errors"]["data"]) == {field}
    assert len(response.get_data()) < 2_000, "the error echoes the oversized value"
    assert stored(app) == 0


def test_a_number_too_long_for_json_is_400_and_records_nothing(app: Flask, client: FlaskClient) -> None:
    raw = '{"title": "Blue", "artist": "Joni Mitchell", "year": ' + "9" * 5_000 + "}"
    response = client.post("/v1/songs", data=raw, content_type="application/json")
    assert response.status_code == 400, response.get_data(as_text=True)[:300]
    assert response.get_json()["code"] == 400
    assert stored(app) == 0

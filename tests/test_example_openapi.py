"""example_songs' API description, and what the fuzzing of it (tests/test_openapi_fuzz.py) found.

- Every route of the example is described with its success answer: the document is complete.
- JSON does not tell ``2`` from ``2.0`` (so JSON Schema's ``integer`` takes both): a rename's
  ``version`` and a numeric ``year`` are accepted written either way, and stored as whole numbers.
- ``GET /v1/songs?after=&limit=`` (empty values: the defaults) is described (``allowEmptyValue``).
- ``DELETE /v1/songs/<id>/submitter`` for an id no stream can have answers 404 ("no song"), not a
  400 about stream ids.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from example_songs import stack
from tests.songs_fixtures import app as app
from tests.songs_fixtures import client as client

pytest.importorskip("apispec", reason="apispec is not installed (pip install -e '.[openapi]')")
openapi_spec_validator = pytest.importorskip("openapi_spec_validator")

SONG = {"title": "Blue", "artist": "Joni Mitchell", "year": "1971"}


def create(client: FlaskClient, **fields: Any) -> str:
    response = client.post("/v1/songs", json={**SONG, **fields})
    assert response.status_code == 201, response.get_data(as_text=True)
    return str(response.headers["Location"])


def test_every_route_of_the_example_is_described_with_its_answer(client: FlaskClient) -> None:
    document = client.get("/openapi.json").get_json()
    openapi_spec_validator.validate(document)
    assert document["info"]["title"] == "Songs"
    answers = {
        ("/v1/songs", "get"): "200",
        ("/v1/songs", "post"): "201",
        ("/v1/songs/{song_id}", "get"): "200",
        ("/v1/songs/{song_id}", "put"): "200",
        ("/v1/songs/{song_id}", "delete"): "204",
        ("/v1/songs/{song_id}/submitter", "delete"): "200",
    }
    for (path, method), status in answers.items():
        responses = document["paths"][path][method]["responses"]
        assert status in responses and "2XX" not in responses, (path, method)
    post = document["paths"]["/v1/songs"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SONG_CREATED"
    }
    assert post["responses"]["201"]["content"] == {
        "text/plain": {"schema": {"type": "string", "const": "Created"}}
    }
    assert post["responses"]["201"]["headers"]["Location"]["required"] is True
    listed = document["paths"]["/v1/songs"]["get"]
    query = {p["name"]: p for p in listed["parameters"] if p.get("in") == "query"}
    assert set(query) == {"after", "limit"}
    # ?after=&limit= is the first page of the default size, and the document says so.
    assert query["after"]["allowEmptyValue"] is True and query["limit"]["allowEmptyValue"] is True
    assert "Link" in listed["responses"]["200"]["headers"]
    year = document["components"]["schemas"]["SONG_CREATED"]["properties"]["year"]
    assert [branch["type"] for branch in year["oneOf"]] == ["string", "integer"]
    submitter = document["components"]["schemas"]["Submitter"]["properties"]
    assert submitter["email"]["x-pii"] is True and submitter["email"]["format"] == "email"


def test_a_version_written_as_a_whole_float_is_that_version(client: FlaskClient) -> None:
    location = create(client)
    renamed = client.put(location, json={"title": "River", "version": 1.0})
    assert renamed.status_code == 200, renamed.get_data(as_text=True)
    assert renamed.get_json()["version"] == 2 and renamed.get_json()["title"] == "River"


@pytest.mark.parametrize("version", ["1.5", '"1"', "true", "1e400"])
def test_a_version_that_is_not_a_whole_number_is_422(client: FlaskClient, version: str) -> None:
    location = create(client)
    body = f'{{"title": "River", "version": {version}}}'
    response = client.put(location, data=body, content_type="application/json")
    assert response.status_code == 422, response.get_data(as_text=True)
    assert client.get(location).get_json()["version"] == 1


def test_a_year_written_as_a_whole_float_is_stored_as_a_whole_number(app: Flask, client: FlaskClient) -> None:
    location = create(client, year=1971.0)
    song = client.get(location).get_json()
    assert song["year"] == 1971 and isinstance(song["year"], int)
    with app.app_context():
        stored = stack.history(location.rsplit("/", 1)[1])["history"][0]
    assert stored.data["year"] == 1971 and isinstance(stored.data["year"], int)
    assert client.post("/v1/songs", json={**SONG, "year": 1971.5}).status_code == 422


@pytest.mark.parametrize("song_id", ["a\x00b", "x" * 300])
def test_erasing_the_submitter_of_an_impossible_id_is_404(client: FlaskClient, song_id: str) -> None:
    response = client.delete(f"/v1/songs/{song_id}/submitter")
    assert response.status_code == 404, response.get_data(as_text=True)
    assert response.get_json()["message"].startswith("No song")

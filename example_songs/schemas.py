"""Payload, request and response schemas of the songs example.

The event schemas validate what is recorded; the request and response schemas
also describe the API in ``/openapi.json``.
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

#: The years a song may have as a number, and the longest text a year may be given as.
MIN_YEAR = 1
MAX_YEAR = 9999
MAX_YEAR_TEXT = 20
#: The longest e-mail address (RFC 5321 allows 254 characters in a path), and name.
MAX_EMAIL = 254
MAX_NAME = 200
#: ``GET /v1/songs`` page size when ``limit`` is not given, its largest value, and the largest cursor.
DEFAULT_PAGE = 100
MAX_PAGE = 1000
MAX_CURSOR = 2**63 - 1


#: What :class:`Year` accepts, as JSON Schema (for the API description).
YEAR_JSON_SCHEMA: dict[str, Any] = {
    "oneOf": [
        {"type": "string", "minLength": 1, "maxLength": MAX_YEAR_TEXT, "pattern": "\\S"},
        {"type": "integer", "minimum": MIN_YEAR, "maximum": MAX_YEAR},
    ]
}


def whole(value: Any) -> Any:
    """``3.0`` as ``3``: JSON (and so JSON Schema's ``integer``) does not tell them apart."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class WholeNumber(fields.Integer):
    """A JSON whole number: ``3`` or ``3.0``, never ``"3"``, ``true`` or ``3.5``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(strict=True, **kwargs)

    def _validated(self, value: Any) -> int:
        return super()._validated(whole(value))


class Year(fields.Field[Any]):
    """A year given as a string (as ShimmieStack's example does) or an int; kept as given.

    A number must be a whole number from 1 to 9999 (``1971.0`` is ``1971``); a string must be
    non-blank and at most 20 characters (``"1971"``, ``"MMXV"``, ``"c. 1950"``).
    The API description says as much (:data:`YEAR_JSON_SCHEMA`).
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs["metadata"] = {**YEAR_JSON_SCHEMA, **kwargs.get("metadata", {})}
        super().__init__(**kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        value = whole(value)
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ValidationError("A year is a string or a whole number.")
        if isinstance(value, int):
            if not MIN_YEAR <= value <= MAX_YEAR:
                raise ValidationError(f"A year given as a number must be {MIN_YEAR} to {MAX_YEAR}.")
            return value
        if not value.strip():
            raise ValidationError("A year must not be empty.")
        if len(value) > MAX_YEAR_TEXT:
            raise ValidationError(f"A year given as text must be at most {MAX_YEAR_TEXT} characters.")
        return value


class Submitter(Schema):
    """Who submitted a song: personal data, kept in the PII store."""

    name = fields.String(required=True, validate=validate.Length(max=MAX_NAME), metadata={"pii": True})
    email = fields.Email(required=True, validate=validate.Length(max=MAX_EMAIL), metadata={"pii": True})


class SongCreated(Schema):
    """``SONG_CREATED``: a new song."""

    title = fields.String(required=True, validate=validate.Length(min=1, max=500))
    artist = fields.String(required=True, validate=validate.Length(min=1, max=500))
    year = Year(required=True)
    submitted_by = fields.Nested(Submitter)


class SongRenamed(Schema):
    """``SONG_RENAMED``: a song's new title."""

    title = fields.String(required=True, validate=validate.Length(min=1, max=500))


class RenameRequest(Schema):
    """``PUT /v1/songs/<id>``: the new title and the version the client saw."""

    title = fields.String(required=True, validate=validate.Length(min=1, max=500))
    version = WholeNumber(required=True, validate=validate.Range(min=1))


class PageQuery(Schema):
    """``GET /v1/songs?after=&limit=``: where a page starts, and its size (parsed by the view).

    An empty value (``?after=``) is the default.
    """

    after = fields.Integer(
        validate=validate.Range(min=0, max=MAX_CURSOR),
        metadata={
            "description": "The cursor: songs posted after this position (0, the default: the first).",
            "allowEmptyValue": True,
        },
    )
    limit = fields.Integer(
        validate=validate.Range(min=1, max=MAX_PAGE),
        metadata={
            "description": f"At most this many songs ({DEFAULT_PAGE} by default).",
            "allowEmptyValue": True,
        },
    )


class SubmitterView(Schema):
    """The submitter as a song shows it: both ``""`` once erased."""

    name = fields.String(required=True)
    email = fields.String(required=True)


class Song(Schema):
    """A song as ``GET /v1/songs/<id>`` answers it, with the stream version it reflects."""

    id = fields.String(required=True)
    title = fields.String(required=True)
    artist = fields.String(required=True)
    year = Year(required=True)
    version = fields.Integer(required=True, metadata={"description": "Send it back to rename the song."})
    submitted_by = fields.Nested(SubmitterView)


class Erased(Schema):
    """``DELETE /v1/songs/<id>/submitter``: how many events had their personal data erased."""

    erased_events = fields.Integer(required=True)

"""Payload and request schemas of the songs example."""

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


class Year(fields.Field[Any]):
    """A year given as a string (as ShimmieStack's example does) or an int; kept as given.

    A number must be a whole number from 1 to 9999; a string must be
    non-blank and at most 20 characters (``"1971"``, ``"MMXV"``, ``"c. 1950"``).
    """

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
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
    version = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))

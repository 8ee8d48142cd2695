"""Payload and request schemas of the songs example."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate


class Year(fields.Field[Any]):
    """A year given as a string (as ShimmieStack's example does) or an int; kept as given."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ValidationError("A year is a string or a whole number.")
        if isinstance(value, str) and not value.strip():
            raise ValidationError("A year must not be empty.")
        return value


class Submitter(Schema):
    """Who submitted a song: personal data, kept in the PII store."""

    name = fields.String(required=True, validate=validate.Length(max=200), metadata={"pii": True})
    email = fields.Email(required=True, metadata={"pii": True})


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

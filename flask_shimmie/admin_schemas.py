"""What the admin API answers and reads, as marshmallow schemas, for its API description.

The admin views build their JSON themselves; these schemas only describe it
(``@response`` and ``@doc`` declarations on the views in :mod:`flask_shimmie.admin`).
"""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from .recording import MAX_NAME_LENGTH

#: ``GET /events`` page size when ``limit`` is not given, and its maximum.
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


#: What a stream id or an event name may be: at most 255 characters, no NUL.
NAME = [validate.Length(max=MAX_NAME_LENGTH), validate.Regexp(r"^[^\x00]*$")]
#: The ``<stream_id>`` of the admin routes: a stream id, which one URL path segment carries.
STREAM_ID_PARAMETER = {
    "in": "path",
    "name": "stream_id",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_LENGTH, "pattern": "^[^/\\x00]+$"},
}


class EventView(Schema):
    """A stored event, with the field names of :class:`~flask_shimmie.Event` (PII merged)."""

    sequence_num = fields.Integer(required=True, metadata={"description": "Global position, from 1."})
    stream_id = fields.String(required=True)
    stream_version = fields.Integer(required=True)
    event_id = fields.String(required=True)
    event_name = fields.String(required=True)
    data = fields.Dict(required=True)
    meta = fields.Dict(required=True)
    recorded_at = fields.String(required=True, metadata={"description": "ISO 8601, UTC."})
    replay = fields.Boolean(required=True)
    pii_erased = fields.Boolean(required=True)
    schema_version = fields.Integer(required=True)
    pii_fields = fields.List(fields.String(), required=True)


class EventsQuery(Schema):
    """``GET /events``: a page of the store, optionally of one stream or one event name.

    An empty value (``?after=&limit=``) is the default, as the view reads it.
    """

    after = fields.Integer(
        validate=validate.Range(min=0),
        metadata={"description": "Events after this position (default 0).", "allowEmptyValue": True},
    )
    limit = fields.Integer(
        validate=validate.Range(min=1, max=MAX_LIMIT),
        metadata={"description": f"At most this many ({DEFAULT_LIMIT} by default).", "allowEmptyValue": True},
    )
    stream = fields.String(
        validate=NAME, metadata={"description": "Only this stream's events.", "allowEmptyValue": True}
    )
    type = fields.String(
        validate=NAME, metadata={"description": "Only events of this name.", "allowEmptyValue": True}
    )


class EventsPage(Schema):
    """``GET /events``: the events, and where the next page starts (``null``: no more)."""

    events = fields.List(fields.Nested(EventView), required=True)
    next_after = fields.Integer(required=True, allow_none=True)


class StreamEvents(Schema):
    """``GET /streams/<id>``: every event of the stream (empty for an unknown stream)."""

    events = fields.List(fields.Nested(EventView), required=True)


class Health(Schema):
    """``GET /health``: the app's status and its stores' (``unavailable``, with 503, when one is down)."""

    status = fields.String(required=True, validate=validate.OneOf(["ok", "degraded", "unavailable"]))
    event_store = fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "Its location to admins, its kind to others."},
    )
    pii_store = fields.String(required=True, allow_none=True)
    last_stored = fields.Integer(required=True, allow_none=True)
    last_handled = fields.Integer(required=True)
    degraded_models = fields.List(fields.String(), required=True)
    degraded_subscriptions = fields.List(
        fields.String(),
        required=True,
        metadata={"description": "Subscriptions that failed or lag too far behind the store."},
    )
    error = fields.String(metadata={"description": "Why a store is unavailable."})


class Replayed(Schema):
    """``POST /replay``: how many events were applied, and the position reached."""

    replayed = fields.Integer(required=True)
    last_handled = fields.Integer(required=True)


class PiiErased(Schema):
    """``POST /streams/<id>/erase-pii``: how many events had their PII erased."""

    erased_events = fields.Integer(required=True)

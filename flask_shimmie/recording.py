"""Turning what a caller asks to record into events a store can append.

Everything here runs before a store is touched, so bad input is refused with a
clear :class:`InvalidEventError` and nothing is recorded.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .errors import InvalidEventError, PiiNotConfiguredError
from .events import Expected, ExpectedVersion, NewEvent
from .ids import new_event_id
from .pii import may_hold_pii, split_pii
from .storage.codec import loads
from .storage.interface import PendingEvent

#: The longest stream id or event name a store accepts.
MAX_NAME_LENGTH = 255

_encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


#: How deeply objects and arrays may nest in ``data`` and ``meta``. Deeper
#: payloads could not be decoded again from inside a request or a replay.
MAX_DEPTH = 100


def check_structure(value: Any, what: str) -> None:
    """Refuse payloads nested deeper than :data:`MAX_DEPTH` or with non-string keys.

    JSON turns keys into strings, so ``{1: "a", "1": "b"}`` would silently
    lose a value: such keys are refused rather than converted.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidEventError(f"{what} nests objects and arrays deeper than {MAX_DEPTH} levels.")
        if isinstance(node, dict):
            for key, item in node.items():
                if not isinstance(key, str):
                    raise InvalidEventError(f"{what} has a key that is not a string: {key!r:.60}.")
                if isinstance(item, (dict, list, tuple)):
                    stack.append((item, depth + 1))
        elif isinstance(node, (list, tuple)):
            stack.extend((item, depth + 1) for item in node if isinstance(item, (dict, list, tuple)))


def to_json(value: Any, what: str) -> str:
    """Encode ``value`` as compact JSON, refusing what JSON (or UTF-8) cannot carry."""
    check_structure(value, what)
    try:
        text = _encode(value)
        text.encode("utf-8")  # a lone surrogate cannot be stored as UTF-8 text
    except UnicodeEncodeError:
        raise InvalidEventError(
            f"{what} contains a lone surrogate, which is not valid Unicode text."
        ) from None
    except (TypeError, ValueError, RecursionError) as error:
        raise InvalidEventError(f"{what} is not JSON-serialisable: {error}") from None
    return text


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``'s ``object_pairs_hook``: an object that repeats a key is refused.

    JSON parsers disagree on which of two equal keys wins, so an event store
    must not guess: raises ``ValueError`` naming the key.
    """
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                raise ValueError(f"the key {key!r:.80} appears more than once in one object")
            seen.add(key)
    return found


def check_name(value: Any, what: str) -> str:
    """Return ``value`` if it is a usable stream id or event name."""
    if not isinstance(value, str):
        raise InvalidEventError(f"{what} must be a string, not {type(value).__name__}.")
    if not 1 <= len(value) <= MAX_NAME_LENGTH:
        raise InvalidEventError(f"{what} must be 1 to {MAX_NAME_LENGTH} characters long (got {len(value)}).")
    if "\x00" in value:
        raise InvalidEventError(f"{what} must not contain NUL characters.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidEventError(
            f"{what} contains a lone surrogate, which is not valid Unicode text."
        ) from None
    return value


#: What a stream id recorded from now on may not contain: a "/" (a URL path
#: segment could not carry it) and control characters (C0, DEL, C1).
_NOT_IN_STREAM_IDS = re.compile(r"[/\x00-\x1f\x7f-\x9f]")


def check_stream_id(value: Any) -> str:
    """Return ``value`` if a new event may be recorded on it as a stream id.

    Besides :func:`check_name`'s rules, refuses ids that one segment of a URL
    path cannot carry, so every stream can be named in a route such as
    ``/admin/streams/<stream_id>``: ids with a ``/`` or a control character.
    """
    stream_id = check_name(value, "stream_id")
    bad = _NOT_IN_STREAM_IDS.search(stream_id)
    if bad is not None:
        char = bad.group()
        shown = "'/'" if char == "/" else f"the control character U+{ord(char):04X}"
        raise InvalidEventError(
            f"stream_id must not contain {shown}: a stream id must fit in one segment of a URL path "
            f"(got {stream_id!r:.80})."
        )
    return stream_id


#: The largest position a store can hold (a signed 64-bit integer).
MAX_POSITION = 2**63 - 1

#: Digits of :data:`MAX_POSITION`: more (leading zeros aside) is past it anyway.
_POSITION_DIGITS = len(str(MAX_POSITION))


def parse_position(text: str) -> int | None:
    """A position or count written as ASCII digits, capped at :data:`MAX_POSITION`.

    Returns ``None`` when ``text`` is not such a number. At most 19 digits are
    ever converted, so a huge number costs nothing (``int()`` would refuse
    one over 4,300 digits with a ``ValueError``).
    """
    if not text.isascii() or not text.isdigit():
        return None
    digits = text.lstrip("0")
    if len(digits) > _POSITION_DIGITS:
        return MAX_POSITION
    return min(int(digits or "0"), MAX_POSITION)


def check_names(values: Any, what: str) -> list[str] | None:
    """Validate a filter of stream ids or event names: ``None``, one name, or a collection."""
    if values is None:
        return None
    if isinstance(values, str):
        return [check_name(values, what)]
    if not isinstance(values, (list, tuple, set, frozenset)):
        raise InvalidEventError(f"{what} must be a name or a list of names, not {type(values).__name__}.")
    return [check_name(value, what) for value in values]


def check_position(value: Any, what: str, *, minimum: int = 0) -> int:
    """Validate a position or count; values past what a store holds are capped."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise InvalidEventError(f"{what} must be a whole number >= {minimum}, not {value!r:.60}.")
    return min(value, MAX_POSITION)


def check_event_id(value: Any) -> str:
    """Return ``value`` as a canonical UUID string, or a new one when ``None``."""
    if value is None:
        return new_event_id()
    try:
        return str(uuid.UUID(str(value))) if isinstance(value, (str, uuid.UUID)) else _bad_id(value)
    except ValueError:
        return _bad_id(value)


def _bad_id(value: Any) -> str:
    raise InvalidEventError(f"event_id must be a UUID, not {value!r:.60}.")


def check_expected(stream_id: str, value: Any) -> Expected:
    """Return ``value`` if it is an expected version."""
    if isinstance(value, ExpectedVersion):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise InvalidEventError(
        f"Expected version for stream {stream_id!r} must be ANY, NO_STREAM, STREAM_EXISTS or a "
        f"version number >= 0, not {value!r:.60}."
    )


def check_expected_versions(expected: Any) -> dict[str, Expected]:
    """Validate an ``expected_versions`` mapping."""
    if not isinstance(expected, Mapping):
        raise InvalidEventError("expected_versions must map stream ids to expected versions.")
    return {check_name(k, "A stream id"): check_expected(k, v) for k, v in expected.items()}


class EventPreparer:
    """Validates and encodes events for one app.

    ``load`` validates a payload against the event's schema, if any, and
    returns the data to store with the PII paths its schema declares.
    """

    def __init__(
        self,
        load: Callable[[str, dict[str, Any]], tuple[dict[str, Any], tuple[str, ...]]],
        schema_version: Callable[[str], int],
        pii_enabled: bool,
    ) -> None:
        self.load = load
        self.schema_version = schema_version
        self.pii_enabled = pii_enabled

    def prepare(self, new: NewEvent) -> PendingEvent:
        """Validate one event and split its PII off."""
        return self.prepare_fields(
            new.stream_id, new.event_name, new.data, new.meta, new.pii_fields, new.event_id
        )

    def prepare_fields(
        self,
        stream_id: Any,
        event_name: Any,
        data: Any,
        meta: Any,
        pii_fields: Any,
        event_id: Any,
        *,
        existing_stream: bool = False,
    ) -> PendingEvent:
        """:meth:`prepare` for the fields of a :class:`NewEvent`, given one by one.

        ``existing_stream``: the stream is known to hold events already, so an
        id recorded before :func:`check_stream_id` existed is still accepted.
        """
        if existing_stream:
            stream_id = check_name(stream_id, "stream_id")
        else:
            stream_id = check_stream_id(stream_id)
        event_name = check_name(event_name, "event_name")
        if type(data) is not dict:
            if not isinstance(data, Mapping):
                raise InvalidEventError(f"data must be a JSON object (a dict), not {type(data).__name__}.")
            data = dict(data)
        if meta is not None and not isinstance(meta, Mapping):
            raise InvalidEventError(f"meta must be a JSON object (a dict), not {type(meta).__name__}.")
        # The schema's load (if any) returns a new dict; the payload is only encoded.
        data, schema_pii = self.load(event_name, data)
        pii_paths = _pii_paths(pii_fields, schema_pii)
        data_json = to_json(data, "data")
        meta = dict(meta) if meta else {}
        meta_json = to_json(meta, "meta") if meta else "{}"
        # Models get their own copy: the caller may go on changing ``data``.
        delivered: dict[str, Any] = loads(data_json)
        pii_json = None
        stored_json = data_json
        present: tuple[str, ...] = ()
        # Decoding the payload again to look for PII is only worth it when a path could be there.
        if pii_paths and may_hold_pii(data, pii_paths):
            stored, values, present = split_pii(json.loads(data_json), pii_paths)
            if present:
                if not self.pii_enabled:
                    raise PiiNotConfiguredError(
                        f"Event {event_name} carries PII ({', '.join(present)}) but SHIMMIE_PII_STORE "
                        "is False; configure a PII store or drop the PII fields."
                    )
                stored_json = to_json(stored, "data")
                pii_json = to_json(values, "PII")
        return PendingEvent(
            stream_id=stream_id,
            event_name=event_name,
            event_id=check_event_id(event_id),
            data=delivered,
            data_json=stored_json,
            meta=loads(meta_json) if meta else {},
            meta_json=meta_json,
            schema_version=self.schema_version(event_name),
            pii_fields=present,
            pii_json=pii_json,
        )

    def prepare_all(self, events: Sequence[NewEvent]) -> tuple[PendingEvent, ...]:
        """Validate a batch; refuse anything that is not a :class:`NewEvent`."""
        prepared = []
        for index, new in enumerate(events):
            if not isinstance(new, NewEvent):
                raise InvalidEventError(f"Item {index} of the batch is not a NewEvent: {type(new).__name__}.")
            prepared.append(self.prepare(new))
        return tuple(prepared)


def _pii_paths(explicit: Any, from_schema: tuple[str, ...]) -> tuple[str, ...]:
    if explicit is None:
        return from_schema
    if not isinstance(explicit, (list, tuple)) or not all(isinstance(p, str) and p for p in explicit):
        raise InvalidEventError("pii_fields must be a list of field names (dotted paths for nested fields).")
    return tuple(dict.fromkeys((*from_schema, *explicit)))

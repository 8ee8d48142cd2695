"""The event types: what is recorded, what models receive, and expected versions."""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Union


class ExpectedVersion(enum.Enum):
    """Symbolic expectations about a stream's version, for checked writes."""

    #: Do not check the stream at all.
    ANY = "ANY"
    #: The stream must have no events yet.
    NO_STREAM = "NO_STREAM"
    #: The stream must have at least one event.
    STREAM_EXISTS = "STREAM_EXISTS"

    def __repr__(self) -> str:
        return self.name


ANY = ExpectedVersion.ANY
NO_STREAM = ExpectedVersion.NO_STREAM
STREAM_EXISTS = ExpectedVersion.STREAM_EXISTS

#: An expected version: one of the constants above, or the version of the
#: stream's last event (an ``int``, 1 for a stream with one event).
Expected = Union[int, ExpectedVersion]  # noqa: UP007 - a runtime alias on Python 3.10


@dataclass(frozen=True, slots=True)
class Event:
    """A recorded event, as models receive it and reads return it.

    ``data`` carries the payload with any PII merged back in (or anonymised
    values once the PII has been erased, then ``pii_erased`` is true).
    ``pii_fields`` names the dotted paths of ``data`` that are PII.
    """

    sequence_num: int
    stream_id: str
    stream_version: int
    event_id: str
    event_name: str
    data: dict[str, Any]
    meta: dict[str, Any]
    recorded_at: datetime
    replay: bool = False
    pii_erased: bool = False
    schema_version: int = 1
    pii_fields: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict with the field names of :class:`Event`."""
        return {
            "sequence_num": self.sequence_num,
            "stream_id": self.stream_id,
            "stream_version": self.stream_version,
            "event_id": self.event_id,
            "event_name": self.event_name,
            "data": self.data,
            "meta": self.meta,
            "recorded_at": self.recorded_at.isoformat(),
            "replay": self.replay,
            "pii_erased": self.pii_erased,
            "schema_version": self.schema_version,
            "pii_fields": list(self.pii_fields),
        }


#: One setter per field of :class:`Event`, in field order: ``setter(event, value)``
#: fills a slot of a new, uninitialised event (see :func:`stored_event`).
EVENT_SLOT_SETTERS = tuple(getattr(Event, name).__set__ for name in Event.__dataclass_fields__)


def _stored_event_builder() -> Callable[
    [int, str, int, str, str, dict[str, Any], dict[str, Any], datetime, bool, bool, int, tuple[str, ...]],
    Event,
]:
    new = object.__new__
    # Bound as closure cells: the fastest lookup.
    s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11 = EVENT_SLOT_SETTERS

    def stored_event(
        sequence_num: int,
        stream_id: str,
        stream_version: int,
        event_id: str,
        event_name: str,
        data: dict[str, Any],
        meta: dict[str, Any],
        recorded_at: datetime,
        replay: bool,
        pii_erased: bool,
        schema_version: int,
        pii_fields: tuple[str, ...],
    ) -> Event:
        event: Event = new(Event)
        s0(event, sequence_num)
        s1(event, stream_id)
        s2(event, stream_version)
        s3(event, event_id)
        s4(event, event_name)
        s5(event, data)
        s6(event, meta)
        s7(event, recorded_at)
        s8(event, replay)
        s9(event, pii_erased)
        s10(event, schema_version)
        s11(event, pii_fields)
        return event

    return stored_event


#: Build an :class:`Event` from values a store has already checked: the hot path.
#: It fills the slots directly instead of going through the frozen dataclass's
#: ``__init__`` (one ``object.__setattr__`` per field), the larger part of the
#: cost of every event a replay or a write builds. All twelve fields are positional and
#: required, in :class:`Event`'s order; the result is an ordinary :class:`Event`.
stored_event = _stored_event_builder()


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to record with :meth:`ShimmieStack.record_events`."""

    stream_id: str
    event_name: str
    data: dict[str, Any]
    meta: dict[str, Any] | None = None
    pii_fields: Sequence[str] | None = None
    event_id: str | None = None

"""Stored rows to events and back: the column order, JSON decoding, the replay hot path."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from json.scanner import c_make_scanner  # type: ignore[attr-defined]
from typing import Any

from ..events import EVENT_SLOT_SETTERS, Event

#: The columns of a stored row, in the order :func:`decode_rows` takes them (JSON as text).
ROW_COLUMNS = (
    "sequence_num",
    "stream_id",
    "stream_version",
    "event_id",
    "event_name",
    "data",
    "meta",
    "recorded_at",
    "schema_version",
    "pii_fields",
)


_scan = c_make_scanner(json.JSONDecoder()) if c_make_scanner is not None else None


def loads(text: str) -> Any:
    """``json.loads`` for the JSON text stores hold, without its Python wrappers.

    Replay decodes every stored payload, so it calls the C scanner directly,
    skipping ``json.loads``' Python wrappers; anything it does not consume
    whole (leading or trailing whitespace) goes through ``json.loads``.
    """
    if _scan is not None:
        try:
            value, end = _scan(text, 0)
        except StopIteration:
            return json.loads(text)
        if end == len(text):
            return value
    return json.loads(text)


def decode_rows(
    rows: Iterable[Sequence[Any]],
    parse_time: Callable[[Any], datetime] | None = None,
    *,
    replay: bool = False,
) -> list[Event]:
    """Build events from stored rows, their columns in :data:`ROW_COLUMNS`' order.

    ``parse_time`` turns the stored ``recorded_at`` into a datetime when the
    backend keeps it as something else (SQLite keeps ISO text); ``replay``
    marks the events as replayed. This is the replay hot path: one flat loop
    that fills each event's slots itself (as :func:`stored_event` does) and
    calls the JSON scanner directly (as :func:`loads` does).
    """
    s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11 = EVENT_SLOT_SETTERS
    new = object.__new__
    scan = _scan or _scan_with_loads
    events: list[Event] = []
    append = events.append
    for seq, stream_id, version, event_id, name, data_json, meta, at, schema_version, pii in rows:
        try:
            data, end = scan(data_json, 0)
            if end != len(data_json):
                data = json.loads(data_json)
        except StopIteration:
            data = json.loads(data_json)
        event = new(Event)
        s0(event, seq)
        s1(event, stream_id)
        s2(event, version)
        s3(event, event_id)
        s4(event, name)
        s5(event, data)
        s6(event, {} if meta == "{}" else loads(meta))
        s7(event, at if parse_time is None else parse_time(at))
        s8(event, replay)
        s9(event, False)
        s10(event, schema_version)
        s11(event, tuple(json.loads(pii)) if pii else ())
        append(event)
    return events


def _scan_with_loads(text: str, start: int) -> tuple[Any, int]:
    return json.loads(text), len(text)


def encode_pii_fields(fields: tuple[str, ...]) -> str | None:
    """Encode ``pii_fields`` for a text column (``None`` when there are none)."""
    return json.dumps(list(fields)) if fields else None

"""Export and import of events as JSON lines, one :class:`Event` object a line.

An export can be imported into any backend: ``memory://`` → SQLite →
PostgreSQL. Import is idempotent by ``event_id`` and keeps the file's order
and ``recorded_at``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any

from .errors import ShimmieError
from .events import Event
from .pii import split_pii
from .recording import check_event_id, check_name, check_stream_id, to_json, unique_keys
from .storage.interface import AppendBatch, PendingEvent

if TYPE_CHECKING:
    from .state import AppState


#: The highest payload version a store keeps (a signed 32-bit integer column).
MAX_SCHEMA_VERSION = 2**31 - 1


class ImportLineError(ShimmieError):
    """A line of an import file is not a valid event; ``line`` is its number (from 1)."""

    def __init__(self, line: int, reason: str) -> None:
        self.line = line
        super().__init__(f"Line {line}: {reason}")


def export_lines(events: Iterable[Event], *, with_pii: bool) -> Iterator[str]:
    """One JSON line per event.

    With ``with_pii``, ``data`` holds the PII and ``pii_fields`` names it, so
    an import stores it apart again. Without, PII fields are exported
    anonymised and the event is marked ``pii_erased``.
    """
    for event in events:
        if event.pii_fields and not with_pii and not event.pii_erased:
            data = json.loads(json.dumps(event.data))
            split_pii(data, event.pii_fields)
            event = dataclasses.replace(event, data=data, pii_erased=True)
        yield json.dumps(event.to_json(), ensure_ascii=False, separators=(",", ":"))


def parse_line(number: int, line: str) -> PendingEvent:
    """Turn one exported line into an event to append (PII split off again).

    Raises :class:`ImportLineError` for a line that is not one well-formed
    event: invalid JSON, an object repeating a key, a stream id that may not
    be recorded (see :func:`~flask_shimmie.recording.check_stream_id`), ...
    """
    try:
        record = json.loads(line, object_pairs_hook=unique_keys)
    except ValueError as error:
        raise ImportLineError(number, f"not valid JSON ({error})") from None
    if not isinstance(record, dict):
        raise ImportLineError(number, "not a JSON object")
    try:
        data = _field(record, "data", dict)
        meta = record.get("meta") or {}
        if not isinstance(meta, dict):
            raise ValueError("meta must be an object")
        pii_fields = tuple(_field(record, "pii_fields", list, default=[]))
        if not all(isinstance(p, str) and p for p in pii_fields):
            raise ValueError("pii_fields must list field paths")
        schema_version = _field(record, "schema_version", int, default=1)
        if not 1 <= schema_version <= MAX_SCHEMA_VERSION:
            raise ValueError(f"schema_version must be 1 to {MAX_SCHEMA_VERSION}, not {schema_version}")
        recorded_at = datetime.fromisoformat(_field(record, "recorded_at", str))
        if recorded_at.tzinfo is None:
            raise ValueError("recorded_at needs a time zone")
        pii_json = None
        stored_json = to_json(data, "data")
        if pii_fields:
            stored, values, present = split_pii(json.loads(stored_json), pii_fields)
            stored_json = to_json(stored, "data")
            # An erased event (or one exported without PII) keeps only its
            # placeholders: with no PII row it reads as erased here too.
            if present and not record.get("pii_erased"):
                pii_json = to_json(values, "PII")
            pii_fields = present
        return PendingEvent(
            stream_id=check_stream_id(record.get("stream_id")),
            event_name=check_name(record.get("event_name"), "event_name"),
            event_id=check_event_id(_field(record, "event_id", str)),
            data=data,
            data_json=stored_json,
            meta=meta,
            meta_json=to_json(meta, "meta"),
            schema_version=schema_version,
            pii_fields=pii_fields,
            pii_json=pii_json,
            recorded_at=recorded_at,
        )
    except (ValueError, TypeError, KeyError, ShimmieError) as error:
        raise ImportLineError(number, str(error)) from None


def _field(record: dict[str, Any], name: str, kind: type, default: Any = ...) -> Any:
    if name not in record:
        if default is ...:
            raise ValueError(f"missing field {name!r}")
        return default
    value = record[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"{name!r} must be a {kind.__name__}")
    return value


def import_lines(state: AppState, stream: IO[str], batch_size: int | None = None) -> tuple[int, int]:
    """Import JSON lines from ``stream``; return ``(imported, already_present)``.

    Each batch (default: the whole file) is parsed completely before anything
    is written, then written in one transaction; a malformed line raises
    :class:`ImportLineError` and nothing of its batch is stored.
    """
    imported = skipped = 0
    batch: list[PendingEvent] = []

    def flush() -> None:
        nonlocal imported, skipped
        if not batch:
            return
        unique: dict[str, PendingEvent] = {}
        for event in batch:
            unique.setdefault(event.event_id, event)
        known = state.event_store.existing_event_ids(list(unique))
        fresh = tuple(e for e in unique.values() if e.event_id not in known)
        skipped += len(batch) - len(fresh)
        if fresh:
            result = state.append(AppendBatch(fresh))
            imported += len(result.events)
        batch.clear()

    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        batch.append(parse_line(number, line))
        if batch_size and len(batch) >= batch_size:
            flush()
    flush()
    return imported, skipped

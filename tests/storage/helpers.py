"""Builders and small utilities shared by the store contract suite (and its worker processes)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from flask_shimmie.events import Event, Expected
from flask_shimmie.storage.interface import AppendBatch, EventStore, PendingEvent

T = TypeVar("T")

#: The placeholder a PII field holds in the stored event data (the stack's choice; any JSON will do).
PII_PLACEHOLDER = {"__pii__": "str"}


def new_event_id() -> str:
    """A fresh event id, as the stack makes them."""
    return str(uuid.uuid4())


def pending(
    stream_id: str,
    event_name: str = "THING_HAPPENED",
    data: Mapping[str, Any] | None = None,
    *,
    meta: Mapping[str, Any] | None = None,
    event_id: str | None = None,
    schema_version: int = 1,
) -> PendingEvent:
    """A :class:`PendingEvent` without PII; ``data_json`` / ``meta_json`` are ``data`` / ``meta`` as JSON."""
    payload = dict(data if data is not None else {"n": 1})
    metadata = dict(meta if meta is not None else {"user": "tester"})
    return PendingEvent(
        stream_id=stream_id,
        event_name=event_name,
        event_id=event_id or new_event_id(),
        data=payload,
        data_json=json.dumps(payload),
        meta=metadata,
        meta_json=json.dumps(metadata),
        schema_version=schema_version,
    )


def pending_with_pii(
    stream_id: str,
    public: Mapping[str, Any],
    pii: Mapping[str, Any],
    *,
    event_name: str = "PERSON_REGISTERED",
    event_id: str | None = None,
) -> PendingEvent:
    """An event whose ``pii`` keys go to the PII store; the stored data holds placeholders instead."""
    data = {**public, **pii}
    stored = {**public, **{key: PII_PLACEHOLDER for key in pii}}
    meta = {"user": "tester"}
    return PendingEvent(
        stream_id=stream_id,
        event_name=event_name,
        event_id=event_id or new_event_id(),
        data=data,
        data_json=json.dumps(stored),
        meta=meta,
        meta_json=json.dumps(meta),
        pii_fields=tuple(pii),
        pii_json=json.dumps(dict(pii)),
    )


def batch(*events: PendingEvent, expected: Mapping[str, Expected] | None = None) -> AppendBatch:
    """An :class:`AppendBatch` of ``events`` checked against ``expected``."""
    return AppendBatch(tuple(events), dict(expected or {}))


def append_one(store: EventStore, stream_id: str, event_name: str = "THING_HAPPENED", **data: Any) -> Event:
    """Append one unchecked event and return it."""
    (event,) = store.append(batch(pending(stream_id, event_name, data or None))).events
    return event


def positions(events: Iterable[Event]) -> list[int]:
    """The ``sequence_num`` of each event."""
    return [event.sequence_num for event in events]


def versions_by_stream(events: Iterable[Event]) -> dict[str, list[int]]:
    """The stream versions of each stream, in the order of ``events``."""
    result: dict[str, list[int]] = {}
    for event in events:
        result.setdefault(event.stream_id, []).append(event.stream_version)
    return result


def run_in_threads(target: Callable[[int], T], count: int, timeout: float = 60.0) -> list[T]:
    """Run ``target(i)`` for i in 0..count-1 on real threads released at once; re-raise the first error."""
    barrier = threading.Barrier(count)
    results: dict[int, T] = {}
    errors: list[BaseException] = []

    def body(index: int) -> None:
        try:
            barrier.wait(timeout)
            results[index] = target(index)
        except BaseException as error:  # re-raised in the calling thread
            errors.append(error)

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0))
    if any(thread.is_alive() for thread in threads):
        raise AssertionError(f"threads still running after {timeout}s (deadlock?)")
    if errors:
        raise errors[0]
    return [results[i] for i in range(count)]

"""Helpers for the feature tests."""

from __future__ import annotations

import json
import uuid
from typing import Any

from flask_shimmie.stores.base import AppendBatch, EventStore, PendingEvent


def append_raw(store: EventStore, stream_id: str, event_name: str, data: dict[str, Any] | None = None) -> int:
    """Write an event straight to ``store``, behind the app's back, as another process would.

    Returns its position.
    """
    data = data or {}
    pending = PendingEvent(stream_id, event_name, str(uuid.uuid4()), data, json.dumps(data), {}, "{}")
    return store.append(AppendBatch((pending,))).events[0].sequence_num

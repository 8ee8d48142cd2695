"""Event store backends: memory (default), SQLite and PostgreSQL."""

from __future__ import annotations

from .base import AppendBatch, AppendResult, EventStore, PendingEvent
from .urls import event_store_from_url, pii_store_from_url

__all__ = [
    "AppendBatch",
    "AppendResult",
    "EventStore",
    "PendingEvent",
    "event_store_from_url",
    "pii_store_from_url",
]

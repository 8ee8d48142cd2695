"""The storage layer: event stores and PII stores, one engine per database kind.

``memory://`` (the default), ``sqlite:///path.db`` and ``postgresql://...``
each name an engine; :func:`open_storage` builds the configured engine's stores
and decides, once, whether the PII lives beside the events. An engine's module
is imported only when a URL names it, so a memory-only app needs no driver.
Nothing here imports Flask; see ``README.md`` beside this file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .interface import EventStore, PiiStore
from .urls import scheme_of, sqlite_path

__all__ = ["EventStore", "PiiStore", "Storage", "event_store_from_url", "open_storage", "pii_store_from_url"]

#: PII rows older than this (seconds) whose event was never stored are purged at startup.
ORPHAN_PII_AGE = 300.0


class StorageSettings(Protocol):
    """What :func:`open_storage` reads of an app's settings."""

    @property
    def event_store(self) -> str: ...

    @property
    def pii_store(self) -> str | bool | None: ...


@dataclass
class Storage:
    """One app's stores: the event store, and the PII store (``None`` when PII is off).

    ``pii_colocated`` is True when the PII lives in the event store's database,
    written in the event's own transaction.
    """

    event_store: EventStore
    pii_store: PiiStore | None
    pii_colocated: bool

    def open(self) -> int:
        """Connect both stores and create what is missing; return how many orphaned PII rows were purged.

        With a separate PII store the PII is written first, so a crash in
        between leaves a PII row whose event never committed: it is never
        read, and is deleted here once it is :data:`ORPHAN_PII_AGE` old.
        """
        self.event_store.open()
        if self.pii_store is None or self.pii_colocated:
            return 0
        self.pii_store.open()
        return self.pii_store.purge_orphans(self.event_store.existing_event_ids, ORPHAN_PII_AGE)

    def close(self) -> None:
        """Close both stores (a colocated PII store closes with the event store)."""
        if self.pii_store is not None and not self.pii_colocated:
            self.pii_store.close()
        self.event_store.close()


def open_storage(settings: StorageSettings, instance_path: str | None = None) -> Storage:
    """Build (not connect) the stores that ``settings.event_store`` and ``settings.pii_store`` name.

    ``pii_store`` is ``None`` for PII in the event store's own database,
    ``False`` for no PII, or a URL of its own. Relative SQLite paths are
    relative to ``instance_path``. Raises
    :class:`~flask_shimmie.errors.ConfigurationError` naming the key for a bad URL.
    """
    event_store = event_store_from_url(settings.event_store, instance_path=instance_path)
    pii = settings.pii_store
    if pii is None:
        return Storage(event_store, event_store.colocated_pii_store(), True)
    if pii is False:
        return Storage(event_store, None, False)
    return Storage(event_store, pii_store_from_url(str(pii), instance_path=instance_path), False)


def event_store_from_url(
    url: str, *, instance_path: str | None = None, key: str = "SHIMMIE_EVENT_STORE"
) -> EventStore:
    """Build (not open) the event store that ``url`` names."""
    scheme = scheme_of(url, key)
    if scheme == "memory":
        from .memory import MemoryEventStore

        return MemoryEventStore(url)
    if scheme == "sqlite":
        from .sqlite.events import SqliteEventStore

        return SqliteEventStore(sqlite_path(url, key, instance_path), url=url)
    from .postgres.events import PostgresEventStore

    return PostgresEventStore(url, key=key)


def pii_store_from_url(
    url: str, *, instance_path: str | None = None, key: str = "SHIMMIE_PII_STORE"
) -> PiiStore:
    """Build (not open) a PII store with a database of its own at ``url``."""
    scheme = scheme_of(url, key)
    if scheme == "memory":
        from .memory import MemoryPiiStore

        return MemoryPiiStore(url)
    if scheme == "sqlite":
        from .sqlite.pii import SqlitePiiStore

        return SqlitePiiStore(sqlite_path(url, key, instance_path), url=url)
    from .postgres.pii import PostgresPiiStore

    return PostgresPiiStore(url, key=key)

"""Pick a backend from a store URL; backends are imported only when configured."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from ..pii.base import PiiStore
    from .base import EventStore

_SCHEMES = "memory://, sqlite:///path.db or postgresql://user@host/db"


def scheme_of(url: str, key: str) -> str:
    """The URL's scheme, normalised; raise :class:`ConfigurationError` naming ``key``."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(f"{key} = {url!r} is not a store URL; use {_SCHEMES}.")
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("postgres", "postgresql", "postgresql+psycopg"):
        return "postgresql"
    if scheme in ("memory", "sqlite"):
        return scheme
    raise ConfigurationError(f"{key} = {url!r}: unknown scheme {scheme!r}; use {_SCHEMES}.")


def sqlite_path(url: str, key: str, instance_path: str | None) -> str:
    """The database file of a ``sqlite:///`` URL.

    As in Flask-SQLAlchemy, ``sqlite:///songs.db`` is relative to the app's
    instance folder (created when missing) and ``sqlite:////abs/songs.db``
    is absolute.
    """
    path = url.split("://", 1)[1]
    if not path.startswith("/") or path in ("/", "/:memory:"):
        raise ConfigurationError(
            f"{key} = {url!r}: give a database file, e.g. sqlite:///songs.db "
            "(for a database that lives in memory use memory://)."
        )
    path = path[1:].split("?", 1)[0]
    if not os.path.isabs(path):
        base = instance_path or os.getcwd()
        os.makedirs(base, exist_ok=True)
        path = os.path.join(base, path)
    return path


def event_store_from_url(
    url: str, *, instance_path: str | None = None, key: str = "SHIMMIE_EVENT_STORE"
) -> EventStore:
    """Build (not open) the event store that ``url`` names."""
    scheme = scheme_of(url, key)
    if scheme == "memory":
        from .memory import MemoryEventStore

        return MemoryEventStore(url)
    if scheme == "sqlite":
        from .sqlite import SqliteEventStore

        return SqliteEventStore(sqlite_path(url, key, instance_path), url=url)
    from .postgres import PostgresEventStore

    return PostgresEventStore(url, key=key)


def pii_store_from_url(
    url: str, *, instance_path: str | None = None, key: str = "SHIMMIE_PII_STORE"
) -> PiiStore:
    """Build (not open) a PII store of its own at ``url``."""
    scheme = scheme_of(url, key)
    if scheme == "memory":
        from ..pii.memory import MemoryPiiStore

        return MemoryPiiStore(url)
    if scheme == "sqlite":
        from ..pii.sqlite import SqlitePiiStore

        return SqlitePiiStore(sqlite_path(url, key, instance_path), url=url)
    from ..pii.postgres import PostgresPiiStore

    return PostgresPiiStore(url, key=key)

"""Store URLs: which engine a URL names, and where a ``sqlite:///`` URL's file is."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from ..errors import ConfigurationError

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

"""Fresh stores for each measurement: temp SQLite files and throw-away PostgreSQL schemas.

Both libraries get the same durability:

* SQLite: WAL journal, ``synchronous=FULL`` (the WAL is synced at every
  commit). flask_shimmie sets both itself; eventsourcing switches to WAL and
  leaves ``synchronous`` at SQLite's build default, so :mod:`benchmarks.es_side`
  sets ``FULL`` on every connection it opens and checks it (see
  :func:`check_sqlite_durability`).
* PostgreSQL: the server's defaults (``synchronous_commit=on``, ``fsync=on``),
  which neither library changes; :func:`postgres_settings` reads them for the report.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_url_from_env() -> str:
    """The server to benchmark on: ``SHIMMIE_BENCH_POSTGRES_URL``, else the tests' one, else the default."""
    return (
        os.environ.get("SHIMMIE_BENCH_POSTGRES_URL")
        or os.environ.get("SHIMMIE_TEST_POSTGRES_URL")
        or DEFAULT_POSTGRES_URL
    )


@dataclass
class Stores:
    """Hands out fresh stores for one run and removes them all in :meth:`cleanup`."""

    postgres_url: str = field(default_factory=postgres_url_from_env)
    tmpdir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="shimmie-bench-"))
    schemas: list[str] = field(default_factory=list)

    # -- SQLite ---------------------------------------------------------------

    def sqlite_path(self, label: str) -> str:
        """A path for a new SQLite file in this run's temp dir."""
        return os.path.join(self.tmpdir, f"{label}-{uuid.uuid4().hex[:8]}.db")

    # -- PostgreSQL -----------------------------------------------------------

    def new_schema(self) -> str:
        """Create an empty schema ``bench_<hex>`` (dropped by :meth:`cleanup`)."""
        import psycopg
        from psycopg import sql

        name = f"bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.postgres_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
        self.schemas.append(name)
        return name

    def ours_postgres_url(self, schema: str) -> str:
        """Our store's URL for ``schema``."""
        separator = "&" if "?" in self.postgres_url else "?"
        return f"{self.postgres_url}{separator}schema={schema}"

    def theirs_postgres_env(self, schema: str) -> dict[str, str]:
        """eventsourcing's environment for the same server and ``schema``."""
        parts = urlsplit(self.postgres_url)
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": unquote(parts.path.lstrip("/")) or "postgres",
            "POSTGRES_HOST": parts.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(parts.port or 5432),
            "POSTGRES_USER": unquote(parts.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(parts.password or ""),
            "POSTGRES_SCHEMA": schema,
        }

    def cleanup(self) -> None:
        """Drop the schemas and delete the temp dir (best effort, never raises)."""
        if self.schemas:
            try:
                import psycopg
                from psycopg import sql

                with psycopg.connect(self.postgres_url, autocommit=True, connect_timeout=10) as conn:
                    for name in self.schemas:
                        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))
                self.schemas.clear()
            except Exception as error:  # a failed clean-up must not hide the results
                print(f"warning: could not drop schemas {self.schemas}: {error}")
        shutil.rmtree(self.tmpdir, ignore_errors=True)


def postgres_unavailable(url: str) -> str | None:
    """Why the server at ``url`` cannot be used, or ``None`` when it answers."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install -e '.[bench]')"
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except Exception as error:
        return f"PostgreSQL at {url} does not answer: {error}".splitlines()[0]
    return None


def postgres_settings(url: str) -> dict[str, Any]:
    """The server's durability settings, as a fresh session sees them."""
    import psycopg

    with psycopg.connect(url, connect_timeout=5) as conn:
        return {
            name: conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
            for name in ("synchronous_commit", "fsync", "server_version")
        }


def sqlite_file_settings(path: str) -> tuple[str, int]:
    """The journal mode of ``path`` and the default ``synchronous`` a new connection gets."""
    conn = sqlite3.connect(path)
    try:
        (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
        (sync,) = conn.execute("PRAGMA synchronous").fetchone()
    finally:
        conn.close()
    return str(mode), int(sync)


def check_sqlite_durability(conn: sqlite3.Connection, who: str) -> None:
    """Raise unless ``conn`` runs in WAL mode with ``synchronous=FULL`` (2)."""
    (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
    (sync,) = conn.execute("PRAGMA synchronous").fetchone()
    if str(mode).lower() != "wal" or int(sync) != 2:
        raise RuntimeError(
            f"{who}: SQLite runs journal_mode={mode}, synchronous={sync}; wanted wal, 2 (FULL)"
        )

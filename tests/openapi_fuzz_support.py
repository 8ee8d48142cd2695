"""The app the schemathesis run fuzzes: example_songs, auditing which request recorded what.

gunicorn loads :func:`audited_songs_app` (``tests.openapi_fuzz_support:audited_songs_app()``): the
app of :func:`tests.serving.songs_app` (example_songs, plus ``X-Served-By``) behind a WSGI
middleware that appends one JSON line per request to the file named by ``SONGS_AUDIT_LOG``:
``{"method", "path", "status", "recorded"}``, where ``recorded`` counts the events the request
recorded, as the stack's ``event_recorded`` signal reports them (it is sent in the recording
thread, once per stored event). Events recorded outside any request are logged as a line with
``"method": null``. Nothing else of the app changes.

Imported by the gunicorn workers: it must not import pytest or schemathesis.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

AUDIT_LOG_ENV = "SONGS_AUDIT_LOG"


@dataclass(frozen=True)
class Audited:
    """One audited request: what was asked, what was answered, how many events it recorded."""

    method: str | None
    path: str
    status: int
    recorded: int


def audited_songs_app() -> Any:
    """example_songs (as :func:`tests.serving.songs_app` serves it), auditing every request."""
    from flask_shimmie import event_recorded
    from tests.serving import songs_app

    app = songs_app()
    log_path = Path(os.environ[AUDIT_LOG_ENV])
    current = threading.local()
    write_lock = threading.Lock()

    def write(line: dict[str, Any]) -> None:
        text = json.dumps(line) + "\n"
        with write_lock, log_path.open("a", encoding="utf-8") as log:
            log.write(text)

    def count(sender: Any, event: Any, **extra: Any) -> None:
        if getattr(current, "recorded", None) is None:
            write({"method": None, "path": event.stream_id, "status": 0, "recorded": 1})
        else:
            current.recorded += 1

    event_recorded.connect(count, sender=app, weak=False)
    inner: Callable[..., Iterable[bytes]] = app.wsgi_app

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        statuses: list[str] = []

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            statuses.append(status)
            return (
                start_response(status, headers)
                if exc_info is None
                else start_response(status, headers, exc_info)
            )

        current.recorded = 0
        try:
            body = list(inner(environ, start))  # the whole answer, so every write is counted
        finally:
            recorded, current.recorded = current.recorded, None
            status = int(statuses[-1].split()[0]) if statuses else 0
            write(
                {
                    "method": environ.get("REQUEST_METHOD"),
                    "path": environ.get("PATH_INFO", ""),
                    "status": status,
                    "recorded": recorded,
                }
            )
        return body

    app.wsgi_app = wsgi  # type: ignore[method-assign]
    return app


def read_audit(path: Path) -> list[Audited]:
    """Every line of an audit log, in the order written."""
    if not path.exists():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        entries.append(Audited(record["method"], record["path"], record["status"], record["recorded"]))
    return entries

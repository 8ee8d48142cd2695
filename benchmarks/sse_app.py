"""The app the SSE fan-out benchmark serves under gunicorn: the admin API, its event stream, open to all.

``gunicorn 'benchmarks.sse_app:create_app()'`` with ``BENCH_SSE_STORE`` (the event store URL)
and ``BENCH_SSE_CLIENTS`` (the most streams it serves at once).
"""

from __future__ import annotations

import os

from flask import Flask

from flask_shimmie import ShimmieStack


def create_app() -> Flask:
    """An app whose every caller is an admin, so ``/admin/events/stream`` answers anyone."""
    stack = ShimmieStack()
    stack.authenticator(lambda: {"name": "bench"})
    stack.admin_authorizer(lambda identity: True)
    app = Flask("shimmie_bench_sse")
    app.config.update(
        SHIMMIE_EVENT_STORE=os.environ["BENCH_SSE_STORE"],
        SHIMMIE_ADMIN_URL="/admin",
        SHIMMIE_SSE_MAX_CLIENTS=int(os.environ.get("BENCH_SSE_CLIENTS", "64")),
        SHIMMIE_SSE_HEARTBEAT=1.0,
    )
    stack.init_app(app)
    return app

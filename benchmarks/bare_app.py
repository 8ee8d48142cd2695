"""The HTTP baseline: a bare Flask app doing what the songs example does, minus the event store.

``POST /v1/items`` appends the JSON body to a list (201 ``Created`` with a
``Location``) and ``GET /v1/items/<id>`` answers one item. Every worker
process has its own list, so the GET benchmark reads the :data:`SEED_COUNT`
items every worker creates at start-up (ids ``seed-0`` ...).

With ``BENCH_BARE_SQLITE`` naming a prepared SQLite file (WAL, table
``items``), ``POST /v1/durable-items`` also inserts the body there, one
``synchronous=FULL`` commit per request: the same durability as the songs
app's events, without anything else flask_shimmie does.

Run by the HTTP scenario as ``gunicorn 'benchmarks.bare_app:create_app()'``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import uuid
from typing import Any

from flask import Flask, Response, abort, request, url_for

SEED_COUNT = 100


def create_app() -> Flask:
    """The bare app, with :data:`SEED_COUNT` items already in it."""
    app = Flask(__name__)
    items: list[dict[str, Any]] = []
    by_id: dict[str, dict[str, Any]] = {}

    def add(item_id: str, body: dict[str, Any]) -> None:
        item = {"id": item_id, "title": body["title"], "artist": body["artist"], "year": body["year"]}
        item["version"] = 1
        items.append(item)
        by_id[item_id] = item

    for index in range(SEED_COUNT):
        add(f"seed-{index}", {"title": f"Song {index}", "artist": "Elvis", "year": "1952"})

    @app.post("/v1/items")
    def create_item() -> Response:
        body = request.get_json()
        item_id = str(uuid.uuid4())
        add(item_id, body)
        response = Response("Created", status=201, mimetype="text/plain")
        response.headers["Location"] = url_for("get_item", item_id=item_id)
        return response

    @app.get("/v1/items/<item_id>")
    def get_item(item_id: str) -> dict[str, Any]:
        item = by_id.get(item_id)
        if item is None:
            abort(404)
        return item

    path = os.environ.get("BENCH_BARE_SQLITE")
    if path:
        add_durable_route(app, path)
    return app


def prepare_durable_file(path: str) -> None:
    """Create the durable baseline's file: WAL journal, table ``items``."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS items (id TEXT PRIMARY KEY, body TEXT NOT NULL)")
        conn.commit()
    finally:
        conn.close()


def add_durable_route(app: Flask, path: str) -> None:
    """``POST /v1/durable-items``: one synced SQLite insert per request, a connection per thread."""
    local = threading.local()

    def connection() -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA synchronous=FULL")
            local.conn = conn
        return conn

    @app.post("/v1/durable-items")
    def create_durable_item() -> Response:
        body = request.get_json()
        item_id = str(uuid.uuid4())
        conn = connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("INSERT INTO items (id, body) VALUES (?, ?)", (item_id, json.dumps(body)))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        response = Response("Created", status=201, mimetype="text/plain")
        response.headers["Location"] = f"/v1/durable-items/{item_id}"
        return response

"""The documentation: it builds with warnings as errors, and its pages match the code they describe."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from flask import Flask

import flask_shimmie
from flask_shimmie.cli import shimmie_cli
from flask_shimmie.settings import DEFAULTS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

#: Pages a reader reaches from the index, and names each must show once built.
PAGES = {
    "index": ["flask_shimmie", "Quick start", "Tutorial"],
    "quickstart": ["Install", "Run it", "Call it", "SongList", "X-Seq-Num"],
    "tutorial": ["example_songs", "SongList", "load_or_404", "notify-new-songs", "songs-by-artist"],
    "services": ["record_event", "expected_versions", "lock_stream", "snapshot_version"],
    "configuration": ["SHIMMIE_EVENT_STORE", "SHIMMIE_OPENAPI_OPTIONS"],
    "stores": ["sqlite:///songs.db", "postgresql://", "example_songs.serve", "gunicorn.conf.py"],
    "subscriptions": ["reactor", "Projection", "projection_db"],
    "other-services": ["text/event-stream", "Last-Event-ID", "NatsJetStreamSink", "RabbitMqSink"],
    "pii": ["erase_pii", "Where erased PII may still be", "secure_delete"],
    "testing": ["ShimmieTester", "run_subscriptions"],
    "cli": ["erase-pii", "init-db", "Move a store from one backend to another"],
    "admin": ["/admin/health", "admin_authorizer"],
    "observability": ["shimmie_events_appended_total", "PROMETHEUS_MULTIPROC_DIR", "shimmie.record"],
    "openapi": ["/openapi.json", "Swagger UI", "schemathesis"],
    "guarantees": ["tests/test_crash.py"],
    "benchmarks": ["eventsourcing", "Scenarios", "Measurements behind the design"],
    "changelog": ["Changelog", "Unreleased"],
    "api": [
        "ShimmieStack",
        "record_event",
        "mount_processor",
        "Event",
        "Model",
        "Projection",
        "subscribe",
        "StreamVersionError",
        "NatsJetStreamSink",
        "RabbitMqSink",
        "ShimmieTester",
        "event_recorded",
        "pii_erased",
    ],
}


def _page(name: str) -> str:
    return (DOCS / f"{name}.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The HTML site, built once with every warning (nitpicky references included) an error."""
    pytest.importorskip("sphinx", reason="sphinx is not installed (pip install -e '.[test]')")
    pytest.importorskip("myst_parser", reason="myst-parser is not installed (pip install -e '.[test]')")
    output = tmp_path_factory.mktemp("html")
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-b", "html", "docs", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return output


def test_the_docs_build_with_warnings_as_errors_and_show_every_page(built: Path) -> None:
    for page, names in PAGES.items():
        html = (built / f"{page}.html").read_text(encoding="utf-8")
        missing = [name for name in names if name not in html]
        assert not missing, f"{page}.html lacks {missing}"


def _documented_as(html: str, name: str) -> bool:
    """Whether ``flask_shimmie.<name>`` is documented, as such or under the module that defines it."""
    if f'id="flask_shimmie.{name}"' in html:
        return True
    # Names whose ``#:`` comments live in their own module are documented there.
    for module in re.findall(rf'id="(flask_shimmie\.[a-z_.]+)\.{re.escape(name)}"', html):
        if getattr(importlib.import_module(module), name, None) is getattr(flask_shimmie, name):
            return True
    return False


def test_the_api_reference_documents_every_public_name(built: Path) -> None:
    html = (built / "api.html").read_text(encoding="utf-8")
    assert [name for name in flask_shimmie.__all__ if not _documented_as(html, name)] == []
    for method in ("record_event", "record_events", "erase_pii", "reactor", "register_projection"):
        assert f'id="flask_shimmie.ShimmieStack.{method}"' in html


def _table_rows(text: str) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        if line.startswith("| `"):
            rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


def test_the_configuration_table_lists_every_key_with_its_default() -> None:
    keys = _page("configuration").split("## The keys", 1)[1].split("\n## ", 1)[0]
    rows = _table_rows(keys)
    documented = {row[0].strip("`"): row[1].strip("`") for row in rows}
    assert list(documented) == list(DEFAULTS)  # in the order settings.DEFAULTS has them
    for key, default in DEFAULTS.items():
        assert ast.literal_eval(documented[key]) == default, key


def _commands(group: click.Group, prefix: str = "") -> list[str]:
    names = []
    for name, command in sorted(group.commands.items()):
        names.append(f"{prefix}{name}")
        if isinstance(command, click.Group):
            names.extend(_commands(command, f"{prefix}{name} "))
    return names


def _command_name(cell: str) -> str:
    """``"`subscriptions reset NAME [--to N]`"`` → ``"subscriptions reset"``."""
    words = cell.split("`")[1].split()
    return " ".join(word for word in words[:2] if re.fullmatch(r"[a-z][a-z-]*", word))


def test_the_cli_page_lists_every_command() -> None:
    documented = [_command_name(row[0]) for row in _table_rows(_page("cli"))]
    assert sorted(documented) == _commands(shimmie_cli)


def _admin_app() -> Flask:
    from example_songs import create_app

    return create_app({"TESTING": True, "SHIMMIE_METRICS": True})


def test_the_admin_page_lists_every_route() -> None:
    pytest.importorskip("prometheus_client", reason="prometheus_client is not installed (the metrics extra)")
    app = _admin_app()
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("shimmie_admin") or rule.rule.startswith("/admin/"):
            for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
                routes.add(f"{method} {re.sub(r'<[^>]*>', '<>', rule.rule)}")
    documented = set()
    for row in _table_rows(_page("admin")):
        route = re.sub(r"<[^>]*>", "<>", row[0].strip("`").split("?")[0])
        documented.add(route)
    assert routes and sorted(routes) == sorted(documented)


def test_the_guarantees_name_tests_that_exist() -> None:
    text = _page("guarantees")
    named = re.findall(r"`((?:tests/)?[\w/]*test_\w+\.py)(?:::(\w+))?", text)
    assert len(named) > 30
    for path, test in named:
        found = [ROOT / path] if path.startswith("tests/") else sorted((ROOT / "tests").rglob(path))
        assert found and found[0].is_file(), path
        if test:
            assert re.search(rf"^(?:async )?def {test}\(", found[0].read_text(), re.M), f"{path}::{test}"


def _load_example(path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str) -> Any:
    """The module made of the first Python block of ``path``, imported as ``name``."""
    for variable in [name for name in os.environ if name.startswith("FLASK_")]:
        monkeypatch.delenv(variable)
    code = re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), re.S)[0]
    (tmp_path / f"{name}.py").write_text(code)
    spec = importlib.util.spec_from_file_location(name, tmp_path / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


def test_the_quick_start_app_answers_as_the_page_says(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    module = _load_example(DOCS / "quickstart.md", monkeypatch, tmp_path, "quickstart_app")
    app = module.create_app()
    client = app.test_client()
    created = client.post("/v1/songs", json={"title": "Hound Dog", "artist": "Elvis"})
    assert created.status_code == 201
    assert created.headers["X-Seq-Num"] == "1"
    song_id = created.get_json()["id"]
    assert client.get("/v1/songs").get_json() == [{"id": song_id, "title": "Hound Dog", "artist": "Elvis"}]
    missing = client.get("/v1/nope")
    assert missing.status_code == 404 and missing.get_json()["message"] == "Nothing here: /v1/nope"
    module.stack.shutdown(app)


def test_the_readme_example_records_and_answers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    module = _load_example(ROOT / "README.md", monkeypatch, tmp_path, "readme_app")
    app = module.create_app()
    client = app.test_client()
    created = client.post("/v1/songs", json={"title": "Hound Dog"})
    assert created.status_code == 201
    assert client.get("/v1/songs").get_json() == {created.get_json()["id"]: {"title": "Hound Dog"}}
    module.stack.shutdown(app)


def test_the_readme_keeps_the_two_commands_and_links_only_to_pages_that_exist() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    test_command = 'python -m pip install -e ".[test]" && python -m pytest'
    assert test_command in readme
    assert test_command in (ROOT / ".ci" / "run").read_text()
    assert 'python -m pip install -e ".[openapi,metrics]" && flask --app example_songs run' in readme
    links = re.findall(r"\]\((docs/[^)#]+)", readme)
    assert len(links) >= 10
    assert [link for link in links if not (ROOT / link).is_file()] == []

"""The web console's routes (Flask test client): the page, its files, its headers, its config, its package.

The console in a browser is tested in ``test_console_browser.py``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_shimmie import ShimmieStack
from flask_shimmie.console import ASSET_TYPES, ASSETS, CONSOLE_CSP
from flask_shimmie.errors import ConfigurationError

REPO_ROOT = Path(__file__).resolve().parent.parent
ADMIN = {"Authorization": "Bearer admin"}


class PageParser(HTMLParser):
    """Every start tag of a page with its attributes, and the text inside each script element."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_text: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.script_text.append(data)


def parse(html: str) -> PageParser:
    parser = PageParser()
    parser.feed(html)
    return parser


@pytest.fixture
def console_app(make_app: Callable[..., Flask], stack: ShimmieStack) -> Flask:
    """An app with the console on, an authenticator and an admin authorizer (token ``admin``)."""
    from flask import request

    stack.authenticator(
        lambda: {"admin": True} if request.headers.get("Authorization") == ADMIN["Authorization"] else None
    )
    stack.admin_authorizer(lambda identity: bool(identity.get("admin")))
    return make_app(SHIMMIE_ADMIN_URL="/ops", SHIMMIE_CONSOLE=True, SHIMMIE_ENFORCE_AUTHORIZATION=True)


def test_the_console_is_off_by_default(make_app: Callable[..., Flask]) -> None:
    app = make_app(SHIMMIE_ADMIN_URL="/admin")
    assert app.config["SHIMMIE_CONSOLE"] is False
    assert app.test_client().get("/admin/console").status_code == 404
    assert not any(rule.endpoint.startswith("shimmie_console.") for rule in app.url_map.iter_rules())


def test_the_console_needs_the_admin_url(make_app: Callable[..., Flask]) -> None:
    with pytest.raises(ConfigurationError) as refused:
        make_app(SHIMMIE_CONSOLE=True)
    assert str(refused.value) == (
        "SHIMMIE_CONSOLE = True needs SHIMMIE_ADMIN_URL (e.g. '/admin'): the console is served at "
        "<SHIMMIE_ADMIN_URL>/console and reads everything through the admin API."
    )


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_the_console_flag_must_be_a_bool(make_app: Callable[..., Flask], value: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"SHIMMIE_CONSOLE = .* must be True or False"):
        make_app(SHIMMIE_ADMIN_URL="/admin", SHIMMIE_CONSOLE=value)


def test_the_page_is_served_without_credentials_and_holds_no_script_of_its_own(console_app: Flask) -> None:
    client = console_app.test_client()
    response = client.get("/ops/console")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = parse(response.get_data(as_text=True))
    body = next(attrs for tag, attrs in page.tags if tag == "body")
    assert body["data-admin-url"] == "/ops"
    scripts = [attrs for tag, attrs in page.tags if tag == "script"]
    assert scripts == [{"type": "module", "src": "/ops/console/assets/main.js"}]
    assert page.script_text == []
    for tag, attrs in page.tags:
        assert not any(name.startswith("on") or name == "style" for name in attrs), (tag, attrs)
    assert all(tag != "style" for tag, _ in page.tags)
    # The admin API itself still wants the admin's credentials.
    assert client.get("/ops/events").status_code == 401
    assert client.get("/ops/events", headers=ADMIN).status_code == 200


def test_every_console_response_has_a_strict_content_security_policy(console_app: Flask) -> None:
    client = console_app.test_client()
    responses = [client.get("/ops/console")] + [
        client.get(f"/ops/console/assets/{path.name}") for path in sorted(ASSETS.iterdir())
    ]
    for response in responses:
        assert response.status_code == 200, response.request.path
        assert response.headers["Content-Security-Policy"] == CONSOLE_CSP
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert response.headers["Cache-Control"] == "no-cache"
    directives = dict(part.strip().split(" ", 1) for part in CONSOLE_CSP.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["connect-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["require-trusted-types-for"] == "'script'"
    assert "unsafe" not in CONSOLE_CSP and "data:" not in CONSOLE_CSP and "*" not in CONSOLE_CSP


def test_the_files_have_their_content_types_and_revalidate(console_app: Flask) -> None:
    client = console_app.test_client()
    for path in sorted(ASSETS.iterdir()):
        response = client.get(f"/ops/console/assets/{path.name}")
        assert response.mimetype == ASSET_TYPES[path.suffix]
        assert response.data == path.read_bytes()
        again = client.get(
            f"/ops/console/assets/{path.name}", headers={"If-None-Match": response.headers["ETag"]}
        )
        assert again.status_code == 304


@pytest.mark.parametrize(
    "path",
    [
        "/ops/console/assets/nothing.js",
        "/ops/console/assets/__init__.py",
        "/ops/console/assets/..%2F__init__.py",
        "/ops/console/assets/../__init__.py",
        "/ops/console/",
    ],
)
def test_nothing_else_is_served(console_app: Flask, path: str) -> None:
    response = console_app.test_client().get(path)
    assert response.status_code == 404
    assert response.get_json()["code"] == 404


def test_under_a_script_root_the_page_points_below_it(console_app: Flask) -> None:
    response = console_app.test_client().get("/ops/console", environ_overrides={"SCRIPT_NAME": "/songs"})
    page = parse(response.get_data(as_text=True))
    body = next(attrs for tag, attrs in page.tags if tag == "body")
    assert body["data-admin-url"] == "/songs/ops"
    links = [attrs.get("href") or attrs.get("src") for tag, attrs in page.tags if tag in ("link", "script")]
    assert links and all(str(link).startswith("/songs/ops/console/assets/") for link in links)


def test_the_app_name_in_the_page_is_escaped(make_app: Callable[..., Flask]) -> None:
    app = make_app(SHIMMIE_ADMIN_URL="/admin", SHIMMIE_CONSOLE=True)
    app.name = "<b>songs</b>"
    html = app.test_client().get("/admin/console").get_data(as_text=True)
    assert "<b>" not in html and "&lt;b&gt;songs&lt;/b&gt;" in html


def _scripts() -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted(ASSETS.glob("*.js"))}


def test_the_scripts_import_only_each_other_and_add_no_markup() -> None:
    scripts = _scripts()
    assert "main.js" in scripts
    for name, text in scripts.items():
        for imported in re.findall(r"""^import .* from "([^"]+)";$""", text, re.MULTILINE):
            assert imported.startswith("./") and imported[2:] in scripts, (name, imported)
        for sink in (
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
        ):
            assert sink not in text, f"{name} uses {sink}"
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, name


def test_the_scripts_call_the_admin_api_alone() -> None:
    """fetch() is called in two places, each on a URL built from the page's admin URL."""
    calls = {name: re.findall(r"fetch\((\w+)\(", text) for name, text in _scripts().items()}
    assert {name: found for name, found in calls.items() if found} == {"api.js": ["url"], "sse.js": ["url"]}
    assert sum(len(re.findall(r"(?<![\w.])fetch\((?!\))", text)) for text in _scripts().values()) == 2
    assert "new URL(adminUrl() + path, window.location.origin)" in _scripts()["api.js"]


def test_the_package_declares_the_console_files() -> None:
    setup_cfg = (REPO_ROOT / "setup.cfg").read_text()
    assert re.search(r"^flask_shimmie\.console = assets/\*$", setup_cfg, re.MULTILINE)


def test_a_build_ships_the_console_files(tmp_path: Path) -> None:
    """``pip install .`` installs what setuptools' ``build_py`` gathers: run it on a copy of the sources."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    shutil.copytree(
        REPO_ROOT / "flask_shimmie", source / "flask_shimmie", ignore=shutil.ignore_patterns("__pycache__")
    )
    target = tmp_path / "lib"
    built = subprocess.run(
        [
            sys.executable,
            "-c",
            "from setuptools import setup; setup()",
            "-q",
            "build_py",
            "--build-lib",
            str(target),
        ],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    shipped = target / "flask_shimmie" / "console"
    assert sorted(path.name for path in (shipped / "assets").iterdir()) == sorted(
        path.name for path in ASSETS.iterdir()
    )
    assert (shipped / "__init__.py").is_file()


def test_the_example_serves_the_console_and_its_metrics() -> None:
    from example_songs import create_app, stack

    app = create_app({"TESTING": True})
    try:
        client = app.test_client()
        assert app.config["SHIMMIE_CONSOLE"] is True and app.config["SHIMMIE_METRICS"] is True
        assert client.get("/admin/console").status_code == 200
        metrics = client.get("/admin/metrics", headers={"Authorization": "Bearer admin-token"})
        assert metrics.status_code == 200 and b"shimmie_last_stored_position" in metrics.data
    finally:
        stack.shutdown(app)


def test_the_example_starts_without_the_metrics_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """The quick start installs the openapi extra alone: the example then runs, without metrics."""
    from example_songs import create_app, stack

    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if it were not installed
    app = create_app({"TESTING": True})
    try:
        client = app.test_client()
        assert app.config["SHIMMIE_METRICS"] is False
        admin = {"Authorization": "Bearer admin-token"}
        assert client.get("/admin/metrics", headers=admin).status_code == 404
        assert client.get("/admin/console").status_code == 200
    finally:
        stack.shutdown(app)

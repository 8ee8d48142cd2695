"""The web console: ``<SHIMMIE_ADMIN_URL>/console``, a page that operates the app through the admin API.

Registered by ``init_app`` when ``SHIMMIE_CONSOLE`` is on (which needs
``SHIMMIE_ADMIN_URL``). The page and its files (plain HTML, CSS and
JavaScript modules, in this package's ``assets`` folder) hold no data, so
they are served to anyone (``@no_authorization``); everything the page shows
it reads from the admin API in the browser, sending the token the operator
typed (kept in the tab's ``sessionStorage``) as ``Authorization: Bearer``, so
the admin authorizer decides as it does for any other client.

Event data is user input: the scripts put every value into the page as text,
never as markup, and every console response carries a Content-Security-Policy
that allows scripts from this origin only (no inline script, no ``eval``) and
makes Chromium refuse HTML strings in script-reachable sinks (Trusted Types).
The files change with the package: the browser revalidates them (ETag) on
each load.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, current_app, request, send_from_directory, url_for
from markupsafe import escape
from werkzeug.exceptions import NotFound

from ..auth import no_authorization

#: The blueprint's name; its endpoints are ``shimmie_console.<view>``.
BLUEPRINT = "shimmie_console"
#: Where the page's files are, in the installed package.
ASSETS = Path(__file__).resolve().parent / "assets"
#: The file types served from there, with their content types.
ASSET_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}
#: The page's script, an ES module that imports the others.
ENTRY_SCRIPT = "main.js"
#: Scripts and styles from this origin only, no inline code, no framing; fetch() only to this origin.
#: Trusted Types make Chromium throw on an HTML string given to ``innerHTML`` and the like.
CONSOLE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'; "
    "require-trusted-types-for 'script'; trusted-types 'none'"
)
#: The headers of every console response.
SECURITY_HEADERS = {
    "Content-Security-Policy": CONSOLE_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
PAGE = """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} console</title>
<link rel="stylesheet" href="{css}">
<link rel="icon" type="image/svg+xml" href="{icon}">
<script type="module" src="{script}"></script>
</head>
<body data-admin-url="{admin_url}">
<header class="top">
  <h1><span class="brand">shimmie</span> console <span class="app-name">{title}</span></h1>
  <nav>
    <a href="#/health" data-view="health">Health</a>
    <a href="#/events" data-view="events">Events</a>
    <a href="#/tail" data-view="tail">Live tail</a>
    <a href="#/subscriptions" data-view="subscriptions">Subscriptions</a>
  </nav>
  <form id="sign-in" class="sign-in" autocomplete="off">
    <label for="token">Admin token</label>
    <input id="token" name="token" type="password" placeholder="Bearer token" spellcheck="false">
    <button type="submit" id="sign-in-button">Sign in</button>
    <span id="signed-in" class="signed-in" hidden>Signed in (this tab)</span>
    <button type="button" id="sign-out" hidden>Sign out</button>
  </form>
</header>
<div id="notice" class="notice" role="alert" hidden></div>
<main id="view"><noscript>The console needs JavaScript.</noscript></main>
</body>
</html>
"""


def _secured(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


def create_console_blueprint(admin_url: str) -> Blueprint:
    """The console's blueprint (one per app), to be mounted at ``admin_url`` (``SHIMMIE_ADMIN_URL``)."""
    blueprint = Blueprint(BLUEPRINT, __name__)

    @blueprint.get("/console")
    @no_authorization
    def page() -> Response:
        """The console page: a shell that its scripts fill with what the admin API answers."""
        app = current_app
        html = PAGE.format(
            title=escape(app.name),
            css=escape(url_for(".asset", filename="console.css")),
            icon=escape(url_for(".asset", filename="icon.svg")),
            script=escape(url_for(".asset", filename=ENTRY_SCRIPT)),
            admin_url=escape(request.script_root + admin_url),
        )
        return _secured(Response(html, mimetype="text/html"))

    @blueprint.get("/console/assets/<filename>")
    @no_authorization
    def asset(filename: str) -> Response:
        """One of the console's files (scripts, styles, its icon)."""
        content_type = ASSET_TYPES.get(Path(filename).suffix)
        if content_type is None or not (ASSETS / filename).is_file():
            raise NotFound(f"The console has no file {filename!r:.80}.")
        response = send_from_directory(ASSETS, filename, mimetype=content_type, max_age=0)
        return _secured(response)

    return blueprint

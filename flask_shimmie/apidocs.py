"""The blueprint that serves the API description: ``/openapi.json`` and the ``/docs`` page.

Registered by ``init_app`` when ``SHIMMIE_OPENAPI`` is on, at
``SHIMMIE_OPENAPI_URL_PREFIX`` (the app's root by default, as flask-smorest
users set ``OPENAPI_URL_PREFIX = "/"``), without the API version prefix. Its
routes need no authorization (``@no_authorization``) and no store.

``/docs`` is Swagger UI, whose JavaScript and CSS come from the
``flask-swagger-ui`` package and are served by the app itself, under a path
that names their version (cached for a year, ``immutable``): the page loads
nothing from another origin, and its Content-Security-Policy forbids it.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request, send_from_directory, url_for
from markupsafe import escape
from werkzeug.exceptions import NotFound

from .auth import no_authorization
from .errors import ConfigurationError

if TYPE_CHECKING:
    from .settings import OpenApiSettings
    from .state import AppState

#: The blueprint's name; its endpoints are ``shimmie_openapi.<view>``.
BLUEPRINT = "shimmie_openapi"
#: The package whose Swagger UI files ``/docs`` serves.
ASSETS_PACKAGE = "flask_swagger_ui"
#: The file types served from it, with their content types.
ASSET_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
#: Assets live under a path naming their version, so they may be cached for good.
ASSET_CACHE = "public, max-age=31536000, immutable"
#: The page, the document and the page's script change with the app: revalidate each time.
REVALIDATE = "no-cache"
#: Nothing from another origin; Swagger UI sets inline styles, and shows data: images.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
#: The page's own script: reads the document's URL from the page, so that it never changes.
INITIALIZER_JS = """\
window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.getAttribute("data-openapi-url"),
    domNode: root,
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout"
  });
});
"""
#: Bumped when :data:`INITIALIZER_JS` changes, since its URL is cached for good.
INITIALIZER_VERSION = "1"
PAGE = """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="stylesheet" href="{css}">
<link rel="icon" type="image/png" href="{icon}">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{document}"></div>
<script src="{bundle}"></script>
<script src="{initializer}"></script>
</body>
</html>
"""


def document_builder() -> Callable[[Flask], dict[str, Any]]:
    """:func:`flask_shimmie.openapi.build_document`, imported now.

    Raises :class:`ConfigurationError` naming the ``openapi`` extra when apispec is missing.
    """
    try:
        module = importlib.import_module(".openapi", __package__)
    except ImportError as error:
        raise ConfigurationError(
            f"The API description (SHIMMIE_OPENAPI, flask shimmie openapi) needs apispec, and "
            f"{error.name or 'a module'} cannot be imported: pip install 'flask-shimmie[openapi]'."
        ) from error
    builder: Callable[[Flask], dict[str, Any]] = module.build_document
    return builder


def assets_directory() -> tuple[Path, str]:
    """The directory of the Swagger UI files and their version.

    Raises :class:`ConfigurationError` naming the ``openapi`` extra when the package is missing.
    """
    spec = importlib.util.find_spec(ASSETS_PACKAGE)
    locations = list(spec.submodule_search_locations or ()) if spec is not None else []
    for location in locations:
        directory = Path(location) / "dist"
        if (directory / "swagger-ui-bundle.js").is_file():
            version_file = directory / "VERSION"
            version = version_file.read_text().strip().lstrip("v") if version_file.is_file() else "0"
            return directory, version or "0"
    raise ConfigurationError(
        f"The /docs page of SHIMMIE_OPENAPI serves Swagger UI from the {ASSETS_PACKAGE.replace('_', '-')} "
        "package, which is not installed: pip install 'flask-shimmie[openapi]' "
        "(or set SHIMMIE_OPENAPI_DOCS = False to serve /openapi.json alone)."
    )


def create_openapi_blueprint(settings: OpenApiSettings) -> Blueprint:
    """Build the blueprint (one per app) for ``settings``; see the module's docstring.

    Raises :class:`ConfigurationError` when a package it needs is missing.
    """
    build = document_builder()
    blueprint = Blueprint(BLUEPRINT, __name__)
    cache: dict[str, Any] = {}

    def current_document() -> dict[str, Any]:
        app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
        state: AppState = app.extensions["shimmie"]
        # Routes cannot change once requests are served, but event schemas may still come.
        key = tuple(state.registry.types.schemas.items())
        if cache.get("key") != key:
            cache["document"] = build(app)
            cache["key"] = key
        document: dict[str, Any] = cache["document"]
        return document

    @blueprint.get("/openapi.json")
    @no_authorization
    def document() -> Response:
        """The OpenAPI 3.1 document (ETag, so that a client may revalidate cheaply)."""
        response = jsonify(current_document())
        response.headers["Cache-Control"] = REVALIDATE
        response.add_etag()
        response.make_conditional(request)
        return response

    if not settings.docs:
        return blueprint

    directory, assets_version = assets_directory()

    @blueprint.get("/docs")
    @no_authorization
    def docs() -> Response:
        """The API page: Swagger UI on ``/openapi.json``, every file served by this app."""
        app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
        page = PAGE.format(
            title=escape(f"{settings.title or app.name} API"),
            css=escape(url_for(".asset", version=assets_version, filename="swagger-ui.css")),
            icon=escape(url_for(".asset", version=assets_version, filename="favicon-32x32.png")),
            document=escape(url_for(".document")),
            bundle=escape(url_for(".asset", version=assets_version, filename="swagger-ui-bundle.js")),
            initializer=escape(url_for(".initializer", version=INITIALIZER_VERSION)),
        )
        response = Response(page, mimetype="text/html")
        response.headers["Cache-Control"] = REVALIDATE
        response.headers["Content-Security-Policy"] = DOCS_CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    @blueprint.get("/docs/init-<version>.js")
    @no_authorization
    def initializer(version: str) -> Response:
        """The page's own script."""
        if version != INITIALIZER_VERSION:
            raise NotFound(f"No page script of version {version!r:.40}.")
        response = Response(INITIALIZER_JS, mimetype=ASSET_TYPES[".js"])
        return _cached_for_good(response)

    @blueprint.get("/docs/assets/<version>/<filename>")
    @no_authorization
    def asset(version: str, filename: str) -> Response:
        """A Swagger UI file (scripts, styles, icons only)."""
        content_type = ASSET_TYPES.get(Path(filename).suffix)
        if version != assets_version or content_type is None or not (directory / filename).is_file():
            raise NotFound(f"No Swagger UI file {filename!r:.80} of version {version!r:.40}.")
        response = send_from_directory(directory, filename, mimetype=content_type, max_age=None)
        return _cached_for_good(response)

    return blueprint


def _cached_for_good(response: Response) -> Response:
    response.headers["Cache-Control"] = ASSET_CACHE
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response

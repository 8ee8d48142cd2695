"""The API description: /openapi.json (OpenAPI 3.1 from apispec), the /docs page, the CLI, the config.

A small app of its own: a command and a query processor (``@stack.arguments`` in the body and
the query, ``@stack.response`` and ``@stack.doc`` declarations, typed URL converters, a
class-based view, an open view), two event schemas (one with PII), the admin API at ``/admin``,
authorization enforced.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from flask import Blueprint, Flask, request
from flask.views import MethodView
from marshmallow import Schema, fields, validate

from flask_shimmie import ConfigurationError, ShimmieStack, any_identity, authorize, no_authorization
from tests.serving import REPO_ROOT

pytest.importorskip("apispec", reason="apispec is not installed (pip install -e '.[openapi]')")
openapi_spec_validator = pytest.importorskip("openapi_spec_validator")

ERROR_STATUSES = ("400", "401", "403", "404", "409", "413", "422", "500", "503")
TOKENS = {"Bearer writer": {"name": "w", "write": True}, "Bearer reader": {"name": "r", "write": False}}


class ThingAdded(Schema):
    """``THING_ADDED``: a new thing."""

    name = fields.String(required=True, validate=validate.Length(min=1, max=50))
    owner = fields.Email(required=True, metadata={"pii": True})


class ThingRenamed(Schema):
    name = fields.String(required=True)


class AddThing(Schema):
    name = fields.String(required=True)
    owner = fields.Email(required=True)


class Paging(Schema):
    after = fields.Integer(validate=validate.Range(min=0))
    limit = fields.Integer(validate=validate.Range(min=1, max=10))


class Thing(Schema):
    id = fields.String(required=True)
    name = fields.String(required=True)


def can_write(identity: Mapping[str, Any]) -> bool:
    return bool(identity["write"])


def build(config: Mapping[str, Any] | None = None, *, stack: ShimmieStack | None = None) -> Flask:
    """The test app (with its own stack), on the memory store."""
    stack = stack or ShimmieStack()
    commands = Blueprint("thing_command", __name__)
    queries = Blueprint("thing_query", __name__)

    @commands.post("")
    @authorize(can_write)
    @stack.arguments(AddThing)
    @stack.response(201, Thing, headers={"Location": {"schema": {"type": "string"}}})
    def add_thing(body: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """Add a thing.

        Records ``THING_ADDED``.
        """
        return {"id": "t1", "name": body["name"]}, 201

    @commands.delete("/<int:thing_id>")
    @authorize(can_write)
    @stack.response(204)
    def delete_thing(thing_id: int) -> tuple[str, int]:
        return "", 204

    @queries.get("")
    @authorize(any_identity)
    @stack.arguments(Paging, location="query")
    @stack.response(Thing(many=True), 200)  # schema first is accepted too
    def list_things(paging: dict[str, Any]) -> list[dict[str, Any]]:
        """List things."""
        return [{"id": "t1", "name": "one"}]

    @queries.get("/<uuid:thing_id>/files/<path:name>")
    @authorize(any_identity)
    @stack.doc(deprecated=True, parameters=[{"in": "path", "name": "name", "schema": {"type": "string"}}])
    def thing_file(thing_id: Any, name: str) -> dict[str, Any]:
        return {"name": name}

    @queries.get("/kind/<any(big, small):kind>")
    @no_authorization
    def by_kind(kind: str) -> dict[str, Any]:
        """Things of one kind, for anyone."""
        return {"kind": kind}

    class Stock(MethodView):
        decorators = [authorize(any_identity)]

        @stack.response(200, {"type": "object", "properties": {"count": {"type": "integer"}}})
        def get(self) -> dict[str, Any]:
            """How many things there are."""
            return {"count": 1}

        def put(self) -> dict[str, Any]:
            return {"count": 2}

    queries.add_url_rule("/stock", view_func=Stock.as_view("stock"))
    stack.event_schema("THING_ADDED", ThingAdded).event_schema("THING_RENAMED", ThingRenamed)
    stack.event_schema("THING_NAMED", ThingRenamed)
    stack.authenticator(lambda: TOKENS.get(request.headers.get("Authorization", "")))
    stack.admin_authorizer(lambda identity: bool(identity["write"]))
    stack.set_api_version("/v2")
    stack.mount_processor("Thing Command", "/things", commands)
    stack.mount_processor("Thing Query", "/things", queries)
    app = Flask("things")
    app.config.update(
        {
            "TESTING": True,
            "SHIMMIE_OPENAPI": True,
            "SHIMMIE_ENFORCE_AUTHORIZATION": True,
            "SHIMMIE_ADMIN_URL": "/admin",
            **(config or {}),
        }
    )
    stack.init_app(app)
    return app


@pytest.fixture
def app() -> Iterator[Flask]:
    app = build()
    yield app
    app.extensions["shimmie"].stack.shutdown(app)


@pytest.fixture
def document(app: Flask) -> dict[str, Any]:
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200, response.get_data(as_text=True)
    body: dict[str, Any] = response.get_json()
    return body


def operation(document: Mapping[str, Any], path: str, method: str) -> dict[str, Any]:
    found: dict[str, Any] = document["paths"][path][method]
    return found


def resolve(document: Mapping[str, Any], node: Any) -> Any:
    """Follow ``$ref``s to the object they name."""
    while isinstance(node, Mapping) and "$ref" in node:
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


# -- the document ---------------------------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    openapi_spec_validator.validate(document)
    assert document["info"] == {"title": "things", "version": "1.0.0"}


def test_every_mounted_route_appears_with_its_methods_and_path_parameters(
    app: Flask, document: dict[str, Any]
) -> None:
    expected: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint.split(".")[0] in ("thing_command", "thing_query", "shimmie_admin"):
            path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
            expected.setdefault(path, set()).update(
                m.lower() for m in rule.methods or () if m not in ("HEAD", "OPTIONS")
            )
    described = {path: set(item) for path, item in document["paths"].items()}
    assert described == expected
    assert "/v2/things/{thing_id}" in described and described["/v2/things/stock"] == {"get", "put"}
    params = {
        p["name"]: p
        for p in operation(document, "/v2/things/{thing_id}", "delete")["parameters"]
        if "name" in p
    }
    assert params["thing_id"] == {
        "name": "thing_id",
        "in": "path",
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
    }
    file_params = operation(document, "/v2/things/{thing_id}/files/{name}", "get")["parameters"]
    by_name = {p["name"]: p for p in file_params if "name" in p}
    assert by_name["thing_id"]["schema"] == {"type": "string", "format": "uuid"}
    # @stack.doc replaced the path converter's parameter, it did not add a second one.
    assert by_name["name"]["schema"] == {"type": "string"}
    assert [p.get("name") for p in file_params].count("name") == 1
    kind = operation(document, "/v2/things/kind/{kind}", "get")["parameters"][0]
    assert kind["schema"] == {"type": "string", "enum": ["big", "small"]}
    # The description's own routes are not described.
    assert not any(path.startswith(("/openapi", "/docs")) for path in document["paths"])


def test_operations_are_tagged_by_processor_and_named_by_endpoint(document: dict[str, Any]) -> None:
    add = operation(document, "/v2/things", "post")
    assert add["tags"] == ["Thing Command"] and add["operationId"] == "thing_command.add_thing"
    assert add["summary"] == "Add a thing." and add["description"] == "Records ``THING_ADDED``."
    assert operation(document, "/v2/things/stock", "put")["operationId"] == "thing_query.stock.put"
    assert operation(document, "/admin/events", "get")["tags"] == ["Admin"]
    assert [tag["name"] for tag in document["tags"]] == ["Thing Command", "Thing Query", "Admin"]
    assert operation(document, "/v2/things/{thing_id}/files/{name}", "get")["deprecated"] is True


def test_arguments_schemas_are_the_request_body_and_the_query_parameters(document: dict[str, Any]) -> None:
    body = operation(document, "/v2/things", "post")["requestBody"]
    assert body["required"] is True
    schema = resolve(document, body["content"]["application/json"]["schema"])
    assert set(schema["properties"]) == {"name", "owner"} and sorted(schema["required"]) == ["name", "owner"]
    query = {
        p["name"]: p for p in operation(document, "/v2/things", "get")["parameters"] if p.get("in") == "query"
    }
    assert set(query) == {"after", "limit"}
    assert query["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 10}
    assert query["limit"]["required"] is False
    assert "requestBody" not in operation(document, "/v2/things", "get")


def test_declared_responses_appear_and_the_view_answers_unchanged(
    app: Flask, document: dict[str, Any]
) -> None:
    add = operation(document, "/v2/things", "post")["responses"]
    assert resolve(document, add["201"]["content"]["application/json"]["schema"])["required"] == [
        "id",
        "name",
    ]
    assert add["201"]["headers"] == {"Location": {"schema": {"type": "string"}}}
    listed = operation(document, "/v2/things", "get")["responses"]["200"]["content"]["application/json"][
        "schema"
    ]
    assert listed["type"] == "array" and resolve(document, listed["items"])["properties"]["id"] == {
        "type": "string"
    }
    assert "content" not in operation(document, "/v2/things/{thing_id}", "delete")["responses"]["204"]
    stock = operation(document, "/v2/things/stock", "get")["responses"]["200"]["content"]["application/json"]
    assert stock["schema"]["properties"] == {"count": {"type": "integer"}}
    # A view without a success declaration gets a bodiless 2XX, not an invented 200.
    assert operation(document, "/v2/things/stock", "put")["responses"]["2XX"] == {
        "description": "Success (the view declares no @stack.response)"
    }
    # @stack.response documents, the view's answer is its own (nothing dumped through Thing).
    response = app.test_client().post(
        "/v2/things", json={"name": "a", "owner": "a@example.com"}, headers={"Authorization": "Bearer writer"}
    )
    assert response.status_code == 201 and response.get_json() == {"id": "t1", "name": "a"}


def test_event_schemas_are_components_named_after_their_events(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    added = schemas["THING_ADDED"]
    assert added["x-shimmie-event"] == "THING_ADDED"
    assert added["description"] == "``THING_ADDED``: a new thing."
    assert added["properties"]["owner"]["x-pii"] is True and "x-pii" not in added["properties"]["name"]
    assert added["properties"]["name"] == {"type": "string", "minLength": 1, "maxLength": 50}
    assert schemas["THING_RENAMED"]["x-shimmie-event"] == "THING_RENAMED"
    # Two events of one schema: one definition, the other refers to it.
    assert schemas["THING_NAMED"]["allOf"] == [{"$ref": "#/components/schemas/THING_RENAMED"}]


def test_security_is_on_authorized_views_only(document: dict[str, Any]) -> None:
    assert document["components"]["securitySchemes"] == {"bearerAuth": {"type": "http", "scheme": "bearer"}}
    for path, method in [
        ("/v2/things", "post"),
        ("/v2/things", "get"),
        ("/v2/things/stock", "get"),
        ("/admin/events", "get"),
    ]:
        found = operation(document, path, method)
        assert found["security"] == [{"bearerAuth": []}], (path, method)
        assert {"401", "403"} <= set(found["responses"]), (path, method)
    for path in ("/v2/things/kind/{kind}", "/admin/health"):
        found = operation(document, path, "get")
        assert "security" not in found and not {"401", "403"} & set(found["responses"]), path


def test_error_responses_reference_one_error_schema(document: dict[str, Any]) -> None:
    components = document["components"]
    error = components["schemas"]["Error"]
    assert error["required"] == ["code", "status", "message"]
    for path, item in document["paths"].items():
        for method, found in item.items():
            responses = found["responses"]
            assert {"400", "500", "503", "default"} <= set(responses), (path, method)
            for status, response in responses.items():
                if status in ERROR_STATUSES or status == "default":
                    if status == "503" and path == "/admin/health":
                        continue  # health answers its own body when a store is down
                    content = resolve(document, response)["content"]["application/json"]
                    assert content["schema"] == {"$ref": "#/components/schemas/Error"}, (path, method, status)
    commands = operation(document, "/v2/things", "post")["responses"]
    assert {"409", "413", "422"} <= set(commands)
    assert "404" in operation(document, "/v2/things/{thing_id}", "delete")["responses"]
    assert "404" not in operation(document, "/v2/things", "get")["responses"]
    assert "422" in operation(document, "/v2/things", "get")["responses"]  # its query is validated
    seq = resolve(document, operation(document, "/v2/things", "get")["parameters"][0])
    assert seq["name"] == "X-Seq-Num-Min" and seq["in"] == "header"


def test_the_error_schema_describes_the_errors_the_app_answers(app: Flask, document: dict[str, Any]) -> None:
    from jsonschema import Draft202012Validator

    schema = {**document["components"]["schemas"]["Error"], "$defs": {}}
    schema = json.loads(json.dumps(schema).replace("#/components/schemas/", "#/$defs/"))
    schema["$defs"]["StreamConflict"] = document["components"]["schemas"]["StreamConflict"]
    validator = Draft202012Validator(schema)
    client = app.test_client()
    writer = {"Authorization": "Bearer writer"}
    answers = [
        client.get("/v2/things"),  # 401
        client.post("/v2/things", json={}, headers={"Authorization": "Bearer reader"}),  # 403
        client.post("/v2/things", json={"name": 1}, headers=writer),  # 422
        client.post("/v2/things", data="{", content_type="application/json", headers=writer),  # 400
        client.get("/nothing"),  # 404
    ]
    assert [a.status_code for a in answers] == [401, 403, 422, 400, 404]
    for answer in answers:
        assert not list(validator.iter_errors(answer.get_json())), answer.get_json()


def test_the_admin_api_is_described_when_mounted_and_only_then() -> None:
    app = build()
    described = app.test_client().get("/openapi.json").get_json()
    assert {"/admin/health", "/admin/events", "/admin/streams/{stream_id}", "/admin/replay"} <= set(
        described["paths"]
    )
    events = resolve(described, operation(described, "/admin/events", "get")["responses"]["200"])
    page = resolve(described, events["content"]["application/json"]["schema"])
    assert set(page["required"]) == {"events", "next_after"}
    # An empty ?after=&limit=&stream=&type= is the default, and the document says so.
    query = operation(described, "/admin/events", "get")["parameters"]
    assert {p["name"]: p.get("allowEmptyValue") for p in query if p.get("in") == "query"} == {
        "after": True,
        "limit": True,
        "stream": True,
        "type": True,
    }
    assert resolve(described, operation(described, "/admin/health", "get")["responses"]["503"])["content"]
    without = build({"SHIMMIE_ADMIN_URL": None}).test_client().get("/openapi.json").get_json()
    assert not any(path.startswith("/admin") for path in without["paths"])
    assert "Admin" not in [tag["name"] for tag in without["tags"]]


# -- serving --------------------------------------------------------------------------------------


def test_the_document_needs_no_identity_no_store_and_revalidates_cheaply(app: Flask) -> None:
    client = app.test_client()
    first = client.get("/openapi.json")
    assert first.status_code == 200 and first.headers["Cache-Control"] == "no-cache"
    assert not app.extensions["shimmie"].started, "serving the description started the stack"
    again = client.get("/openapi.json", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and again.get_data() == b""


def test_an_event_schema_registered_later_appears(app: Flask) -> None:
    client = app.test_client()
    assert "THING_GONE" not in client.get("/openapi.json").get_json()["components"]["schemas"]
    app.extensions["shimmie"].stack.event_schema("THING_GONE", ThingRenamed)
    assert "THING_GONE" in client.get("/openapi.json").get_json()["components"]["schemas"]


class _Sources(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href", "data-openapi-url") and value:
                self.sources.append((tag, value))


def page_sources(html: str) -> list[tuple[str, str]]:
    parser = _Sources()
    parser.feed(html)
    return parser.sources


@pytest.mark.parametrize("prefix", ["", "/v2"])
def test_the_docs_page_loads_only_the_apps_own_files(prefix: str) -> None:
    app = build({"SHIMMIE_OPENAPI_URL_PREFIX": prefix})
    client = app.test_client()
    page = client.get(f"{prefix}/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert page.headers["Cache-Control"] == "no-cache"
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    html = page.get_data(as_text=True)
    assert "http://" not in html and "https://" not in html and "//" not in html.replace("<!DOCTYPE", "")
    sources = page_sources(html)
    assert {tag for tag, _ in sources} == {"link", "script", "div"}
    kinds = {
        ".css": "text/css; charset=utf-8",
        ".js": "text/javascript; charset=utf-8",
        ".png": "image/png",
        ".json": "application/json",
    }
    for _tag, source in sources:
        assert source.startswith(f"{prefix}/"), source
        served = client.get(source)
        assert served.status_code == 200, source
        assert served.headers["Content-Type"] == kinds[Path(source).suffix], source
        if source.endswith(".json"):
            continue
        assert served.headers["Cache-Control"] == "public, max-age=31536000, immutable", source
        assert served.headers["X-Content-Type-Options"] == "nosniff"
        assert len(served.get_data()) > 0
    assert ("div", f"{prefix}/openapi.json") in sources
    assert any(source.endswith("/swagger-ui-bundle.js") for _, source in sources)
    if prefix:
        assert client.get("/docs").status_code == 404 and client.get("/openapi.json").status_code == 404


def test_only_scripts_styles_and_icons_of_the_current_version_are_served(app: Flask) -> None:
    client = app.test_client()
    bundle = next(
        s for _, s in page_sources(client.get("/docs").get_data(as_text=True)) if s.endswith("bundle.js")
    )
    version = bundle.split("/")[-2]
    for path in [
        f"/docs/assets/{version}/oauth2-redirect.html",
        f"/docs/assets/{version}/LICENSE",
        f"/docs/assets/{version}/nothing.js",
        "/docs/assets/0.0.1/swagger-ui-bundle.js",
        f"/docs/assets/{version}/..%2F..%2F__init__.py",
        "/docs/init-0.js",
    ]:
        response = client.get(path)
        assert response.status_code == 404 and response.get_json()["code"] == 404, path


def test_the_docs_page_can_be_left_out() -> None:
    client = build({"SHIMMIE_OPENAPI_DOCS": False}).test_client()
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/docs").status_code == 404


def test_nothing_is_served_with_openapi_off() -> None:
    client = build({"SHIMMIE_OPENAPI": False}).test_client()
    assert client.get("/openapi.json").status_code == 404 and client.get("/docs").status_code == 404


# -- configuration --------------------------------------------------------------------------------


def test_title_version_servers_schemes_and_options_come_from_config() -> None:
    app = build(
        {
            "SHIMMIE_OPENAPI_TITLE": "Things",
            "SHIMMIE_OPENAPI_VERSION": 2,
            "SHIMMIE_OPENAPI_SERVERS": ["https://api.example.com", {"url": "/", "description": "here"}],
            "SHIMMIE_OPENAPI_SECURITY_SCHEMES": {"key": {"type": "apiKey", "in": "header", "name": "X-Key"}},
            "SHIMMIE_OPENAPI_OPTIONS": {
                "info": {"description": "All the things."},
                "externalDocs": {"url": "/x"},
            },
        }
    )
    document = app.test_client().get("/openapi.json").get_json()
    openapi_spec_validator.validate(document)
    assert document["info"] == {"title": "Things", "version": "2", "description": "All the things."}
    assert document["servers"] == [{"url": "https://api.example.com"}, {"url": "/", "description": "here"}]
    assert document["externalDocs"] == {"url": "/x"}
    assert operation(document, "/v2/things", "post")["security"] == [{"key": []}]
    none = build({"SHIMMIE_OPENAPI_SECURITY_SCHEMES": None}).test_client().get("/openapi.json").get_json()
    assert "securitySchemes" not in none["components"] and "security" not in operation(
        none, "/v2/things", "post"
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("SHIMMIE_OPENAPI", "yes"),
        ("SHIMMIE_OPENAPI_DOCS", 1),
        ("SHIMMIE_OPENAPI_URL_PREFIX", 5),
        ("SHIMMIE_OPENAPI_TITLE", "  "),
        ("SHIMMIE_OPENAPI_VERSION", ""),
        ("SHIMMIE_OPENAPI_VERSION", True),
        ("SHIMMIE_OPENAPI_SERVERS", "https://api.example.com"),
        ("SHIMMIE_OPENAPI_SERVERS", [{"description": "no url"}]),
        ("SHIMMIE_OPENAPI_SECURITY_SCHEMES", ["bearer"]),
        ("SHIMMIE_OPENAPI_SECURITY_SCHEMES", {"bad name!": {"type": "http", "scheme": "bearer"}}),
        ("SHIMMIE_OPENAPI_SECURITY_SCHEMES", {"auth": {"type": "password"}}),
        ("SHIMMIE_OPENAPI_OPTIONS", ["info"]),
        ("SHIMMIE_OPENAPI_OPTIONS", {"paths": {}}),
    ],
)
def test_a_bad_value_raises_configuration_error_naming_the_key(key: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=key):
        build({key: value})


def test_a_bad_value_is_refused_even_with_openapi_off() -> None:
    with pytest.raises(ConfigurationError, match="SHIMMIE_OPENAPI_SERVERS"):
        build({"SHIMMIE_OPENAPI": False, "SHIMMIE_OPENAPI_SERVERS": "nope"})


def test_without_apispec_init_app_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "apispec", None)  # an import of it now fails
    monkeypatch.delitem(sys.modules, "flask_shimmie.openapi", raising=False)
    with pytest.raises(ConfigurationError, match=r"apispec.*flask-shimmie\[openapi\]"):
        build()


def test_without_the_swagger_ui_package_init_app_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import flask_shimmie.apidocs as apidocs

    real = apidocs.importlib.util.find_spec
    monkeypatch.setattr(
        apidocs.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "flask_swagger_ui" else real(name, *a),
    )
    with pytest.raises(ConfigurationError, match=r"flask-swagger-ui.*flask-shimmie\[openapi\]"):
        build()
    assert build({"SHIMMIE_OPENAPI_DOCS": False}).test_client().get("/openapi.json").status_code == 200


def test_apispec_is_imported_only_when_the_description_is_on() -> None:
    script = (
        "import sys\n"
        "from flask import Flask\n"
        "from flask_shimmie import ShimmieStack\n"
        "app = Flask('x'); ShimmieStack(app)\n"
        "app.test_client().get('/openapi.json')\n"
        "assert 'apispec' not in sys.modules, 'apispec was imported'\n"
        "assert 'flask_shimmie.openapi' not in sys.modules\n"
        "on = Flask('y'); on.config['SHIMMIE_OPENAPI'] = True; ShimmieStack(on)\n"
        "assert on.test_client().get('/openapi.json').status_code == 200\n"
        "assert 'apispec' in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


# -- declarations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "error"),
    [
        ((99,), {}, ValueError),
        ((True,), {}, ValueError),
        ((Thing,), {}, ValueError),
        ((200, "Thing"), {}, TypeError),
        ((200, Thing), {"content_type": "json"}, ValueError),
        ((200, Thing), {"headers": ["Location"]}, TypeError),
    ],
)
def test_response_refuses_what_it_cannot_describe(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        ShimmieStack().response(*args, **kwargs)


# -- the command line -----------------------------------------------------------------------------


def test_flask_shimmie_openapi_writes_the_served_document(app: Flask, tmp_path: Path) -> None:
    target = tmp_path / "openapi.json"
    result = app.test_cli_runner().invoke(args=["shimmie", "openapi", "--output", str(target)])
    assert result.exit_code == 0, result.output
    written = json.loads(target.read_text())
    openapi_spec_validator.validate(written)
    assert written == app.test_client().get("/openapi.json").get_json()
    printed = app.test_cli_runner().invoke(args=["shimmie", "openapi"])
    assert printed.exit_code == 0 and json.loads(printed.output) == written


def test_flask_shimmie_openapi_works_with_the_description_off(tmp_path: Path) -> None:
    app = build({"SHIMMIE_OPENAPI": False})
    result = app.test_cli_runner().invoke(args=["shimmie", "openapi"])
    assert result.exit_code == 0, result.output
    assert "/v2/things" in json.loads(result.output)["paths"]


def test_flask_shimmie_openapi_without_apispec_says_what_to_install(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "apispec", None)
    monkeypatch.delitem(sys.modules, "flask_shimmie.openapi", raising=False)
    result = app.test_cli_runner().invoke(args=["shimmie", "openapi"])
    assert result.exit_code == 1 and "flask-shimmie[openapi]" in result.output

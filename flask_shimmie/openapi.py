"""The OpenAPI 3.1 document of an app, built with apispec from what the stack already knows.

Imported only when it is needed (``SHIMMIE_OPENAPI = True``, or ``flask
shimmie openapi``), so that an app without it needs no apispec. It describes:

- every route of every mounted processor (tagged with the processor's name)
  and, when it is mounted, of the admin API (tag ``Admin``): each method,
  its path parameters (typed by their URL converters), its docstring as
  summary and description;
- ``@stack.arguments`` schemas as the request body (``json``, ``form``,
  ``files``) or as parameters (``query``, ``headers``, ``cookies``);
- ``@stack.response`` declarations as responses, and ``@stack.doc`` fields
  merged into the operation; a view that declares no success response gets a
  bodiless ``2XX``;
- every event schema as a component named after its event, with PII fields
  marked ``x-pii``;
- the security schemes of ``SHIMMIE_OPENAPI_SECURITY_SCHEMES`` on every view
  guarded by ``@authorize`` (or the admin authorizer), with its 401 and 403;
- the stack's JSON error shape (component ``Error``) for every error status
  the stack answers (400, 401, 403, 404, 409, 413, 422, 500, 503) and as the
  ``default`` response of every operation, since every error it answers has
  that shape;
- the ``X-Seq-Num-Min`` header every route accepts.
"""

from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from apispec.ext.marshmallow.common import make_schema_key
from flask import Flask
from marshmallow import Schema, fields
from werkzeug.routing import Rule
from werkzeug.routing.converters import (
    AnyConverter,
    BaseConverter,
    FloatConverter,
    IntegerConverter,
    PathConverter,
    UUIDConverter,
)

from .auth import guards_of
from .declarations import (
    NO_EXAMPLE,
    ArgumentsDeclaration,
    OperationDeclaration,
    ResponseDeclaration,
    declarations_of,
)
from .request_hooks import COMMAND_METHODS, SEQ_NUM_MIN_HEADER

if TYPE_CHECKING:
    from .state import AppState

OPENAPI_VERSION = "3.1.0"
#: The admin blueprint's name, and the tag of its operations.
ADMIN_BLUEPRINT = "shimmie_admin"
ADMIN_TAG = "Admin"
ERROR_SCHEMA = "Error"
CONFLICT_SCHEMA = "StreamConflict"
SEQ_NUM_MIN_PARAMETER = "SeqNumMin"
DEFAULT_ERROR_RESPONSE = "DefaultError"
#: Each error status the stack answers, with its response component's name and description.
ERROR_RESPONSES: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "Malformed request: JSON body, header or query parameter"),
    401: ("Unauthorized", "No identity: send credentials"),
    403: ("Forbidden", "The identity may not do this"),
    404: ("NotFound", "No such resource"),
    409: ("Conflict", "A stream is not at the expected version, or is locked (see conflicts)"),
    413: ("PayloadTooLarge", "The request body is larger than SHIMMIE_MAX_REQUEST_SIZE"),
    422: ("UnprocessableEntity", "The request or the event data is not valid (see errors)"),
    500: ("InternalServerError", "Something went wrong (no internals are shown)"),
    503: ("ServiceUnavailable", "A store cannot be reached, or X-Seq-Num-Min was not reached in time"),
}
#: Statuses every operation can answer: a bad X-Seq-Num-Min or body, a failure, an outage.
EVERY_OPERATION = (400, 500, 503)
#: Methods a view answers that the description leaves out (Flask answers them itself).
IMPLIED_METHODS = frozenset({"HEAD", "OPTIONS"})
#: Where ``@stack.arguments`` reads, as an OpenAPI request body media type or parameter location.
BODY_MEDIA_TYPES = {
    "json": "application/json",
    "form": "application/x-www-form-urlencoded",
    "files": "multipart/form-data",
}
PARAMETER_LOCATIONS = {"query": "query", "querystring": "query", "headers": "header", "cookies": "cookie"}
#: The largest X-Seq-Num-Min the stack parses (18 digits).
MAX_SEQ_NUM_MIN = 10**18 - 1
_RULE_VARIABLE = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")

ERROR_SCHEMA_OBJECT: dict[str, Any] = {
    "type": "object",
    "description": "Every error the stack answers: the HTTP status, its reason phrase and a message.",
    "required": ["code", "status", "message"],
    "properties": {
        "code": {"type": "integer", "description": "The HTTP status code."},
        "status": {"type": "string", "description": "Its reason phrase, e.g. 'Not Found'."},
        "message": {"type": "string"},
        "errors": {
            "type": "object",
            "description": "422: the messages by location ('json', 'query', 'data', ...), then by field.",
        },
        "conflicts": {
            "type": "array",
            "description": "409: the streams not at the expected version.",
            "items": {"$ref": f"#/components/schemas/{CONFLICT_SCHEMA}"},
        },
    },
}
CONFLICT_SCHEMA_OBJECT: dict[str, Any] = {
    "type": "object",
    "required": ["stream_id", "expected", "actual"],
    "properties": {
        "stream_id": {"type": "string"},
        "expected": {
            "description": "A stream version, or ANY, NO_STREAM, STREAM_EXISTS.",
            "oneOf": [
                {"type": "integer"},
                {"type": "string", "enum": ["ANY", "NO_STREAM", "STREAM_EXISTS"]},
            ],
        },
        "actual": {"type": "integer", "description": "The stream's version (0: no events)."},
    },
}


def build_document(app: Flask) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``app``'s processors and admin API, as a JSON-ready dict.

    Needs ``init_app`` to have run on ``app``; reads only the registrations
    and the URL map, never a store.
    """
    state: AppState = app.extensions["shimmie"]
    settings = state.settings.openapi
    options: dict[str, Any] = copy.deepcopy(dict(settings.options))
    if settings.servers:
        options.setdefault("servers", [dict(server) for server in settings.servers])
    plugin = MarshmallowPlugin()
    spec = APISpec(
        settings.title or app.name,
        settings.version,
        OPENAPI_VERSION,
        plugins=[plugin],
        **options,
    )
    assert plugin.converter is not None  # set by init_spec
    plugin.converter.add_attribute_function(_pii_attribute)  # type: ignore[no-untyped-call]
    plugin.converter.add_parameter_attribute_function(_allow_empty)
    _add_components(spec, state)
    tags = {blueprint: name for blueprint, name in state.registry.processors.items()}
    tags[ADMIN_BLUEPRINT] = ADMIN_TAG
    used_tags: set[str] = set()
    paths: dict[str, dict[str, Any]] = {}
    operation_ids: set[str] = set()
    for rule in sorted(app.url_map.iter_rules(), key=lambda rule: rule.rule):
        tag = tags.get(rule.endpoint.split(".", 1)[0])
        if tag is None or rule.endpoint.endswith(".static"):
            continue
        view = app.view_functions[rule.endpoint]
        operations = paths.setdefault(_path_template(rule.rule), {})
        for method in sorted(_methods(rule)):
            operation = _operation(rule, method, view, tag, settings.security_schemes)
            operation["operationId"] = _unique(_operation_id(rule, method), operation_ids)
            operations[method.lower()] = operation
        used_tags.add(tag)
    for name in tags.values():  # in mount order, the admin API last
        if name in used_tags:
            spec.tag({"name": name})
            used_tags.discard(name)
    for path, operations in paths.items():
        if operations:
            spec.path(path=path, operations=operations)
    document: dict[str, Any] = spec.to_dict()
    return document


# -- components ---------------------------------------------------------------


def _add_components(spec: APISpec, state: AppState) -> None:
    spec.components.schema(ERROR_SCHEMA, copy.deepcopy(ERROR_SCHEMA_OBJECT))
    spec.components.schema(CONFLICT_SCHEMA, copy.deepcopy(CONFLICT_SCHEMA_OBJECT))
    error_ref = {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}
    for name, description in [*ERROR_RESPONSES.values(), (DEFAULT_ERROR_RESPONSE, "An error")]:
        spec.components.response(
            name, {"description": description, "content": {"application/json": {"schema": error_ref}}}
        )
    spec.components.parameter(
        SEQ_NUM_MIN_PARAMETER,
        "header",
        {
            "name": SEQ_NUM_MIN_HEADER,
            "required": False,
            "description": (
                "Answer only once this process has applied position N (read your writes across "
                "processes); 503 when it is not reached within SHIMMIE_SEQ_WAIT_TIMEOUT."
            ),
            "schema": {"type": "integer", "minimum": 0, "maximum": MAX_SEQ_NUM_MIN},
        },
    )
    for name, scheme in state.settings.openapi.security_schemes.items():
        spec.components.security_scheme(name, copy.deepcopy(dict(scheme)))
    registered: dict[Any, str] = {}
    for event_name, schema in state.registry.types.schemas.items():
        component: dict[str, Any] = {"x-shimmie-event": event_name}
        description = _schema_description(schema)
        if description:
            component["description"] = description
        key = make_schema_key(schema)
        if key in registered:  # one schema for several events: one definition, referenced
            component["allOf"] = [{"$ref": f"#/components/schemas/{registered[key]}"}]
            spec.components.schema(event_name, component)
            continue
        registered[key] = event_name
        spec.components.schema(event_name, component, schema=schema)


def _schema_description(schema: Schema) -> str:
    doc = inspect.getdoc(type(schema))
    own = type(schema).__doc__
    if not doc or not own:  # a docstring inherited from Schema itself says nothing of this one
        return ""
    return doc


def _pii_attribute(self: Any, field: fields.Field[Any], **kwargs: Any) -> dict[str, Any]:
    """``x-pii: true`` on a field marked ``metadata={"pii": True}``."""
    return {"x-pii": True} if field.metadata.get("pii") else {}


def _allow_empty(self: Any, field: fields.Field[Any], **kwargs: Any) -> dict[str, Any]:
    """``allowEmptyValue`` on a parameter whose field says ``metadata={"allowEmptyValue": True}``.

    For a query parameter whose empty value (``?after=``) means its default.
    """
    return {"allowEmptyValue": True} if field.metadata.get("allowEmptyValue") else {}


# -- operations ---------------------------------------------------------------


def _methods(rule: Rule) -> set[str]:
    methods = set(rule.methods or ())
    implied = set(IMPLIED_METHODS)
    if not getattr(rule, "provide_automatic_options", True):
        implied.discard("OPTIONS")  # the view answers OPTIONS itself
    return methods - implied


def _path_template(rule: str) -> str:
    """``/songs/<int:song_id>`` → ``/songs/{song_id}``."""
    return _RULE_VARIABLE.sub(r"{\1}", rule)


def _operation_id(rule: Rule, method: str) -> str:
    methods = _methods(rule)
    return rule.endpoint if len(methods) == 1 else f"{rule.endpoint}.{method.lower()}"


def _unique(name: str, taken: set[str]) -> str:
    candidate, number = name, 2
    while candidate in taken:  # one view on several URL rules
        candidate, number = f"{name}_{number}", number + 1
    taken.add(candidate)
    return candidate


def _functions_of(view: Callable[..., Any], method: str) -> list[Callable[..., Any]]:
    """The function that handles ``method``, then ``view`` itself (class-based views have both)."""
    view_class = getattr(view, "view_class", None)
    handler = getattr(view_class, method.lower(), None) if view_class is not None else None
    return [handler, view] if callable(handler) else [view]


def _operation(
    rule: Rule,
    method: str,
    view: Callable[..., Any],
    tag: str,
    security_schemes: Mapping[str, Any],
) -> dict[str, Any]:
    functions = _functions_of(view, method)
    operation: dict[str, Any] = {"tags": [tag]}
    summary, description = _docstring(functions)
    if summary:
        operation["summary"] = summary
    if description:
        operation["description"] = description
    parameters: list[dict[str, Any]] = [_path_parameter(name, rule) for name in _path_names(rule)]
    parameters.append(SEQ_NUM_MIN_PARAMETER)  # type: ignore[arg-type]  # apispec resolves a name to a $ref
    responses: dict[str, Any] = {}
    extra: list[Mapping[str, Any]] = []
    validates = False
    for function in functions:
        for declaration in declarations_of(function):
            if isinstance(declaration, ArgumentsDeclaration):
                validates = True
                _add_arguments(operation, parameters, declaration)
            elif isinstance(declaration, ResponseDeclaration):
                responses[str(declaration.status)] = _response(declaration)
            elif isinstance(declaration, OperationDeclaration):
                extra.append(declaration.fields)
    errors = set(EVERY_OPERATION)
    if any(guards_of(function) for function in functions):
        errors |= {401, 403}
        if security_schemes:
            operation["security"] = [{name: []} for name in security_schemes]
    if _path_names(rule):
        errors.add(404)
    if method in COMMAND_METHODS:
        errors |= {409, 413, 422}
    if validates:
        errors.add(422)
    for status in sorted(errors):
        responses.setdefault(str(status), {"$ref": f"#/components/responses/{ERROR_RESPONSES[status][0]}"})
    if not any(status.startswith("2") for status in responses):
        responses["2XX"] = {"description": "Success (the view declares no @stack.response)"}
    responses["default"] = {"$ref": f"#/components/responses/{DEFAULT_ERROR_RESPONSE}"}
    operation["parameters"] = parameters
    operation["responses"] = responses
    for fields_ in extra:
        _merge(operation, fields_)
    if "requestBody" in operation:
        responses.setdefault("413", {"$ref": f"#/components/responses/{ERROR_RESPONSES[413][0]}"})
    return operation


def _docstring(functions: Iterable[Callable[..., Any]]) -> tuple[str, str]:
    for function in functions:
        doc = inspect.getdoc(function)
        if doc:
            summary, _, rest = doc.partition("\n")
            return summary.strip(), rest.strip()
    return "", ""


def _path_names(rule: Rule) -> list[str]:
    return [match.group(1) for match in _RULE_VARIABLE.finditer(rule.rule)]


def _path_parameter(name: str, rule: Rule) -> dict[str, Any]:
    converter = rule._converters.get(name)
    return {"name": name, "in": "path", "required": True, "schema": _converter_schema(converter)}


def _converter_schema(converter: BaseConverter | None) -> dict[str, Any]:
    """The JSON Schema of what a werkzeug URL converter matches."""
    if isinstance(converter, IntegerConverter):
        schema: dict[str, Any] = {"type": "integer"}
        minimum = converter.min if converter.min is not None else (None if converter.signed else 0)
        if minimum is not None:
            schema["minimum"] = minimum
        if converter.max is not None:
            schema["maximum"] = converter.max
        return schema
    if isinstance(converter, FloatConverter):
        schema = {"type": "number"}
        if converter.min is not None or not converter.signed:
            schema["minimum"] = converter.min if converter.min is not None else 0
        if converter.max is not None:
            schema["maximum"] = converter.max
        return schema
    if isinstance(converter, UUIDConverter):
        return {"type": "string", "format": "uuid"}
    if isinstance(converter, AnyConverter):
        return {"type": "string", "enum": sorted(converter.items)}
    if isinstance(converter, PathConverter):
        return {"type": "string", "minLength": 1, "pattern": "^[^/]"}
    # The default converter: one path segment, at least one character, no slash.
    return {"type": "string", "minLength": 1, "pattern": "^[^/]+$"}


def _add_arguments(
    operation: dict[str, Any], parameters: list[dict[str, Any]], declaration: ArgumentsDeclaration
) -> None:
    schema = declaration.schema
    media_type = BODY_MEDIA_TYPES.get(declaration.location)
    if media_type is not None:
        body = operation.setdefault("requestBody", {"content": {}})
        body["content"][media_type] = {"schema": schema}
        body["required"] = body.get("required", False) or _has_required(schema)
        return
    parameters.append({"in": PARAMETER_LOCATIONS[declaration.location], "schema": schema})


def _has_required(schema: Schema) -> bool:
    return bool(schema.many) or any(field.required for field in schema.fields.values() if not field.dump_only)


def _response(declaration: ResponseDeclaration) -> dict[str, Any]:
    response: dict[str, Any] = {"description": declaration.description}
    if declaration.schema is not None:
        schema = declaration.schema
        media: dict[str, Any] = {
            "schema": copy.deepcopy(dict(schema)) if isinstance(schema, Mapping) else schema
        }
        if declaration.example is not NO_EXAMPLE:
            media["example"] = declaration.example
        response["content"] = {declaration.content_type: media}
    if declaration.headers:
        response["headers"] = copy.deepcopy(dict(declaration.headers))
    return response


def _merge(target: dict[str, Any], extra: Mapping[str, Any]) -> None:
    """Merge ``extra`` into ``target``: dicts key by key, parameters by name and location, others replaced.

    A parameter of ``extra`` replaces the one of the same name and location
    (e.g. a path parameter described better than its URL converter can);
    others are added.
    """
    for key, value in extra.items():
        current = target.get(key)
        if isinstance(current, dict) and isinstance(value, Mapping):
            _merge(current, value)
        elif key == "parameters" and isinstance(current, list) and isinstance(value, list):
            for parameter in value:
                same = _same_parameter(current, parameter)
                if same is None:
                    current.append(parameter)
                else:
                    current[same] = parameter
        else:
            target[key] = value


def _same_parameter(parameters: list[Any], parameter: Any) -> int | None:
    if not isinstance(parameter, Mapping) or "name" not in parameter:
        return None
    for index, known in enumerate(parameters):
        if isinstance(known, Mapping) and (known.get("name"), known.get("in")) == (
            parameter["name"],
            parameter.get("in"),
        ):
            return index
    return None

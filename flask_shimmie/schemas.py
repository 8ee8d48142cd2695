"""marshmallow integration: event payload schemas, PII fields, and upcasters."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar

from flask import request
from marshmallow import EXCLUDE, Schema, ValidationError, fields
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import UnprocessableEntity

from .declarations import arguments_declared
from .errors import validation_messages

F = TypeVar("F", bound=Callable[..., Any])

#: fn(data) -> data, turning a payload of one version into the next.
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


def pii_paths(schema: Schema, prefix: str = "") -> tuple[str, ...]:
    """Paths of the fields marked ``metadata={"pii": True}``, nested schemas included.

    A field inside a list of objects (``Nested(..., many=True)`` or
    ``List(Nested(...))``) gets a ``[]`` path, e.g. ``members[].email``.
    """
    paths: list[str] = []
    for name, field in schema.fields.items():
        path = f"{prefix}{field.data_key or name}"
        if field.metadata.get("pii"):
            paths.append(path)
            continue
        inner, many = field, False
        if isinstance(field, fields.List):
            inner, many = field.inner, True
        if isinstance(inner, fields.Nested) and isinstance(inner.schema, Schema):
            many = many or bool(inner.many)
            paths.extend(pii_paths(inner.schema, f"{path}[]." if many else f"{path}."))
    return tuple(paths)


class PayloadTypes:
    """The schemas and upcasters registered on a stack, by event name."""

    def __init__(self) -> None:
        self.schemas: dict[str, Schema] = {}
        self.pii: dict[str, tuple[str, ...]] = {}
        self.upcasters: dict[str, dict[int, Upcaster]] = {}

    def set_schema(self, event_name: str, schema: Schema | type[Schema]) -> None:
        """Validate ``event_name`` payloads with ``schema`` from now on."""
        instance = schema() if isinstance(schema, type) else schema
        if not isinstance(instance, Schema):
            raise TypeError(f"event_schema() needs a marshmallow Schema, not {schema!r}.")
        self.schemas[event_name] = instance
        self.pii[event_name] = pii_paths(instance)

    def load(self, event_name: str, data: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
        """Validate ``data``: ``schema.dump(schema.load(data))`` and the schema's PII paths.

        Raises :class:`marshmallow.ValidationError`; without a schema the data
        is returned as it is.
        """
        schema = self.schemas.get(event_name)
        if schema is None:
            return data, ()
        dumped: dict[str, Any] = schema.dump(schema.load(data))
        return dumped, self.pii[event_name]

    def add_upcaster(self, event_name: str, from_version: int, fn: Upcaster) -> None:
        """Register ``fn`` turning version ``from_version`` payloads into the next version."""
        if not isinstance(from_version, int) or isinstance(from_version, bool) or from_version < 1:
            raise ValueError(f"from_version must be a payload version >= 1, not {from_version!r}.")
        chain = self.upcasters.setdefault(event_name, {})
        if from_version in chain:
            raise ValueError(f"An upcaster for {event_name} version {from_version} is already registered.")
        chain[from_version] = fn

    def version(self, event_name: str) -> int:
        """The version new ``event_name`` payloads are stored at."""
        chain = self.upcasters.get(event_name)
        return max(chain) + 1 if chain else 1

    def upcast(self, event_name: str, version: int, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` stored at ``version``, turned into the newest version."""
        chain = self.upcasters.get(event_name)
        if not chain:
            return data
        for step in range(version, max(chain) + 1):
            fn = chain.get(step)
            if fn is None:
                raise ValueError(f"No upcaster for {event_name} from version {step}.")
            data = fn(data)
        return data


#: Where :func:`arguments` reads from.
LOCATIONS = ("json", "query", "querystring", "form", "headers", "cookies", "files")

#: Locations whose unknown keys are ignored rather than refused, as webargs
#: (under flask-smorest) does: a query string or headers carry much else.
EXCLUDE_UNKNOWN = frozenset({"query", "querystring", "headers", "cookies", "files"})


def _json_body() -> Any:
    body = request.get_json(silent=False) if request.content_length or request.is_json else None
    return {} if body is None else body


def _multi(values: MultiDict[str, Any], schema: Schema) -> dict[str, Any]:
    """A plain dict of ``values``: every repeated value for list fields, the first otherwise."""
    out: dict[str, Any] = {}
    list_keys = {
        field.data_key or name
        for name, field in schema.fields.items()
        if isinstance(field, (fields.List, fields.Tuple))
    }
    for key in values:
        out[key] = values.getlist(key) if key in list_keys else values[key]
    return out


def _read(location: str, schema: Schema) -> Any:
    if location == "json":
        return _json_body()
    if location in ("query", "querystring"):
        return _multi(request.args, schema)
    if location == "form":
        return _multi(request.form, schema)
    if location == "files":
        return _multi(request.files, schema)
    if location == "headers":
        return dict(request.headers.items())
    return dict(request.cookies)


def arguments(schema: Schema | type[Schema], location: str = "json") -> Callable[[F], F]:
    """Validate the request's ``location`` with ``schema`` and pass the loaded data to the view.

    The data goes to the view as its first positional argument, the URL's
    arguments follow as keywords, as flask-smorest does. Invalid data answers 422 with
    ``{"errors": {location: {field: [messages]}}}``. Unknown keys are refused in
    ``json`` and ``form`` (unless the schema says otherwise) and ignored
    elsewhere; repeated query or form keys fill ``List`` fields. The schema
    is recorded on the view for the API description (:mod:`flask_shimmie.openapi`).
    """
    instance = schema() if isinstance(schema, type) else schema
    if not isinstance(instance, Schema):
        raise TypeError(f"arguments() needs a marshmallow Schema, not {schema!r}.")
    if location not in LOCATIONS:
        raise ValueError(f"Unknown location {location!r}; use one of {', '.join(LOCATIONS)}.")
    unknown: Literal["exclude"] | None = EXCLUDE if location in EXCLUDE_UNKNOWN else None

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            raw = _read(location, instance)
            if location == "json" and not isinstance(raw, Mapping) and not instance.many:
                raise _unprocessable(location, {"_schema": ["The body must be a JSON object."]})
            try:
                loaded = instance.load(raw, unknown=unknown)
            except ValidationError as error:
                raise _unprocessable(location, validation_messages(error)) from None
            return view(*args, loaded, **kwargs)

        return arguments_declared(wrapper, instance, location)  # type: ignore[return-value]

    return decorator


def _unprocessable(location: str, messages: Any) -> UnprocessableEntity:
    error = UnprocessableEntity("The request is not valid.")
    error.data = {"messages": {location: messages}}  # type: ignore[attr-defined]
    return error

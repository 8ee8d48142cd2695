"""What views declare about themselves for the API description: arguments, responses, extra fields.

``@stack.arguments`` (see :mod:`flask_shimmie.schemas`) records its schema here
as it wraps the view; ``@stack.response`` and ``@stack.doc`` only record, and
return the view unchanged: what a view answers is what it returns, never
dumped through the declared schema. The declarations are kept on the
function, like the authorization declarations of :mod:`flask_shimmie.auth`,
so they survive any decorator that uses :func:`functools.wraps`.
:mod:`flask_shimmie.openapi` reads them with :func:`declarations_of`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, TypeVar

from marshmallow import Schema

F = TypeVar("F", bound=Callable[..., Any])

#: A marshmallow schema (class or instance), or a JSON Schema as a dict.
SchemaLike = Schema | type[Schema] | Mapping[str, Any]

_DECLARATIONS = "__shimmie_declarations__"


@dataclass(frozen=True, eq=False)
class ArgumentsDeclaration:
    """``@stack.arguments(schema, location)``: what the view reads, and from where."""

    schema: Schema
    location: str


@dataclass(frozen=True, eq=False)
class ResponseDeclaration:
    """``@stack.response(status, schema, ...)``: one answer the view gives."""

    status: int
    schema: SchemaLike | None
    description: str
    content_type: str
    headers: Mapping[str, Any]
    example: Any


@dataclass(frozen=True, eq=False)
class OperationDeclaration:
    """``@stack.doc(...)``: OpenAPI operation fields merged into the view's operation."""

    fields: Mapping[str, Any]


Declaration = ArgumentsDeclaration | ResponseDeclaration | OperationDeclaration

#: ``example=`` when none is given (``None`` is an example too).
NO_EXAMPLE: Any = object()


def declare(view: F, declaration: Declaration) -> F:
    """Record ``declaration`` on ``view`` (a new tuple: a wrapped function keeps its own)."""
    setattr(view, _DECLARATIONS, (*getattr(view, _DECLARATIONS, ()), declaration))
    return view


def declarations_of(view: Callable[..., Any]) -> list[Declaration]:
    """Every declaration of ``view`` and of the functions it wraps, innermost first, each once.

    Innermost first, so that a caller applying them in order lets the
    decorator written above (applied later) win.
    """
    chain: list[Any] = []
    seen: set[int] = set()
    current: Any = view
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = getattr(current, "__wrapped__", None)
    found: list[Declaration] = []
    known: set[int] = set()
    for function in chain:
        for declaration in getattr(function, _DECLARATIONS, ()):
            if id(declaration) not in known:
                known.add(id(declaration))
                found.append(declaration)
    # Each function's tuple lists its own declarations in the order applied; the
    # outermost function's tuple holds every one, so its order is the order applied.
    return found


def _is_schema(value: Any) -> bool:
    return isinstance(value, Schema) or (isinstance(value, type) and issubclass(value, Schema))


def response(
    status: int | SchemaLike,
    schema: SchemaLike | int | None = None,
    *,
    description: str | None = None,
    content_type: str = "application/json",
    headers: Mapping[str, Any] | None = None,
    example: Any = NO_EXAMPLE,
) -> Callable[[F], F]:
    """Declare that the view answers ``status`` with a body that ``schema`` describes.

    ``schema`` is a marshmallow schema (class or instance; ``Schema(many=True)``
    for a list) or a JSON Schema dict, or ``None`` for no body (a 204).
    flask-smorest's order, ``response(200, SongSchema)``, and the reverse,
    ``response(SongSchema, 200)``, are both accepted. ``headers`` maps header
    names to OpenAPI header objects (``{"Location": {"schema": {"type":
    "string"}}}``). The view is returned unchanged: what it answers is what
    it returns, never dumped through ``schema``, so a response schema that
    drifts from the view is caught by tests, not hidden by the dump.
    """
    if not isinstance(status, int) and isinstance(schema, int) and not isinstance(schema, bool):
        status, schema = schema, status
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        raise ValueError(f"response() needs an HTTP status 100 to 599 first, not {status!r}.")
    if schema is not None and not (_is_schema(schema) or isinstance(schema, Mapping)):
        raise TypeError(f"response() needs a marshmallow Schema, a JSON Schema dict or None, not {schema!r}.")
    if not isinstance(content_type, str) or "/" not in content_type:
        raise ValueError(f"response() needs a media type such as 'application/json', not {content_type!r}.")
    if headers is not None and not isinstance(headers, Mapping):
        raise TypeError(f"response() headers must map header names to header objects, not {headers!r}.")
    if description is None:
        description = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Response"
    declaration = ResponseDeclaration(
        status,
        schema,  # type: ignore[arg-type]  # not an int: swapped above, or refused
        description,
        content_type,
        dict(headers or {}),
        example,
    )

    def decorator(view: F) -> F:
        return declare(view, declaration)

    return decorator


def doc(**fields: Any) -> Callable[[F], F]:
    """Merge OpenAPI operation ``fields`` into the view's operation (as flask-smorest's ``doc``).

    For what the stack cannot see, such as a body a view reads itself:
    ``doc(requestBody={"content": {"application/json": {"schema": SongCreated}}})``
    or query parameters it parses itself:
    ``doc(parameters=[{"in": "query", "schema": PageQuery}])``. Marshmallow
    schemas in them are turned into JSON Schema. Dicts are merged key by key,
    the decorator written above winning.
    """
    declaration = OperationDeclaration(dict(fields))

    def decorator(view: F) -> F:
        return declare(view, declaration)

    return decorator


def arguments_declared(view: F, schema: Schema, location: str) -> F:
    """Record that ``view`` reads ``location`` with ``schema`` (what ``@stack.arguments`` declares)."""
    return declare(view, ArgumentsDeclaration(schema, location))

"""Splitting PII out of a payload, merging it back, and anonymising it.

PII fields are named by dotted paths into the payload: ``"email"``,
``"submitted_by.email"``, and ``"members[].email"`` for a field of every
object in a list. The event store keeps, at each such path, a typed
placeholder: the anonymised value (``""``, ``0``, ``False``, ``None``, or the
same structure anonymised), so readers get well-typed values after erasure.
The PII values are kept by path; a ``[]`` path keeps a list, one value per
element.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

_MISSING: Any = object()


def anonymise(value: Any) -> Any:
    """The anonymised form of ``value``: ``""``, ``0``, ``False``, ``None``, recursively."""
    if isinstance(value, str):
        return ""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return 0
    if isinstance(value, list):
        return [anonymise(item) for item in value]
    if isinstance(value, dict):
        return {key: anonymise(item) for key, item in value.items()}
    return None


def _segment(head: str) -> tuple[str, bool]:
    return (head[:-2], True) if head.endswith("[]") else (head, False)


def _take(node: Any, segments: list[str]) -> Any:
    """Remove the value at ``segments`` from ``node`` (leaving a placeholder) and return it."""
    key, each = _segment(segments[0])
    if not isinstance(node, dict) or key not in node:
        return _MISSING
    rest = segments[1:]
    if not rest:
        value = node[key]
        node[key] = anonymise(value)
        return value
    child = node[key]
    if each:
        if not isinstance(child, list):
            return _MISSING
        taken = [_take(item, rest) for item in child]
        if all(value is _MISSING for value in taken):
            return _MISSING
        return [None if value is _MISSING else value for value in taken]
    return _take(child, rest)


def _put(node: Any, segments: list[str], value: Any) -> None:
    key, each = _segment(segments[0])
    if not isinstance(node, dict) or key not in node:
        return
    rest = segments[1:]
    if not rest:
        node[key] = value
    elif each:
        child = node[key]
        if isinstance(child, list) and isinstance(value, list):
            for item, item_value in zip(child, value, strict=False):
                if isinstance(item, dict) and _segment(rest[0])[0] in item:
                    _put(item, rest, item_value)
    else:
        _put(node[key], rest, value)


def may_hold_pii(data: dict[str, Any], paths: Iterable[str]) -> bool:
    """Whether :func:`split_pii` could find anything at ``paths`` in ``data``: a path's first key is there."""
    return any(_segment(path.partition(".")[0])[0] in data for path in paths)


def split_pii(
    data: dict[str, Any], paths: Iterable[str]
) -> tuple[dict[str, Any], dict[str, Any], tuple[str, ...]]:
    """Take the PII out of ``data`` (a fresh JSON-decoded dict, modified in place).

    Returns the payload with placeholders, the PII values keyed by path, and
    the paths that were present (absent paths hold no PII to store).
    """
    values: dict[str, Any] = {}
    for path in paths:
        value = _take(data, path.split("."))
        if value is not _MISSING:
            values[path] = value
    return data, values, tuple(values)


def merge_pii(data: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """Put PII ``values`` (keyed by path) back into ``data`` (modified in place)."""
    for path, value in values.items():
        _put(data, path.split("."), value)
    return data

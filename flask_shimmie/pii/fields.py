"""Splitting PII out of a payload, merging it back, and anonymising it.

PII fields are named by dotted paths into the payload (``"email"``,
``"submitted_by.email"``). The event store keeps, at each such path, a typed
placeholder: the anonymised value (``""``, ``0``, ``False``, ``None``, or the
same structure anonymised), so readers get well-typed values after erasure.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


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


def _parent(data: dict[str, Any], path: str) -> tuple[dict[str, Any] | None, str]:
    *parents, leaf = path.split(".")
    node: Any = data
    for name in parents:
        node = node.get(name) if isinstance(node, dict) else None
        if node is None:
            return None, leaf
    return (node if isinstance(node, dict) else None), leaf


def split_pii(
    data: dict[str, Any], paths: Iterable[str]
) -> tuple[dict[str, Any], dict[str, Any], tuple[str, ...]]:
    """Take the PII out of ``data`` (a fresh JSON-decoded dict, modified in place).

    Returns the payload with placeholders, the PII values keyed by path, and
    the paths that were present (absent paths hold no PII to store).
    """
    values: dict[str, Any] = {}
    present: list[str] = []
    for path in paths:
        node, leaf = _parent(data, path)
        if node is None or leaf not in node:
            continue
        values[path] = node[leaf]
        node[leaf] = anonymise(node[leaf])
        present.append(path)
    return data, values, tuple(present)


def merge_pii(data: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """Put PII ``values`` (keyed by path) back into ``data`` (modified in place)."""
    for path, value in values.items():
        node, leaf = _parent(data, path)
        if node is not None:
            node[leaf] = value
    return data

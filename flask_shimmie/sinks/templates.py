"""Subject and routing-key templates: ``"songs.{event_name}"`` filled in from each event.

A template is a :meth:`str.format` string naming fields of
:class:`~flask_shimmie.Event`: ``sequence_num``, ``stream_id``,
``stream_version``, ``event_id``, ``event_name`` and ``schema_version``, with
an optional conversion and format spec (``{sequence_num:012d}``). Anything
else (``data``, ``{}``, ``{data[x]}``, an unknown name) is refused when the
template is built, so a typo fails at start-up rather than at the first event.

Brokers split subjects and routing keys into words at dots, and NATS gives
``*`` and ``>`` a meaning of their own: a value put into a template must not
add words or wildcards. So every character of a value but ASCII letters,
digits, ``-`` and ``_`` is written as ``%XX`` (its UTF-8 bytes, as in URLs):
``shimmie.pii_erased`` becomes ``shimmie%2Epii_erased``, a stream id
``a b`` becomes ``a%20b``. The template's own text is kept as written.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from ..errors import ConfigurationError
from ..events import Event

#: The fields of an event a template may name.
TEMPLATE_FIELDS = ("sequence_num", "stream_id", "stream_version", "event_id", "event_name", "schema_version")

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")

_SAMPLE = Event(
    sequence_num=1,
    stream_id="stream-1",
    stream_version=1,
    event_id="00000000-0000-4000-8000-000000000000",
    event_name="SAMPLE",
    data={},
    meta={},
    recorded_at=datetime(2000, 1, 1, tzinfo=timezone.utc),
)


def escape_value(value: str) -> str:
    """``value`` with every character but ``[A-Za-z0-9_-]`` written as ``%XX`` per UTF-8 byte."""
    return _UNSAFE.sub(lambda match: "".join(f"%{byte:02X}" for byte in match.group().encode()), value)


class SubjectTemplate:
    """A subject or routing-key template, checked when built; :meth:`render` fills it for an event.

    Raises :class:`~flask_shimmie.ConfigurationError` naming the template
    (as ``what``) for a field that is not one of :data:`TEMPLATE_FIELDS`, a
    positional or indexed field, or a format spec the field's value rejects.
    """

    def __init__(self, template: str, what: str = "subject") -> None:
        if not isinstance(template, str) or not template:
            raise ConfigurationError(f"The {what} template must be a non-empty string, not {template!r}.")
        self.template = template
        self.what = what
        formatter = string.Formatter()
        parts: list[tuple[str, str | None, str, str | None]] = []
        try:
            parsed = list(formatter.parse(template))
        except ValueError as error:
            raise ConfigurationError(f"The {what} template {template!r} is malformed: {error}.") from None
        for literal, field, spec, conversion in parsed:
            if field is not None and field not in TEMPLATE_FIELDS:
                raise ConfigurationError(
                    f"The {what} template {template!r} names {{{field}}}, which is not a field it may use: "
                    f"use {', '.join('{' + name + '}' for name in TEMPLATE_FIELDS)}."
                )
            if spec and ("{" in spec or "}" in spec):
                raise ConfigurationError(f"The {what} template {template!r} nests fields in a format spec.")
            parts.append((literal, field, spec or "", conversion))
        self._parts = parts
        self._convert: Callable[[Any, str | None], Any] = formatter.convert_field
        try:
            self.render(_SAMPLE)
        except (ValueError, TypeError) as error:
            raise ConfigurationError(
                f"The {what} template {template!r} cannot be filled in: {error}."
            ) from None

    @property
    def fields(self) -> tuple[str, ...]:
        """The event fields the template names, in order."""
        return tuple(field for _, field, _, _ in self._parts if field is not None)

    def render(self, event: Event) -> str:
        """The template filled in from ``event``, each value escaped (see :func:`escape_value`)."""
        out: list[str] = []
        for literal, field, spec, conversion in self._parts:
            out.append(literal)
            if field is not None:
                value = self._convert(getattr(event, field), conversion)
                out.append(escape_value(format(value, spec)))
        return "".join(out)

    def wildcard(self, word: str) -> str:
        """The template with every dot-separated word that holds a field replaced by ``word``.

        ``"songs.{event_name}"`` → ``"songs.*"`` for ``word="*"``: a filter that
        matches every subject the template can produce.
        """
        marker = "\x00"
        text = "".join(
            literal + (marker if field is not None else "") for literal, field, _, _ in self._parts
        )
        return ".".join(word if marker in part else part for part in text.split("."))

    def __repr__(self) -> str:
        return f"SubjectTemplate({self.template!r})"

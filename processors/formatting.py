"""Turn a chunk plus its source row into the text that gets embedded.

pgai offers two formatters: ``chunk_value`` (the chunk as is) and ``python_template``
(``string.Template`` with ``$chunk`` and any source column, e.g. ``"$title - $chunk"``). The row
dict here comes from a decoded change event, so values are Python objects (ints, datetimes,
decimals, dicts from jsonb, ``None``) rather than strings; they are rendered the way a reader of
the embedded text would expect (``None`` as empty, JSON as JSON) instead of failing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from string import Template
from typing import Any

from pgai_orm.errors import VectorizerError

Formatter = Callable[[str, Mapping[str, Any]], str]


class FormattingError(VectorizerError, ValueError):
    """The template or the row cannot produce the text to embed."""


class MissingColumnError(FormattingError):
    """The template names a column the row does not have."""

    def __init__(self, column: str) -> None:
        super().__init__(f"template placeholder ${column} names no column of the source row")
        self.column = column


class TemplateSyntaxError(FormattingError):
    """The template is not a valid ``string.Template`` (e.g. a lone ``$`` or ``${``)."""


def render_value(value: Any) -> str:
    """Render a column value as text for a template.

    Numbers, dates, decimals and UUIDs use ``str`` (what pgai's ``Template.substitute`` gives,
    e.g. ``2024-05-01 12:00:00+00:00``); ``None`` is empty rather than the word ``None``;
    jsonb values are JSON rather than Python reprs.
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def template_placeholders(template: str) -> list[str]:
    """The names a template substitutes, in order, without ``chunk``.

    Used at migration time to check that every placeholder names a real column.
    """
    parsed = _parse(template)
    return [name for name in parsed.get_identifiers() if name != "chunk"]


def _parse(template: str) -> Template:
    parsed = Template(template)
    if not parsed.is_valid():
        raise TemplateSyntaxError(
            f"template: invalid placeholder in {template!r} (write $$ for a literal $)"
        )
    return parsed


def format_template(template: str) -> Formatter:
    """Return ``(chunk, row) -> text`` for a python template; the template is parsed once."""
    parsed = _parse(template)
    columns = [name for name in parsed.get_identifiers() if name != "chunk"]

    def format_chunk(chunk: str, row: Mapping[str, Any]) -> str:
        values = {"chunk": chunk}
        for column in columns:
            try:
                values[column] = render_value(row[column])
            except KeyError:
                raise MissingColumnError(column) from None
        return parsed.substitute(values)

    return format_chunk


def _chunk_value(chunk: str, row: Mapping[str, Any]) -> str:
    return chunk


def formatter_for(config: Any) -> Formatter:
    """Return ``(chunk, row) -> text`` for a formatting config (duck-typed on ``.implementation``).

    ``$chunk`` is always the chunk, even if the row has a column named ``chunk``.
    """
    implementation = getattr(config, "implementation", None)
    if implementation == "chunk_value":
        return _chunk_value
    if implementation == "python_template":
        return format_template(config.template)
    raise FormattingError(f"implementation: unknown formatting implementation {implementation!r}")

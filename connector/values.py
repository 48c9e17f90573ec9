"""Render Postgres text-format column values to JSON-able Python values, by type OID.

pgoutput sends every column as the text its type's output function produces. Events on Kafka
carry JSON, so each value is turned into the JSON value that says the same thing, without
losing information. The text depends on session settings; the replication connection (and any
snapshot reader that wants identical output) must use :data:`SESSION_OPTIONS`.

Mapping (type -> JSON), chosen to be exact first, convenient second:

==========================================  ====================================================
``int2``, ``int4``, ``int8``, ``oid``        number (int)
``float4``, ``float8``                       number (float; ``extra_float_digits=3`` makes the
                                             text round-trip); ``"NaN"``, ``"Infinity"``,
                                             ``"-Infinity"`` stay strings (JSON has no such number)
``numeric``                                  string, exactly as sent (no float loss; ``"NaN"``,
                                             ``"Infinity"`` included)
``bool``                                     true / false
``text``, ``varchar``, ``bpchar``, ``name``,  string as sent (``char(n)`` keeps its padding)
``"char"``, ``uuid``, ``money``, ``xml``,
network, geometric, bit, tsvector types
``timestamptz``                              ISO 8601 with offset, as ``datetime.isoformat()``
                                             writes it: ``"2024-01-02T03:04:05.123456+00:00"``
                                             (fraction padded to 6 digits, omitted when zero)
``timestamp``                                the same without offset
``date``                                     ``"2024-01-02"``
``time`` / ``timetz``                        ``"03:04:05.500000"`` / ``"03:04:05+02:00"``
``interval``                                 ISO 8601 duration string as sent (``"P1DT2H"``)
``json``, ``jsonb``                          the parsed value (orjson: integers beyond 64 bits and
                                             decimals beyond double precision are approximated,
                                             as in JavaScript)
``bytea``                                    base64 string of the bytes
arrays of any of these (any dimensions)      nested lists; NULL elements -> null
enums, domains, composites, extension and    string as sent (arrays of them: lists of strings)
unknown types
==========================================  ====================================================

``infinity``/``-infinity`` dates and timestamps, and BC ones, are returned as Postgres wrote
them (they have no ISO 8601 form that every reader accepts). A domain over a builtin type is
rendered as a string unless :meth:`ValueRenderer.register_domain` names its base type; pgoutput's
Type message does not say.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from typing import Any

import orjson

from connector.pgoutput import UNCHANGED_TOAST, Column, Type, Value
from pgai_orm.errors import InvariantError, VectorizerError

__all__ = [
    "SESSION_OPTIONS",
    "ArrayLiteralError",
    "BinaryValueError",
    "Renderer",
    "ValueRenderer",
    "parse_array",
    "render_value",
]

SESSION_OPTIONS = (
    "-c DateStyle=ISO -c TimeZone=UTC -c IntervalStyle=iso_8601 "
    "-c extra_float_digits=3 -c bytea_output=hex"
)
"""Libpq ``options`` the renderer assumes: any connection whose text it renders must use them."""

Renderer = Callable[[str], Any]


class ArrayLiteralError(VectorizerError, ValueError):
    """Text that is not a Postgres array literal."""


class BinaryValueError(VectorizerError, TypeError):
    """A column sent in binary format: the stream must run without pgoutput's ``binary``."""

# --- scalar renderers ---------------------------------------------------------------------------

_SPECIAL_FLOATS = frozenset(("NaN", "Infinity", "-Infinity"))
_SPECIAL_TIMES = frozenset(("infinity", "-infinity"))


def _text(text: str) -> str:
    return text


def _bool(text: str) -> bool:
    return text == "t"


def _float(text: str) -> float | str:
    if text in _SPECIAL_FLOATS:
        return text
    return float(text)


def _pad_fraction(clock: str) -> str:
    """``"03:04:05.12"`` -> ``"03:04:05.120000"``: microseconds, like ``isoformat()``."""
    whole, dot, fraction = clock.partition(".")
    return f"{whole}.{fraction.ljust(6, '0')}" if dot else clock


def _split_offset(clock: str) -> tuple[str, str]:
    """Split ``"03:04:05.5+05:30"`` into the time and an ``isoformat()``-style offset."""
    cut = clock.find("+", 8)
    if cut < 0:
        cut = clock.find("-", 8)
    if cut < 0:
        return clock, ""
    offset = clock[cut:]
    if len(offset) == 3:  # "+HH"
        offset += ":00"
    return clock[:cut], offset


def _timestamptz(text: str) -> str:
    if text in _SPECIAL_TIMES or text.endswith(" BC"):
        return text
    day, _, clock = text.partition(" ")
    clock, offset = _split_offset(clock)
    return f"{day}T{_pad_fraction(clock)}{offset}"


def _timestamp(text: str) -> str:
    if text in _SPECIAL_TIMES or text.endswith(" BC"):
        return text
    day, _, clock = text.partition(" ")
    return f"{day}T{_pad_fraction(clock)}"


def _time(text: str) -> str:
    return _pad_fraction(text)


def _timetz(text: str) -> str:
    clock, offset = _split_offset(text)
    return _pad_fraction(clock) + offset


_BYTEA_ESCAPE = re.compile(rb"\\(\\|[0-7]{3})")


def _bytea(text: str) -> str:
    if text.startswith("\\x"):
        raw = bytes.fromhex(text[2:])
    else:  # bytea_output=escape: printable ASCII, "\\\\" and "\\ooo" octal escapes
        raw = _BYTEA_ESCAPE.sub(
            lambda m: b"\\" if m.group(1) == b"\\" else bytes((int(m.group(1), 8),)),
            text.encode("latin-1"),
        )
    return base64.b64encode(raw).decode("ascii")


def _json(text: str) -> Any:
    return orjson.loads(text)


# --- arrays -------------------------------------------------------------------------------------

_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_UNESCAPE = re.compile(r"\\(.)", re.DOTALL)


@lru_cache(maxsize=8)
def _unquoted(delimiter: str) -> re.Pattern[str]:
    return re.compile(f'[^{{}}"{re.escape(delimiter)}]*')


def parse_array(text: str, element: Renderer = _text, delimiter: str = ",") -> list[Any]:
    """Parse a Postgres array literal (``{1,NULL,"a \\"b\\""}``, nested, with or without a
    ``[lo:hi]=`` dimension prefix) into nested lists, rendering each non-NULL element.

    Unquoted ``NULL`` (any case) is NULL; quoted ``"NULL"`` is the string.
    """
    if text.startswith("["):  # explicit bounds, e.g. "[0:1]={1,2}"
        text = text[text.index("=") + 1 :]
    if not (text.startswith("{") and text.endswith("}")):
        raise ArrayLiteralError(f"not an array literal: {text!r}")
    if '"' not in text and "\\" not in text and text.count("{") == 1 and text.count("}") == 1:
        inner = text[1:-1]  # flat and plain: the fast path
        if not inner:
            return []
        return [
            None if (item := raw.strip()).upper() == "NULL" else element(item)
            for raw in inner.split(delimiter)
        ]
    try:
        items, end = _parse_level(text, 0, element, delimiter, _unquoted(delimiter))
    except IndexError:
        raise ArrayLiteralError(f"array literal ends too early: {text!r}") from None
    if text[end:].strip():
        raise ArrayLiteralError(f"trailing characters after array literal: {text!r}")
    return items


def _parse_level(
    text: str, pos: int, element: Renderer, delimiter: str, unquoted: re.Pattern[str]
) -> tuple[list[Any], int]:
    """Parse one ``{...}`` starting at ``pos``; return its items and the position after ``}``."""
    if text[pos] != "{":
        raise ArrayLiteralError(f"expected '{{' at {pos} in array literal {text!r}")
    pos += 1
    items: list[Any] = []
    if text[pos] == "}":
        return items, pos + 1
    while True:
        char = text[pos]
        if char == "{":
            sub, pos = _parse_level(text, pos, element, delimiter, unquoted)
            items.append(sub)
        elif char == '"':
            match = _QUOTED.match(text, pos)
            if match is None:
                raise ArrayLiteralError(f"unterminated quoted element at {pos} in {text!r}")
            items.append(element(_UNESCAPE.sub(r"\1", match.group(1))))
            pos = match.end()
        else:
            match = unquoted.match(text, pos)
            if match is None:  # the pattern matches the empty string: never
                raise InvariantError(f"array element pattern failed at {pos} in {text!r}")
            token = match.group(0).strip()
            pos = match.end()
            items.append(None if token.upper() == "NULL" else element(token))
        while text[pos] == " ":
            pos += 1
        if text[pos] == delimiter:
            pos += 1
            while text[pos] == " ":
                pos += 1
        elif text[pos] == "}":
            return items, pos + 1
        else:
            raise ArrayLiteralError(f"unexpected {text[pos]!r} at {pos} in array literal {text!r}")


def _array_of(element: Renderer, delimiter: str = ",") -> Renderer:
    def render(text: str) -> list[Any]:
        return parse_array(text, element, delimiter)

    return render


# --- the OID table ------------------------------------------------------------------------------

# Builtin type OIDs (stable across Postgres versions: pg_type.dat) -> (renderer, array type OID).
_SCALARS: dict[int, tuple[Renderer, int]] = {
    16: (_bool, 1000),  # bool
    17: (_bytea, 1001),  # bytea
    18: (_text, 1002),  # "char"
    19: (_text, 1003),  # name
    20: (int, 1016),  # int8
    21: (int, 1005),  # int2
    23: (int, 1007),  # int4
    25: (_text, 1009),  # text
    26: (int, 1028),  # oid
    114: (_json, 199),  # json
    142: (_text, 143),  # xml
    650: (_text, 651),  # cidr
    700: (_float, 1021),  # float4
    701: (_float, 1022),  # float8
    790: (_text, 791),  # money
    829: (_text, 1040),  # macaddr
    869: (_text, 1041),  # inet
    1042: (_text, 1014),  # bpchar
    1043: (_text, 1015),  # varchar
    1082: (_text, 1182),  # date
    1083: (_time, 1183),  # time
    1114: (_timestamp, 1115),  # timestamp
    1184: (_timestamptz, 1185),  # timestamptz
    1186: (_text, 1187),  # interval
    1266: (_timetz, 1270),  # timetz
    1560: (_text, 1561),  # bit
    1562: (_text, 1563),  # varbit
    1700: (_text, 1231),  # numeric
    2950: (_text, 2951),  # uuid
    3614: (_text, 3643),  # tsvector
    3802: (_json, 3807),  # jsonb
    4072: (_text, 4073),  # jsonpath
}

BUILTIN_RENDERERS: dict[int, Renderer] = {oid: render for oid, (render, _) in _SCALARS.items()}
for _render, _array_oid in _SCALARS.values():
    BUILTIN_RENDERERS[_array_oid] = _array_of(_render)
BUILTIN_RENDERERS[1020] = _array_of(_text, ";")  # box[]: the one builtin with ';' as delimiter


def render_value(type_oid: int, text: str | None) -> Any:
    """Render one builtin-typed text value (``None`` stays ``None``); unknown OIDs -> the text."""
    if text is None:
        return None
    return BUILTIN_RENDERERS.get(type_oid, _text)(text)


def _user_type(text: str) -> Any:
    return text


def _user_array(text: str) -> Any:
    # pgoutput names a user type's array "_<name>" and sends no element type: lists of strings.
    return parse_array(text) if text.startswith(("{", "[")) else text


class ValueRenderer:
    """Renders rows for the relations of one stream, learning user types from Type messages.

    Not shared between streams: OIDs of user types are per database.
    """

    def __init__(self) -> None:
        self._renderers: dict[int, Renderer] = dict(BUILTIN_RENDERERS)

    def register_type(self, message: Type) -> None:
        """Learn a non-builtin type from pgoutput's Type message (enum, domain, extension...)."""
        self._renderers[message.type_oid] = (
            _user_array if message.name.startswith("_") else _user_type
        )

    def register_domain(self, type_oid: int, base_type_oid: int) -> None:
        """Render a domain like its base type (the connector may look this up in pg_type)."""
        self._renderers[type_oid] = self.renderer_for(base_type_oid)

    def register_array(self, type_oid: int, element_type_oid: int, delimiter: str = ",") -> None:
        """Render an array type whose elements are of ``element_type_oid``."""
        self._renderers[type_oid] = _array_of(self.renderer_for(element_type_oid), delimiter)

    def renderer_for(self, type_oid: int) -> Renderer:
        return self._renderers.get(type_oid, _text)

    def render(self, type_oid: int, text: str | None) -> Any:
        if text is None:
            return None
        return self._renderers.get(type_oid, _text)(text)

    def render_row(self, columns: Sequence[Column], values: Iterable[Value]) -> dict[str, Any]:
        """Map column names to rendered values. NULL -> None; UNCHANGED_TOAST stays the sentinel
        (the caller decides what an unchanged column means for its event)."""
        renderers = self._renderers
        row: dict[str, Any] = {}
        for column, value in zip(columns, values, strict=True):
            if value is None or value is UNCHANGED_TOAST:
                row[column.name] = value
            elif type(value) is str:
                row[column.name] = renderers.get(column.type_oid, _text)(value)
            else:
                raise BinaryValueError(
                    f"column {column.name!r}: binary-format values are not rendered; "
                    "stream without the 'binary' option"
                )
        return row

r"""Render Postgres text-format column values to JSON-able Python values, by type OID.

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

Keys: canonical by value
------------------------

The primary key is the Kafka key (its partition) and the address of the row downstream, so two
key values that are *equal under the key type's equality operator* must give the same key bytes,
whatever text they were written with; and the key value must still cast back, through
``jsonb_populate_record(NULL::<store>, key)``, to a value equal to the source's. Row values keep
the exact text (users see it); :meth:`ValueRenderer.key_renderer_for` renders key columns, one
function chosen per relation column. Per type (equality as the btree operator class defines it):

==========================  =====================================================================
type                        canonical key value, and why
==========================  =====================================================================
``numeric``                 string with trailing fraction zeros removed: ``"1.50"`` -> ``"1.5"``,
                            ``"2.00"`` -> ``"2"`` (numeric keeps the input's scale, equality
                            does not; numeric_out writes no exponent and no ``-0``). ``NaN`` =
                            ``NaN`` has one text. Casts back exactly (into ``numeric(p,s)`` too)
``float4``, ``float8``      number, ``-0`` -> ``0`` (``-0 = 0``); otherwise the shortest exact text
                            (``extra_float_digits=3``) is one per value; ``"NaN"`` (one text,
                            NaN = NaN in Postgres) and the infinities stay strings
``bpchar`` (``char(n)``)    string without trailing spaces: bpchar equality ignores them (only
                            spaces), and ``char`` without length keeps what was typed
``bytea``                   ``"\x0102"`` hex string, not the row's base64: bytea's input function
                            reads a JSON string as text, so base64 would not cast back
``interval``                ISO 8601 of the *span*: equality compares months * 30 days + days * 24
                            h + time, so ``'1 mon' = '30 days' = '720 hours'`` all become
                            ``"P1M"``; the span is split greedily (months, days < 30, time < 24 h,
                            all with its sign) and written as interval_out would (``P1DT2H``,
                            ``PT-1.5S``)
``jsonb``                   the jsonb text with numbers as numeric canonicalises them (``1.0`` =
                            ``1``) and no blanks, spliced in unparsed (``orjson.Fragment``): jsonb
                            already sorts keys and drops duplicates; parsing would round numbers
                            beyond double precision into one key
``numrange``,               string with each bound's numeric canonicalised (``[1.50,2.0)`` ->
``nummultirange``           ``[1.5,2)``)
arrays of any key type      JSON list of canonical element keys (NULL = NULL in array equality).
                            An array with lower bounds other than 1 (``[0:1]={1,2}``, which is
                            *not* equal to ``{1,2}``) becomes its literal with canonical elements,
                            as a string: a list would drop the bounds
domains                     as their base type (equality is the base type's), also as array
                            elements: :func:`describe_types` reads ``pg_type`` once per type, on
                            the stream's and the snapshot's connection alike
``citext``                  ASCII letters lower-cased (citext compares ``lower()``); exact under
                            the C locale. Other letters keep their case, so ``'É'`` and ``'é'``
                            stay two keys under a locale that folds them, and Turkish/Azeri
                            locales (``lower('I') = 'ı'``) are not supported
``int2/4/8``, ``oid``,      as the row renders them: their output function already writes one
``bool``, ``text``,         text per value (``uuid`` lower-case, ``inet``/``cidr`` compressed,
``varchar``, ``name``,      ``date``/``timestamp`` ISO). ``timestamptz`` is written in the
``"char"``, ``uuid``,       session's ``TimeZone=UTC`` on both paths, so ``+05:30`` and ``+00``
``date``, ``time``,         inputs of one instant print alike. ``timetz`` equality compares time
``timestamp``,              *and* zone, which its text carries. ``money`` is one text per value
``timestamptz``,            under the database's ``lc_monetary`` (the stream and the snapshot
``timetz``, ``money``,      connect as the same role, and the workers cast it back the same way);
``inet``, ``cidr``,         an enum value has one label
``macaddr``, bit types,
enums
==========================  =====================================================================

Not canonicalised (their text is the key): ``text``/``varchar`` under a *nondeterministic*
collation (case-insensitive ICU collations make ``'a' = 'A'``; Python cannot reproduce ICU),
composite types (their fields would need their own types), ranges over user-defined subtypes
(the builtin ranges other than the numeric ones write one text per value already), and
extension types other than ``citext``.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

from connector.pgoutput import UNCHANGED_TOAST, Column, Type, Value
from pgai_orm.errors import InvariantError, VectorizerError

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "BUILTIN_KEY_TYPES",
    "SESSION_OPTIONS",
    "ArrayLiteralError",
    "BinaryValueError",
    "KeyType",
    "KeyValueError",
    "Renderer",
    "TypeInfo",
    "ValueRenderer",
    "describe_types",
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


class KeyValueError(VectorizerError, ValueError):
    """A key column's text is not what its type's output function writes under
    :data:`SESSION_OPTIONS` (a session setting was not applied)."""

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


def _bytea_bytes(text: str) -> bytes:
    if text.startswith("\\x"):
        return bytes.fromhex(text[2:])
    # bytea_output=escape: printable ASCII, "\\\\" and "\\ooo" octal escapes
    return _BYTEA_ESCAPE.sub(
        lambda m: b"\\" if m.group(1) == b"\\" else bytes((int(m.group(1), 8),)),
        text.encode("latin-1"),
    )


def _bytea(text: str) -> str:
    return base64.b64encode(_bytea_bytes(text)).decode("ascii")


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


# --- keys: canonical by value -------------------------------------------------------------------

class KeyType(NamedTuple):
    """How a key column's text becomes its canonical key value: ``render(canon(text))``.

    ``canon`` maps every text of one value (under the type's equality operator) to the same
    text, one that the type's input function reads back as an equal value; ``None`` when the
    output function already writes one text per value. ``render`` turns that text into the
    JSON value (the row renderer of the type, except where its JSON would not cast back).
    """

    render: Renderer
    canon: Callable[[str], str] | None = None

    def renderer(self) -> Renderer:
        """The one function the hot path calls per key value."""
        render, canon = self.render, self.canon
        if canon is None:
            return render

        def key(text: str) -> Any:
            return render(canon(text))

        return key

    def canonical_text(self) -> Callable[[str], str]:
        return self.canon or _text


def _numeric_canon(text: str) -> str:
    """``1.50`` -> ``1.5``, ``2.000`` -> ``2``: numeric keeps the scale it was given, equality
    does not. numeric_out never writes an exponent or ``-0``; ``NaN``/``Infinity`` pass."""
    if "." not in text:
        return text
    text = text.rstrip("0")
    return text[:-1] if text[-1] == "." else text


def _float_canon(text: str) -> str:
    """``-0`` -> ``0`` (``-0 = 0`` in float4/float8 equality). With ``extra_float_digits=3``
    float_out writes the shortest exact text, so every other value has one text; the one
    NaN text is ``NaN`` (NaN = NaN in Postgres' btree)."""
    return "0" if text == "-0" else text


def _bpchar_canon(text: str) -> str:
    """Trailing spaces are insignificant to bpchar equality (only spaces: ``E'a\\t' <> 'a'``)."""
    return text.rstrip(" ")


def _bytea_canon(text: str) -> str:
    """Hex text, ``\\x0102``: the key must cast back (bytea's input function reads a JSON
    string as its text; base64 would come back as the bytes of the base64 text)."""
    if text.startswith("\\x"):
        return text.lower()
    return "\\x" + _bytea_bytes(text).hex()


_USECS_PER_DAY = 86_400_000_000
_USECS_PER_MONTH = 30 * _USECS_PER_DAY  # interval_cmp_value: a month is 30 days
_INT32_MAX = 2**31 - 1
_ISO_INTERVAL = re.compile(
    r"P(?:(-?\d+)Y)?(?:(-?\d+)M)?(?:(-?\d+)D)?"
    r"(?:T(?:(-?\d+)H)?(?:(-?\d+)M)?(?:(-?)(\d+)(?:\.(\d{1,6}))?S)?)?")


def _interval_canon(text: str) -> str:
    """One text per interval *span*: interval equality compares months * 30 days + days * 24 h +
    time, so ``'1 mon' = '30 days' = '720 hours'``. The span is split greedily into months,
    days (< 30) and time (< 24 h), all with its sign, and written as interval_out writes it
    under ``IntervalStyle=iso_8601`` (``P1M``, ``P1DT2H``, ``PT-1.5S``). A field that would
    overflow its int32 keeps the maximum and passes the rest on."""
    if text in _SPECIAL_TIMES:
        return text
    match = _ISO_INTERVAL.fullmatch(text)
    if match is None:
        raise KeyValueError(f"interval key {text!r} is not in IntervalStyle iso_8601")
    years, months, days, hours, minutes, sign, seconds, fraction = match.groups()
    usecs = int(seconds or 0) * 1_000_000 + int((fraction or "").ljust(6, "0"))
    span = ((int(years or 0) * 12 + int(months or 0)) * _USECS_PER_MONTH
            + int(days or 0) * _USECS_PER_DAY
            + (int(hours or 0) * 60 + int(minutes or 0)) * 60_000_000
            + (-usecs if sign else usecs))
    if span == 0:
        return "PT0S"
    negative = span < 0
    rest = -span if negative else span
    whole_months = min(rest // _USECS_PER_MONTH, _INT32_MAX)
    rest -= whole_months * _USECS_PER_MONTH
    whole_days = min(rest // _USECS_PER_DAY, _INT32_MAX)
    rest -= whole_days * _USECS_PER_DAY
    sign = "-" if negative else ""
    out = ["P"]
    for amount, unit in ((whole_months // 12, "Y"), (whole_months % 12, "M"), (whole_days, "D")):
        if amount:
            out.append(f"{sign}{amount}{unit}")
    if rest:
        out.append("T")
        hours_, rest = divmod(rest, 3_600_000_000)
        minutes_, rest = divmod(rest, 60_000_000)
        seconds_, micro = divmod(rest, 1_000_000)
        if hours_:
            out.append(f"{sign}{hours_}H")
        if minutes_:
            out.append(f"{sign}{minutes_}M")
        if seconds_ or micro:
            frac = f".{micro:06d}".rstrip("0") if micro else ""
            out.append(f"{sign}{seconds_}{frac}S")
    return "".join(out)


_JSONB_TOKEN = re.compile(r'("(?:[^"\\]|\\.)*")|(\d+\.\d+)|\s+')


def _jsonb_token(match: re.Match[str]) -> str:
    if match.group(1) is not None:
        return match.group(1)
    if match.group(2) is not None:
        return _numeric_canon(match.group(2))
    return ""  # whitespace between tokens


def _jsonb_canon(text: str) -> str:
    """jsonb_out already sorts object keys and drops duplicates; what is left is the numbers
    (jsonb compares them as numeric: ``1.0 = 1``) and the blanks after ``,`` and ``:``."""
    return _JSONB_TOKEN.sub(_jsonb_token, text)


def _jsonb_key(text: str) -> orjson.Fragment:
    """The canonical jsonb text itself, spliced into the key JSON: parsing it would round
    numbers beyond double precision, and two different keys would become one."""
    return orjson.Fragment(text)


_DECIMAL = re.compile(r"\d+\.\d+")


def _numeric_range_canon(text: str) -> str:
    """numrange / nummultirange: their bounds are numerics (``[1.50,2.0)`` = ``[1.5,2)``)."""
    return _DECIMAL.sub(lambda m: _numeric_canon(m.group(0)), text) if "." in text else text


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _citext_canon(text: str) -> str:
    """citext compares ``lower()`` of both sides: ASCII letters are folded (exact under the C
    locale and every common one); other letters keep their case (see the module docstring)."""
    return text.translate(_ASCII_LOWER)


_ARRAY_SPECIAL = frozenset('{}"\\ \t\n\r\v\f')


def _array_element_text(item: Any, delimiter: str) -> str:
    """One element as array_out writes it: quoted when empty, ``NULL``-like or special."""
    if item is None:
        return "NULL"
    if isinstance(item, list):
        return "{" + delimiter.join(_array_element_text(i, delimiter) for i in item) + "}"
    text: str = item
    if (not text or text.upper() == "NULL" or delimiter in text
            or not _ARRAY_SPECIAL.isdisjoint(text)):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def _array_key(element: KeyType, delimiter: str) -> Renderer:
    """Arrays compare element by element with the element type's equality, then by their
    dimensions *and lower bounds*. The usual array (lower bounds 1) becomes a JSON list of
    canonical element keys. One with other bounds (``[0:1]={1,2}``, which is not equal to
    ``{1,2}``) becomes its literal with canonical elements as a string: a JSON list would drop
    the bounds, and the array's input function reads the string back with them."""
    element_key = element.renderer()
    element_text = element.canonical_text()

    def key(text: str) -> Any:
        if text.startswith("["):
            bounds, _, literal = text.partition("=")
            items = parse_array(literal, element_text, delimiter)
            return f"{bounds}={_array_element_text(items, delimiter)}"
        return parse_array(text, element_key, delimiter)

    return key


_KEY_CANON: dict[int, KeyType] = {
    17: KeyType(_text, _bytea_canon),  # bytea
    700: KeyType(_float, _float_canon),  # float4
    701: KeyType(_float, _float_canon),  # float8
    1042: KeyType(_text, _bpchar_canon),  # bpchar
    1186: KeyType(_text, _interval_canon),  # interval
    1700: KeyType(_text, _numeric_canon),  # numeric
    3802: KeyType(_jsonb_key, _jsonb_canon),  # jsonb
}
_KEY_RANGES: dict[int, tuple[KeyType, int]] = {
    3906: (KeyType(_text, _numeric_range_canon), 3907),  # numrange, numrange[]
    4532: (KeyType(_text, _numeric_range_canon), 6151),  # nummultirange, nummultirange[]
}

BUILTIN_KEY_TYPES: dict[int, KeyType] = {}
"""Builtin type OID -> how its key values are canonicalised (scalars, their arrays, the
numeric ranges). Every other OID renders its key like its row value."""
for _oid, (_render, _array_oid) in _SCALARS.items():
    _key_type = _KEY_CANON.get(_oid, KeyType(_render))
    BUILTIN_KEY_TYPES[_oid] = _key_type
    BUILTIN_KEY_TYPES[_array_oid] = KeyType(_array_key(_key_type, ","))
for _oid, (_key_type, _array_oid) in _KEY_RANGES.items():
    BUILTIN_KEY_TYPES[_oid] = _key_type
    BUILTIN_KEY_TYPES[_array_oid] = KeyType(_array_key(_key_type, ","))


class TypeInfo(NamedTuple):
    """What the key renderer needs to know about a non-builtin type (:func:`describe_types`)."""

    kind: str  # pg_type.typtype: b(ase), d(omain), e(num), c(omposite), r(ange), m(ultirange)
    name: str
    base: int  # a domain's base type, else 0
    element: int  # an array's element type, else 0
    delimiter: str  # the element type's delimiter (arrays)


_DESCRIBE_TYPES = (
    "SELECT t.oid::int8, t.typtype::text, t.typname::text, t.typbasetype::int8,"
    " (CASE WHEN t.typcategory = 'A' AND t.typtype <> 'd' THEN t.typelem ELSE 0 END)::int8,"
    " coalesce(e.typdelim, ',')::text"
    " FROM pg_type t LEFT JOIN pg_type e ON e.oid = t.typelem"
    " WHERE t.oid = ANY(%s::oid[])"
)


def describe_types(conn: psycopg.Connection[Any], oids: Iterable[int]) -> dict[int, TypeInfo]:
    """``pg_type`` facts about ``oids`` and every type they are built on (a domain's base, an
    array's element), for :meth:`ValueRenderer.learn_key_types`. The stream and the snapshot
    both ask this for their key columns, so both canonicalise a domain's key alike."""
    infos: dict[int, TypeInfo] = {}
    wanted = {oid for oid in oids if oid not in BUILTIN_KEY_TYPES}
    while wanted:
        rows = conn.execute(_DESCRIBE_TYPES, (sorted(wanted),)).fetchall()
        for oid, kind, name, base, element, delimiter in rows:
            infos[int(oid)] = TypeInfo(kind, name, int(base), int(element), delimiter)
        found = {int(r[0]) for r in rows}
        wanted = {o for info in (infos[f] for f in found) for o in (info.base, info.element)
                  if o and o not in infos and o not in BUILTIN_KEY_TYPES}
    return infos


def _key_type_of(oid: int, infos: Mapping[int, TypeInfo], depth: int = 0) -> KeyType | None:
    builtin = BUILTIN_KEY_TYPES.get(oid)
    if builtin is not None:
        return builtin
    info = infos.get(oid)
    if info is None or depth > 32:
        return None
    if info.kind == "d":  # a domain compares like its base type
        return _key_type_of(info.base, infos, depth + 1)
    if info.element:
        element = _key_type_of(info.element, infos, depth + 1) or KeyType(_text)
        return KeyType(_array_key(element, info.delimiter))
    if info.kind == "b" and info.name == "citext":
        return KeyType(_text, _citext_canon)
    return None  # enums, composites, other ranges and extension types: their text


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
        self._key_renderers: dict[int, Renderer] = {
            oid: key_type.renderer() for oid, key_type in BUILTIN_KEY_TYPES.items()}
        self._described: set[int] = set()

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

    def learn_key_types(self, type_oids: Iterable[int],
                        describe: Callable[[list[int]], Mapping[int, TypeInfo]] | None) -> None:
        """Make sure keys of these types are canonicalised: builtin ones always are; for the
        others (domains, arrays of them, citext) ``describe`` (:func:`describe_types` on a
        connection) is asked once per OID. Without ``describe`` they render like row values."""
        missing = sorted({oid for oid in type_oids
                          if oid not in BUILTIN_KEY_TYPES and oid not in self._described})
        if not missing or describe is None:
            return
        infos = describe(missing)
        for oid in missing:
            key_type = _key_type_of(oid, infos)
            if key_type is not None:
                self._key_renderers[oid] = key_type.renderer()
        self._described.update(missing)

    def key_renderer_for(self, type_oid: int) -> Renderer:
        """Text of a key column -> its canonical key value (module docstring, "Keys"). Chosen
        once per relation column; ``is renderer_for(type_oid)`` where the row value is already
        canonical, so callers may reuse the row's value."""
        render = self._key_renderers.get(type_oid)
        return render if render is not None else self.renderer_for(type_oid)

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

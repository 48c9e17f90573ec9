"""Primary keys are canonical by value: texts of one value give one key, and only they do.

The input texts are what Postgres' output functions write under ``SESSION_OPTIONS`` (what
pgoutput sends and what the snapshot reads). ``tests/integration/test_key_canonical_pg.py`` has
Postgres itself confirm each pair's equality and the cast back of every key; this file checks
the renderer alone, the encoder's update handling, and the interval arithmetic at random.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import pytest

from connector.events import ChangeEncoder
from connector.pgoutput import UNCHANGED_TOAST, Column, Delete, Insert, Relation, Update
from connector.values import TypeInfo, ValueRenderer, render_value
from pgai_orm.errors import InvariantError
from pgai_orm.events import Transaction, canonical_key, decode_event

INT4, INT8, TEXT, BPCHAR, BYTEA, BOOL = 23, 20, 25, 1042, 17, 16
FLOAT4, FLOAT8, NUMERIC, INTERVAL, JSONB = 700, 701, 1700, 1186, 3802
TIMETZ, UUID, NUMRANGE, NUMMULTIRANGE = 1266, 2950, 3906, 4532
NUMERIC_ARRAY, FLOAT8_ARRAY, BPCHAR_ARRAY, INTERVAL_ARRAY, JSONB_ARRAY, INT4_ARRAY = (
    1231, 1022, 1014, 1187, 3807, 1007)
BYTEA_ARRAY, NUMRANGE_ARRAY = 1001, 3907

# (type OID, texts that are one value under the type's equality operator)
EQUAL: list[tuple[int, list[str]]] = [
    (NUMERIC, ["1.5", "1.50", "1.500000000000000000000000000000"]),
    (NUMERIC, ["2", "2.0", "2.000"]),
    (NUMERIC, ["0", "0.0", "0.00000"]),
    (NUMERIC, ["-0.1", "-0.10"]),
    (NUMERIC, ["100", "100.00"]),
    (NUMERIC, ["123456789012345678901234567890.5", "123456789012345678901234567890.50"]),
    (FLOAT8, ["0", "-0"]),
    (FLOAT4, ["0", "-0"]),
    (BPCHAR, ["a", "a ", "a    "]),
    (BPCHAR, ["", "   "]),
    (BPCHAR, [" a", " a  "]),
    (BYTEA, ["\\x0102ff", "\\001\\002\\377"]),  # hex, and bytea_output=escape
    (INTERVAL, ["P1M", "P30D", "PT720H"]),
    (INTERVAL, ["P1D", "PT24H", "PT1440M", "PT86400S"]),
    (INTERVAL, ["P1Y", "P12M", "P360D"]),
    (INTERVAL, ["P29DT23H", "P1MT-1H", "P30DT-1H"]),
    (INTERVAL, ["PT-22H", "P-1DT2H"]),
    (INTERVAL, ["PT-1.5S", "P-1DT23H59M58.5S"]),
    (INTERVAL, ["P1MT0.000001S", "P30DT0.000001S"]),
    (JSONB, ['{"a": 1}', '{"a": 1.0}', '{"a": 1.000}']),
    (JSONB, ['[1.50, "1.50", {"k": 0.0}]', '[1.5, "1.50", {"k": 0}]']),
    (NUMRANGE, ["[1.50,2.0)", "[1.5,2)"]),
    (NUMMULTIRANGE, ["{[1.50,2.0),[3,4)}", "{[1.5,2),[3.0,4.00)}"]),
    (NUMERIC_ARRAY, ["{1.5,NULL,2}", "{1.50,NULL,2.0}"]),
    (NUMERIC_ARRAY, ["{{1.5,2},{3,4}}", "{{1.50,2.0},{3.000,4}}"]),
    (NUMERIC_ARRAY, ["[0:1]={1.5,2}", "[0:1]={1.50,2.00}"]),
    (FLOAT8_ARRAY, ["{0,1.5}", "{-0,1.5}"]),
    (BPCHAR_ARRAY, ['{a,"b  "}', '{"a  ",b}']),
    (BPCHAR_ARRAY, ['[2:2]={"a  "}', "[2:2]={a}"]),
    (INTERVAL_ARRAY, ["{P1M,PT24H}", "{P30D,P1D}"]),
    (JSONB_ARRAY, [r'{"{\"a\": 1.0}"}', r'{"{\"a\": 1}"}']),
    (BYTEA_ARRAY, [r'{"\\x01"}', r'{"\\x01"}']),
    (NUMRANGE_ARRAY, ['{"[1.50,2)"}', '{"[1.5,2.0)"}']),
]

# (type OID, texts of pairwise *different* values): no two may share a key
DISTINCT: list[tuple[int, list[str]]] = [
    (NUMERIC, ["1.5", "1.51", "15", "0.15", "-1.5", "NaN", "Infinity", "-Infinity"]),
    (NUMERIC, ["0.1", "0.10000000000000000000000001", "0.100000000000000000000000001"]),
    (NUMERIC, ["10", "1", "100", "10.01"]),
    (FLOAT8, ["0", "5e-324", "-5e-324", "NaN", "Infinity", "-Infinity", "1", "1.0000000000000002"]),
    (BPCHAR, ["a", "a\t", " a", "A"]),
    (BYTEA, ["\\x", "\\x00", "\\x0100", "\\x01"]),
    (INTERVAL, ["P1M", "P31D", "P29D", "PT-1S", "PT1S", "PT0.000001S", "PT0S", "infinity",
                "-infinity"]),
    (JSONB, ['{"a": 1}', '{"a": "1"}', "[1]", "1", '"1"', '{"a": 1.1}', '{"a": [1]}']),
    (JSONB, ['{"a": 0.1}', '{"a": 0.10000000000000000000000001}']),  # beyond double precision
    (TIMETZ, ["12:00:00+01", "11:00:00+00"]),  # timetz equality compares the zone too
    (TEXT, ["a", "A", "a ", ""]),
    (NUMRANGE, ["[1.5,2)", "(1.5,2)", "[1.5,2]", "empty"]),
    (NUMERIC_ARRAY, ["{1,2}", "[0:1]={1,2}", "[2:3]={1,2}", "{{1,2}}", "{2,1}", "{1,NULL}",
                     "{}"]),
    (INT4_ARRAY, ["{1,2}", "[0:1]={1,2}"]),
]


def key_bytes(renderer: ValueRenderer, oid: int, text: str) -> bytes:
    return canonical_key({"k": renderer.key_renderer_for(oid)(text)})


@pytest.mark.parametrize(("oid", "texts"), EQUAL)
def test_texts_of_one_value_give_one_key(oid: int, texts: list[str]) -> None:
    renderer = ValueRenderer()
    keys = {key_bytes(renderer, oid, text) for text in texts}
    assert len(keys) == 1, keys


@pytest.mark.parametrize(("oid", "texts"), DISTINCT)
def test_different_values_give_different_keys(oid: int, texts: list[str]) -> None:
    renderer = ValueRenderer()
    keys = [key_bytes(renderer, oid, text) for text in texts]
    assert len(set(keys)) == len(texts), keys


@pytest.mark.parametrize(
    ("oid", "text", "key"),
    [
        (NUMERIC, "1.50", "1.5"),  # a string still: it casts back exactly
        (NUMERIC, "2.000", "2"),
        (NUMERIC, "NaN", "NaN"),
        (FLOAT8, "-0", 0.0),
        (FLOAT8, "NaN", "NaN"),
        (BPCHAR, "ab   ", "ab"),
        (BYTEA, "\\x0102", "\\x0102"),  # hex, not the row's base64: bytea reads it back
        (INTERVAL, "PT720H", "P1M"),
        (INTERVAL, "P-1DT2H", "PT-22H"),
        (INTERVAL, "PT-0.5S", "PT-0.5S"),
        (NUMERIC_ARRAY, "{1.50,NULL}", ["1.5", None]),
        (NUMERIC_ARRAY, "[0:1]={1.50,NULL}", "[0:1]={1.5,NULL}"),  # keeps its bounds
        (BPCHAR_ARRAY, '[0:1]={"a  ","NULL "}', '[0:1]={a,"NULL"}'),
        (INT4, "7", 7),
        (BOOL, "t", True),
        (UUID, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
    ],
)
def test_canonical_key_values(oid: int, text: str, key: Any) -> None:
    value = ValueRenderer().key_renderer_for(oid)(text)
    assert value == key
    assert type(value) is type(key)


def test_jsonb_key_is_the_canonical_text_unparsed() -> None:
    renderer = ValueRenderer()
    big = '{"a": [1.50, 123456789012345678901234567890.10, "x 1.50"], "b c": null}'
    assert key_bytes(renderer, JSONB, big) == \
        b'{"k":{"a":[1.5,123456789012345678901234567890.1,"x 1.50"],"b c":null}}'


def test_row_values_keep_their_text() -> None:
    """Only the key is canonical: the row shows what the user wrote."""
    assert render_value(NUMERIC, "1.50") == "1.50"
    assert render_value(BPCHAR, "ab   ") == "ab   "
    assert render_value(INTERVAL, "PT720H") == "PT720H"
    assert render_value(FLOAT8, "-0") == -0.0


def test_key_renderer_is_the_row_renderer_where_the_text_is_canonical() -> None:
    """Int, text, uuid... keys reuse the row's value: no second rendering on the hot path."""
    renderer = ValueRenderer()
    for oid in (INT4, INT8, TEXT, UUID, BOOL, 1114, 1184, 1082):
        assert renderer.key_renderer_for(oid) is renderer.renderer_for(oid)
    for oid in (NUMERIC, FLOAT8, BPCHAR, BYTEA, INTERVAL, JSONB, NUMERIC_ARRAY):
        assert renderer.key_renderer_for(oid) is not renderer.renderer_for(oid)


def test_interval_not_in_iso_8601_is_refused() -> None:
    with pytest.raises(ValueError, match="iso_8601"):
        ValueRenderer().key_renderer_for(INTERVAL)("1 mon 2 days")


# --- interval arithmetic at random ---------------------------------------------------------------

MONTH_US, DAY_US = 30 * 86_400_000_000, 86_400_000_000


def pg_iso(months: int, days: int, usecs: int) -> str:
    """interval_out under IntervalStyle=iso_8601 (EncodeInterval, INTSTYLE_ISO_8601)."""
    if months == days == usecs == 0:
        return "PT0S"

    def trunc_div(a: int, b: int) -> tuple[int, int]:
        q = abs(a) // b * (1 if a >= 0 else -1)
        return q, a - q * b

    year, mon = trunc_div(months, 12)
    hour, rest = trunc_div(usecs, 3_600_000_000)
    minute, rest = trunc_div(rest, 60_000_000)
    sec, fsec = trunc_div(rest, 1_000_000)
    out = "P" + "".join(f"{v}{u}" for v, u in ((year, "Y"), (mon, "M"), (days, "D")) if v)
    if hour or minute or sec or fsec:
        out += "T" + "".join(f"{v}{u}" for v, u in ((hour, "H"), (minute, "M")) if v)
        if sec or fsec:
            frac = f".{abs(fsec):06d}".rstrip("0") if fsec else ""
            out += f"{'-' if sec < 0 or fsec < 0 else ''}{abs(sec)}{frac}S"
    return out


def test_intervals_share_a_key_exactly_when_their_spans_are_equal() -> None:
    rng = random.Random(20261124)
    render = ValueRenderer().key_renderer_for(INTERVAL)
    by_key: dict[str, int] = {}
    for _ in range(3000):
        months = rng.choice([0, rng.randint(-30, 30), rng.randint(-10**6, 10**6)])
        days = rng.choice([0, rng.randint(-100, 100), rng.randint(-10**6, 10**6)])
        usecs = rng.choice([0, rng.randint(-10**11, 10**11), rng.randint(-10**15, 10**15),
                            rng.randint(-10**6, 10**6)])
        span = months * MONTH_US + days * DAY_US + usecs
        # the same span written another way: a month moved into days, a day into hours
        shift_m, shift_d = rng.randint(-5, 5), rng.randint(-5, 5)
        other = pg_iso(months - shift_m, days + 30 * shift_m - shift_d, usecs + shift_d * DAY_US)
        key = render(pg_iso(months, days, usecs))
        assert render(other) == key, (pg_iso(months, days, usecs), other)
        assert render(key) == key  # canonical texts are fixed points
        assert key == pg_iso(*_fields_of(key))  # and written as interval_out writes them
        assert by_key.setdefault(key, span) == span  # one key, one span


def _fields_of(iso: str) -> tuple[int, int, int]:
    """Parse our own canonical text back (months, days, microseconds), for the fixed point."""
    m = re.fullmatch(r"P(?:(-?\d+)Y)?(?:(-?\d+)M)?(?:(-?\d+)D)?"
                     r"(?:T(?:(-?\d+)H)?(?:(-?\d+)M)?(?:(-?)(\d+)(?:\.(\d+))?S)?)?", iso)
    assert m is not None, iso
    y, mo, d, h, mi, sign, s, f = m.groups()
    us = int(s or 0) * 1_000_000 + int((f or "").ljust(6, "0"))
    return (int(y or 0) * 12 + int(mo or 0), int(d or 0),
            (int(h or 0) * 60 + int(mi or 0)) * 60_000_000 + (-us if sign else us))


# --- non-builtin types through describe ----------------------------------------------------------

DOMAIN, DOMAIN_ARRAY, CITEXT, CITEXT_ARRAY, ENUM, DOMAIN_OF_DOMAIN = (
    20001, 20002, 20003, 20004, 20005, 20006)
CATALOG = {
    DOMAIN: TypeInfo("d", "price", NUMERIC, 0, ","),
    DOMAIN_ARRAY: TypeInfo("b", "_price", 0, DOMAIN, ","),
    DOMAIN_OF_DOMAIN: TypeInfo("d", "price2", DOMAIN, 0, ","),
    CITEXT: TypeInfo("b", "citext", 0, 0, ","),
    CITEXT_ARRAY: TypeInfo("b", "_citext", 0, CITEXT, ","),
    ENUM: TypeInfo("e", "mood", 0, 0, ","),
}


class FakeCatalog:
    def __init__(self) -> None:
        self.asked: list[list[int]] = []

    def __call__(self, oids: list[int]) -> Mapping[int, TypeInfo]:
        self.asked.append(list(oids))
        return CATALOG


def test_domains_arrays_of_them_and_citext_are_canonicalised_through_describe() -> None:
    catalog = FakeCatalog()
    renderer = ValueRenderer()
    renderer.learn_key_types([DOMAIN, DOMAIN_ARRAY, DOMAIN_OF_DOMAIN, CITEXT, CITEXT_ARRAY, ENUM,
                              NUMERIC], catalog)
    assert catalog.asked == [[DOMAIN, DOMAIN_ARRAY, CITEXT, CITEXT_ARRAY, ENUM, DOMAIN_OF_DOMAIN]]
    renderer.learn_key_types([DOMAIN, NUMERIC], catalog)
    assert len(catalog.asked) == 1  # once per type
    assert renderer.key_renderer_for(DOMAIN)("1.50") == "1.5"
    assert renderer.key_renderer_for(DOMAIN_OF_DOMAIN)("1.50") == "1.5"
    assert renderer.key_renderer_for(DOMAIN_ARRAY)("{1.50,2}") == ["1.5", "2"]
    assert renderer.key_renderer_for(CITEXT)("MiXeD Case É") == "mixed case É"
    assert renderer.key_renderer_for(CITEXT_ARRAY)("{Ab,NULL}") == ["ab", None]
    assert renderer.key_renderer_for(ENUM)("Happy") == "Happy"


def test_without_describe_non_builtin_keys_are_their_text() -> None:
    renderer = ValueRenderer()
    renderer.learn_key_types([DOMAIN], None)
    assert renderer.key_renderer_for(DOMAIN)("1.50") == "1.50"


# --- the encoder ---------------------------------------------------------------------------------

TXN = Transaction(1000, "2026-01-01T00:00:00+00:00", 7)


def encoder_for(key_oid: int, describe: Any = None) -> ChangeEncoder:
    encoder = ChangeEncoder({("public", "t"): ["id"]}, describe=describe)
    encoder.relation(Relation(1, "public", "t", "d", (
        Column("id", key_oid, -1, True), Column("body", TEXT, -1, False))))
    return encoder


def events(records: Sequence[tuple[bytes, bytes | None]]) -> list[tuple[bytes, str | None, Any]]:
    out = []
    for key, value in records:
        event = decode_event(value)
        out.append((key, None if event is None else getattr(event, "op", "truncate"),
                    None if event is None else getattr(event, "key", None)))
    return out


def test_a_key_update_to_an_equal_value_is_an_update_of_one_key() -> None:
    """``UPDATE t SET id = 1.50 WHERE id = 1.5``: pgoutput sends the old key (its bytes
    changed), but it is the same row: one update, under the insert's key."""
    encoder = encoder_for(NUMERIC)
    (insert,) = encoder.insert(Insert(1, ("1.5", "x")), 10, TXN)
    records = encoder.update(Update(1, ("1.50", "y"), ("1.5", None), "K"), 20, TXN)
    assert events(records) == [(insert.key, "update", {"id": "1.5"})]
    assert insert.key == b'{"id":"1.5"}'
    row = decode_event(records[0].value)
    assert getattr(row, "row", None) == {"id": "1.50", "body": "y"}  # the row keeps its text
    (delete, tombstone) = encoder.delete(Delete(1, ("1.500", None), "K"), 30, TXN)
    assert delete.key == tombstone.key == insert.key


def test_a_real_key_change_is_still_delete_and_insert() -> None:
    encoder = encoder_for(NUMERIC)
    records = encoder.update(Update(1, ("2.50", "y"), ("1.50", None), "K"), 20, TXN)
    assert events(records) == [(b'{"id":"1.5"}', "delete", {"id": "1.5"}),
                               (b'{"id":"1.5"}', None, None),
                               (b'{"id":"2.5"}', "insert", {"id": "2.5"})]


def test_replica_identity_full_old_row_with_an_equal_key_is_an_update() -> None:
    encoder = encoder_for(BPCHAR)
    records = encoder.update(Update(1, ("ab  ", "new"), ("ab", "old"), "O"), 20, TXN)
    assert events(records) == [(b'{"id":"ab"}', "update", {"id": "ab"})]


def test_unchanged_toast_key_comes_from_the_old_tuple() -> None:
    encoder = encoder_for(NUMERIC)
    records = encoder.update(Update(1, (UNCHANGED_TOAST, "y"), ("3.10", "x"), "O"), 20, TXN)
    assert events(records) == [(b'{"id":"3.1"}', "update", {"id": "3.1"})]
    assert getattr(decode_event(records[0].value), "row", None) == {"id": "3.10", "body": "y"}
    with pytest.raises(InvariantError, match="key column 'id'"):
        encoder.update(Update(1, (UNCHANGED_TOAST, "y")), 30, TXN)


def test_int_keys_are_unchanged() -> None:
    encoder = encoder_for(INT8)
    (insert,) = encoder.insert(Insert(1, ("42", "x")), 10, TXN)
    assert insert.key == b'{"id":42}'
    assert orjson.loads(insert.value or b"")["key"] == {"id": 42}


def test_encoder_describes_non_builtin_key_types_once_per_relation() -> None:
    catalog = FakeCatalog()
    encoder = encoder_for(DOMAIN, catalog)
    (insert,) = encoder.insert(Insert(1, ("1.50", "x")), 10, TXN)
    assert insert.key == b'{"id":"1.5"}'
    assert catalog.asked == [[DOMAIN]]
    encoder.relation(Relation(1, "public", "t", "d", (
        Column("id", DOMAIN, -1, True), Column("body", TEXT, -1, False))))
    assert catalog.asked == [[DOMAIN]]
    # a relation whose key is builtin asks nothing
    encoder_for(INT4, catalog)
    assert catalog.asked == [[DOMAIN]]

"""Rendering of Postgres text values to JSON-able values, per type OID.

The input strings are what Postgres' output functions write under ``SESSION_OPTIONS``
(DateStyle ISO, TimeZone UTC, IntervalStyle iso_8601, extra_float_digits 3, bytea hex).
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

import orjson
import pytest

from connector.pgoutput import UNCHANGED_TOAST, Column, Type
from connector.values import SESSION_OPTIONS, ValueRenderer, parse_array, render_value

INT2, INT4, INT8, OID = 21, 23, 20, 26
FLOAT4, FLOAT8, NUMERIC = 700, 701, 1700
BOOL, TEXT, VARCHAR, BPCHAR, NAME, CHAR = 16, 25, 1043, 1042, 19, 18
TIMESTAMPTZ, TIMESTAMP, DATE, TIME, TIMETZ, INTERVAL = 1184, 1114, 1082, 1083, 1266, 1186
UUID, JSON, JSONB, BYTEA = 2950, 114, 3802, 17
INT4_ARRAY, TEXT_ARRAY, INT8_ARRAY, NUMERIC_ARRAY = 1007, 1009, 1016, 1231
FLOAT8_ARRAY, BOOL_ARRAY, TIMESTAMPTZ_ARRAY, JSONB_ARRAY, BYTEA_ARRAY = 1022, 1000, 1185, 3807, 1001
UUID_ARRAY, DATE_ARRAY, BOX_ARRAY = 2951, 1182, 1020


@pytest.mark.parametrize(
    ("oid", "text", "expected"),
    [
        (INT2, "-32768", -32768),
        (INT4, "2147483647", 2147483647),
        (INT8, "-9223372036854775808", -9223372036854775808),
        (OID, "4294967295", 4294967295),
        (FLOAT8, "3.141592653589793", 3.141592653589793),
        (FLOAT8, "1e+308", 1e308),
        (FLOAT8, "-0", -0.0),
        (FLOAT4, "1.10000002", 1.10000002),
        (FLOAT8, "NaN", "NaN"),
        (FLOAT8, "Infinity", "Infinity"),
        (FLOAT4, "-Infinity", "-Infinity"),
        (NUMERIC, "1234567890123456789012345678901234567890", "1234567890123456789012345678901234567890"),
        (NUMERIC, "0.0000000000000000000000000000000000000001", "0.0000000000000000000000000000000000000001"),
        (NUMERIC, "12.50", "12.50"),
        (NUMERIC, "NaN", "NaN"),
        (NUMERIC, "-Infinity", "-Infinity"),
        (BOOL, "t", True),
        (BOOL, "f", False),
        (TEXT, "héllo\nwörld\t\\ \"quoted\"", "héllo\nwörld\t\\ \"quoted\""),
        (TEXT, "", ""),
        (VARCHAR, "abc", "abc"),
        (BPCHAR, "ab   ", "ab   "),
        (NAME, "pg_class", "pg_class"),
        (CHAR, "r", "r"),
        (UUID, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        (INTERVAL, "P1Y2M3DT4H5M6.5S", "P1Y2M3DT4H5M6.5S"),
        (INTERVAL, "PT0S", "PT0S"),
        (DATE, "2024-01-02", "2024-01-02"),
        (DATE, "infinity", "infinity"),
        (DATE, "0044-03-15 BC", "0044-03-15 BC"),
        (TIME, "03:04:05", "03:04:05"),
        (TIME, "03:04:05.5", "03:04:05.500000"),
        (TIMETZ, "03:04:05.123456+02", "03:04:05.123456+02:00"),
        (TIMETZ, "23:59:59-05:30", "23:59:59-05:30"),
        (TIMESTAMPTZ, "2024-01-02 03:04:05.123456+00", "2024-01-02T03:04:05.123456+00:00"),
        (TIMESTAMPTZ, "2024-01-02 03:04:05.12+00", "2024-01-02T03:04:05.120000+00:00"),
        (TIMESTAMPTZ, "2024-01-02 03:04:05+00", "2024-01-02T03:04:05+00:00"),
        (TIMESTAMPTZ, "2024-01-02 03:04:05+05:30", "2024-01-02T03:04:05+05:30"),
        (TIMESTAMPTZ, "1890-01-02 03:04:05-00:09:21", "1890-01-02T03:04:05-00:09:21"),
        (TIMESTAMPTZ, "12345-01-02 03:04:05+00", "12345-01-02T03:04:05+00:00"),
        (TIMESTAMPTZ, "infinity", "infinity"),
        (TIMESTAMPTZ, "-infinity", "-infinity"),
        (TIMESTAMPTZ, "0001-01-01 00:00:00+00 BC", "0001-01-01 00:00:00+00 BC"),
        (TIMESTAMP, "2024-01-02 03:04:05.000001", "2024-01-02T03:04:05.000001"),
        (TIMESTAMP, "2024-01-02 03:04:05", "2024-01-02T03:04:05"),
        (JSON, '{"a": [1, 2.5, null, true], "b": {"c": "d"}}', {"a": [1, 2.5, None, True], "b": {"c": "d"}}),
        (JSONB, '"just a string"', "just a string"),
        (JSONB, "null", None),
        (JSONB, "[]", []),
        (BYTEA, "\\x", ""),
        (BYTEA, "\\x00ff10", base64.b64encode(b"\x00\xff\x10").decode()),
        (BYTEA, "abc\\\\\\000\\377", base64.b64encode(b"abc\\\x00\xff").decode()),  # escape format
        (99999, "anything at all", "anything at all"),  # unknown OID
    ],
)
def test_scalar_rendering(oid: int, text: str, expected: Any) -> None:
    rendered = render_value(oid, text)
    assert rendered == expected
    assert type(rendered) is type(expected)
    orjson.dumps(rendered)  # every rendered value is JSON-able


def test_none_stays_none() -> None:
    assert render_value(INT4, None) is None


def test_timestamptz_matches_python_isoformat() -> None:
    """Snapshot readers that go through datetime objects must produce the same key text."""
    for text, moment in [
        ("2024-01-02 03:04:05.123456+00", datetime.fromisoformat("2024-01-02T03:04:05.123456+00:00")),
        ("2024-01-02 03:04:05.1+00", datetime.fromisoformat("2024-01-02T03:04:05.100000+00:00")),
        ("2024-01-02 03:04:05+00", datetime.fromisoformat("2024-01-02T03:04:05+00:00")),
    ]:
        assert render_value(TIMESTAMPTZ, text) == moment.isoformat()


# --- arrays ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("oid", "text", "expected"),
    [
        (INT4_ARRAY, "{}", []),
        (INT4_ARRAY, "{1,2,3}", [1, 2, 3]),
        (INT4_ARRAY, "{1,NULL,3}", [1, None, 3]),
        (INT4_ARRAY, "{{1,2},{3,4}}", [[1, 2], [3, 4]]),
        (INT4_ARRAY, "{{{1},{2}},{{3},{NULL}}}", [[[1], [2]], [[3], [None]]]),
        (INT4_ARRAY, "[0:2]={7,8,9}", [7, 8, 9]),
        (INT8_ARRAY, "{ 1 , 2 }", [1, 2]),
        (TEXT_ARRAY, '{plain,"with space","a,comma","NULL",NULL,""}',
         ["plain", "with space", "a,comma", "NULL", None, ""]),
        (TEXT_ARRAY, r'{"say \"hi\"","back\\slash","{braces}"}', ['say "hi"', "back\\slash", "{braces}"]),
        (TEXT_ARRAY, '{{a,"b}"},{"c,",NULL}}', [["a", "b}"], ["c,", None]]),
        (TEXT_ARRAY, '{"  padded  "}', ["  padded  "]),
        (TEXT_ARRAY, "{null,Null}", [None, None]),
        (NUMERIC_ARRAY, "{1.50,NaN,1234567890123456789012345678901234567890}",
         ["1.50", "NaN", "1234567890123456789012345678901234567890"]),
        (FLOAT8_ARRAY, "{1.5,NaN,-Infinity}", [1.5, "NaN", "-Infinity"]),
        (BOOL_ARRAY, "{t,f,NULL}", [True, False, None]),
        (TIMESTAMPTZ_ARRAY, '{"2024-01-02 03:04:05.5+00",NULL}', ["2024-01-02T03:04:05.500000+00:00", None]),
        (DATE_ARRAY, "{2024-01-02,infinity}", ["2024-01-02", "infinity"]),
        (JSONB_ARRAY, r'{"{\"a\": 1}","[1, 2]",NULL}', [{"a": 1}, [1, 2], None]),
        (BYTEA_ARRAY, r'{"\\x0102",NULL}', [base64.b64encode(b"\x01\x02").decode(), None]),
        (UUID_ARRAY, "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}", ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"]),
        (BOX_ARRAY, "{(1,1),(0,0);(2,2),(1,1)}", ["(1,1),(0,0)", "(2,2),(1,1)"]),
    ],
)
def test_array_rendering(oid: int, text: str, expected: Any) -> None:
    rendered = render_value(oid, text)
    assert rendered == expected
    orjson.dumps(rendered)


def test_parse_array_rejects_broken_literals() -> None:
    for bad in ['{"unterminated}', "{1,2", "{1,2}}x", "{{1},2"]:
        with pytest.raises(ValueError):
            parse_array(bad)


# --- user types and rows -----------------------------------------------------------------------


def test_user_types_from_type_messages() -> None:
    renderer = ValueRenderer()
    renderer.register_type(Type(16389, "public", "mood"))
    renderer.register_type(Type(16388, "public", "_mood"))
    assert renderer.render(16389, "happy") == "happy"
    assert renderer.render(16388, '{happy,NULL,"so sad"}') == ["happy", None, "so sad"]
    assert renderer.render(77777, "(1,abc)") == "(1,abc)"  # composite or unknown: the text


def test_domains_and_arrays_can_be_registered_from_the_catalog() -> None:
    renderer = ValueRenderer()
    renderer.register_type(Type(20000, "public", "positive_int"))
    assert renderer.render(20000, "5") == "5"
    renderer.register_domain(20000, INT4)
    assert renderer.render(20000, "5") == 5
    renderer.register_array(20001, 20000)
    assert renderer.render(20001, "{1,NULL}") == [1, None]


def test_render_row_keeps_null_and_unchanged_toast_apart() -> None:
    renderer = ValueRenderer()
    columns = [Column("id", INT8, -1, True), Column("body", TEXT, -1, False),
               Column("tags", TEXT_ARRAY, -1, False), Column("doc", JSONB, -1, False)]
    row = renderer.render_row(columns, ("7", UNCHANGED_TOAST, None, '{"k": 1}'))
    assert row == {"id": 7, "body": UNCHANGED_TOAST, "tags": None, "doc": {"k": 1}}
    assert row["body"] is UNCHANGED_TOAST


def test_render_row_refuses_binary_values_and_length_mismatch() -> None:
    renderer = ValueRenderer()
    with pytest.raises(TypeError, match="binary"):
        renderer.render_row([Column("b", BYTEA, -1, False)], (b"\x00",))
    with pytest.raises(ValueError):
        renderer.render_row([Column("a", INT4, -1, False)], ("1", "2"))


def test_session_options_pin_every_setting_the_renderer_assumes() -> None:
    for setting in ("DateStyle=ISO", "TimeZone=UTC", "IntervalStyle=iso_8601",
                    "extra_float_digits=3", "bytea_output=hex"):
        assert f"-c {setting}" in SESSION_OPTIONS

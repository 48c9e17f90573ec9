"""pgoutput and replication-wrapper decoding, on bytes built by hand from the protocol docs."""

from __future__ import annotations

import pickle
import struct
from datetime import UTC, datetime

import pytest

from connector.pgoutput import (
    UNCHANGED_TOAST,
    Begin,
    Column,
    Commit,
    Delete,
    Insert,
    Message,
    Origin,
    PgOutputError,
    PrimaryKeepalive,
    Relation,
    StreamAbort,
    StreamCommit,
    StreamStart,
    StreamStop,
    Truncate,
    Type,
    UnsupportedMessageError,
    Update,
    XLogData,
    datetime_to_pg_time,
    decode_message,
    decode_replication_message,
    encode_standby_status,
    pg_now,
    pg_time_to_datetime,
)
from pgai_orm.lsn import format_lsn, parse_lsn

# --- encoders for the test data (the protocol, written the other way round) ---------------------


def cstr(text: str) -> bytes:
    return text.encode() + b"\0"


def text(value: str) -> bytes:
    raw = value.encode()
    return b"t" + struct.pack(">I", len(raw)) + raw


def binary(value: bytes) -> bytes:
    return b"b" + struct.pack(">I", len(value)) + value


def tuple_data(*parts: bytes) -> bytes:
    return struct.pack(">H", len(parts)) + b"".join(parts)


NULL, TOAST = b"n", b"u"


# --- transaction framing -----------------------------------------------------------------------


def test_begin() -> None:
    msg = decode_message(b"B" + struct.pack(">QqI", 0x16_B374D848, 757_000_000_123_456, 4242))
    assert msg == Begin(final_lsn=0x16_B374D848, commit_time=757_000_000_123_456, xid=4242)


def test_commit() -> None:
    msg = decode_message(b"C" + struct.pack(">BQQq", 0, 100, 148, 5))
    assert msg == Commit(flags=0, commit_lsn=100, end_lsn=148, commit_time=5)


def test_origin() -> None:
    msg = decode_message(b"O" + struct.pack(">Q", 77) + cstr("node_a"))
    assert msg == Origin(commit_lsn=77, name="node_a")


# --- schema ------------------------------------------------------------------------------------


def relation_bytes(xid: bytes = b"") -> bytes:
    return (
        b"R" + xid + struct.pack(">I", 16393) + cstr("public") + cstr("blog_posts") + b"d"
        + struct.pack(">H", 3)
        + b"\x01" + cstr("id") + struct.pack(">Ii", 23, -1)
        + b"\x00" + cstr("title") + struct.pack(">Ii", 1043, 104)
        + b"\x00" + cstr("contént") + struct.pack(">Ii", 25, -1)
    )


def test_relation_columns_in_order_with_key_flag_and_typmod() -> None:
    msg = decode_message(relation_bytes())
    assert msg == Relation(
        relation_id=16393,
        namespace="public",
        name="blog_posts",
        replica_identity="d",
        columns=(
            Column("id", 23, -1, True),
            Column("title", 1043, 104, False),
            Column("contént", 25, -1, False),
        ),
    )


def test_relation_in_pg_catalog_has_empty_namespace() -> None:
    raw = b"R" + struct.pack(">I", 1) + cstr("") + cstr("t") + b"f" + struct.pack(">H", 0)
    msg = decode_message(raw)
    assert isinstance(msg, Relation)
    assert (msg.namespace, msg.replica_identity, msg.columns) == ("", "f", ())


def test_type() -> None:
    msg = decode_message(b"Y" + struct.pack(">I", 16389) + cstr("public") + cstr("mood"))
    assert msg == Type(type_oid=16389, namespace="public", name="mood")


# --- row changes -------------------------------------------------------------------------------


def test_insert_with_text_null_and_binary_values() -> None:
    raw = b"I" + struct.pack(">I", 16393) + b"N" + tuple_data(
        text("1"), NULL, text("héllo, wörld"), binary(b"\x00\xff")
    )
    msg = decode_message(raw)
    assert msg == Insert(relation_id=16393, new=("1", None, "héllo, wörld", b"\x00\xff"))


def test_insert_empty_string_is_not_null() -> None:
    msg = decode_message(b"I" + struct.pack(">I", 1) + b"N" + tuple_data(text(""), NULL))
    assert isinstance(msg, Insert)
    assert msg.new == ("", None)


def test_update_without_old_tuple_keeps_unchanged_toast_marker() -> None:
    raw = b"U" + struct.pack(">I", 16393) + b"N" + tuple_data(text("1"), text("new title"), TOAST)
    msg = decode_message(raw)
    assert msg == Update(relation_id=16393, new=("1", "new title", UNCHANGED_TOAST))
    assert msg.old is None and msg.old_kind is None
    assert msg.new[2] is UNCHANGED_TOAST
    assert msg.new[2] is not None


def test_update_with_changed_key_carries_old_key() -> None:
    raw = (
        b"U" + struct.pack(">I", 7)
        + b"K" + tuple_data(text("1"), NULL, NULL)
        + b"N" + tuple_data(text("2"), text("t"), TOAST)
    )
    msg = decode_message(raw)
    assert msg == Update(7, new=("2", "t", UNCHANGED_TOAST), old=("1", None, None), old_kind="K")


def test_update_with_replica_identity_full_carries_old_row() -> None:
    raw = (
        b"U" + struct.pack(">I", 7)
        + b"O" + tuple_data(text("1"), text("old"), TOAST)
        + b"N" + tuple_data(text("1"), text("new"), TOAST)
    )
    msg = decode_message(raw)
    assert isinstance(msg, Update)
    assert (msg.old_kind, msg.old, msg.new) == (
        "O", ("1", "old", UNCHANGED_TOAST), ("1", "new", UNCHANGED_TOAST)
    )


def test_delete_with_key_only() -> None:
    raw = b"D" + struct.pack(">I", 9) + b"K" + tuple_data(text("42"), NULL)
    assert decode_message(raw) == Delete(relation_id=9, old=("42", None), old_kind="K")


def test_delete_with_replica_identity_full() -> None:
    raw = b"D" + struct.pack(">I", 9) + b"O" + tuple_data(text("42"), text("x"))
    assert decode_message(raw) == Delete(relation_id=9, old=("42", "x"), old_kind="O")


@pytest.mark.parametrize(
    ("options", "cascade", "restart"),
    [(0, False, False), (1, True, False), (2, False, True), (3, True, True)],
)
def test_truncate_flags_and_relation_ids(options: int, cascade: bool, restart: bool) -> None:
    raw = b"T" + struct.pack(">IB", 3, options) + struct.pack(">3I", 10, 20, 4_000_000_000)
    assert decode_message(raw) == Truncate((10, 20, 4_000_000_000), cascade, restart)


def test_logical_decoding_message() -> None:
    content = b"\x00binary\xffcontent"
    raw = b"M" + struct.pack(">BQ", 1, 555) + cstr("vectorizer") + struct.pack(">I", len(content)) + content
    assert decode_message(raw) == Message(True, 555, "vectorizer", content)


def test_non_transactional_message_with_empty_content() -> None:
    raw = b"M" + struct.pack(">BQ", 0, 1) + cstr("p") + struct.pack(">I", 0)
    assert decode_message(raw) == Message(False, 1, "p", b"")


def test_memoryview_input_decodes_like_bytes() -> None:
    raw = b"I" + struct.pack(">I", 1) + b"N" + tuple_data(text("x" * 3000), TOAST, NULL)
    assert decode_message(memoryview(raw)) == decode_message(raw)
    rel = relation_bytes()
    assert decode_message(memoryview(rel)) == decode_message(rel)


# --- protocol 2: streamed transactions ----------------------------------------------------------


def test_streamed_transaction_messages_carry_xid() -> None:
    xid = struct.pack(">I", 901)
    assert decode_message(b"S" + struct.pack(">IB", 901, 1)) == StreamStart(901, True)
    relation = decode_message(relation_bytes(xid), in_stream=True)
    assert isinstance(relation, Relation) and relation.xid == 901 and relation.name == "blog_posts"
    insert = decode_message(b"I" + xid + struct.pack(">I", 16393) + b"N" + tuple_data(text("1")),
                            in_stream=True)
    assert insert == Insert(16393, ("1",), xid=901)
    assert decode_message(b"E", in_stream=True) == StreamStop()
    # Outside the block no xid is expected again.
    assert decode_message(b"I" + struct.pack(">I", 16393) + b"N" + tuple_data(text("2"))) == Insert(
        16393, ("2",)
    )
    commit = decode_message(b"c" + struct.pack(">IBQQq", 901, 0, 10, 20, 30))
    assert commit == StreamCommit(xid=901, flags=0, commit_lsn=10, end_lsn=20, commit_time=30)


def test_stream_abort_v2_and_v4() -> None:
    assert decode_message(b"A" + struct.pack(">II", 5, 6)) == StreamAbort(5, 6)
    assert decode_message(b"A" + struct.pack(">IIQq", 5, 6, 70, 80)) == StreamAbort(5, 6, 70, 80)


@pytest.mark.parametrize("tag", [b"b", b"P", b"K", b"r", b"p"])
def test_two_phase_messages_are_rejected_by_name(tag: bytes) -> None:
    with pytest.raises(UnsupportedMessageError, match="two-phase"):
        decode_message(tag + b"\0" * 40)


# --- malformed input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"Z\0\0",  # unknown tag
        b"B\0\0\0",  # truncated
        b"I" + struct.pack(">I", 1) + b"N" + struct.pack(">H", 1) + b"t" + struct.pack(">I", 5) + b"ab",
        b"I" + struct.pack(">I", 1) + b"N" + struct.pack(">H", 1) + b"x",  # unknown value kind
        b"I" + struct.pack(">I", 1) + b"X" + tuple_data(text("1")),  # missing 'N'
        b"U" + struct.pack(">I", 1) + b"Q" + tuple_data(text("1")),
        b"D" + struct.pack(">I", 1) + b"N" + tuple_data(text("1")),  # delete needs K or O
        b"I" + struct.pack(">I", 1) + b"N" + tuple_data(b"t" + struct.pack(">I", 2) + b"\xff\xfe"),
    ],
)
def test_malformed_messages_raise_pgoutput_error(raw: bytes) -> None:
    with pytest.raises(PgOutputError):
        decode_message(raw)


def test_truncated_tuple_is_an_error_not_a_short_row() -> None:
    raw = b"I" + struct.pack(">I", 1) + b"N" + struct.pack(">H", 3) + text("1")
    with pytest.raises(PgOutputError):
        decode_message(raw)


# --- the unchanged-TOAST sentinel ---------------------------------------------------------------


def test_unchanged_toast_is_a_singleton_distinct_from_null() -> None:
    assert UNCHANGED_TOAST is not None
    assert UNCHANGED_TOAST != ""
    assert repr(UNCHANGED_TOAST) == "UNCHANGED_TOAST"
    assert type(UNCHANGED_TOAST)() is UNCHANGED_TOAST
    assert pickle.loads(pickle.dumps(UNCHANGED_TOAST)) is UNCHANGED_TOAST
    with pytest.raises(TypeError):
        bool(UNCHANGED_TOAST)


# --- replication protocol wrapper --------------------------------------------------------------


def test_xlogdata_wraps_one_pgoutput_message() -> None:
    inner = b"C" + struct.pack(">BQQq", 0, 100, 148, 5)
    raw = b"w" + struct.pack(">QQq", 100, 200, 300) + inner
    msg = decode_replication_message(memoryview(raw))
    assert isinstance(msg, XLogData)
    assert (msg.start_lsn, msg.end_lsn, msg.send_time) == (100, 200, 300)
    assert bytes(msg.payload) == inner
    assert decode_message(msg.payload) == Commit(0, 100, 148, 5)


@pytest.mark.parametrize("flag", [0, 1])
def test_primary_keepalive(flag: int) -> None:
    raw = b"k" + struct.pack(">QqB", 0xABCDEF, 42, flag)
    assert decode_replication_message(raw) == PrimaryKeepalive(0xABCDEF, 42, bool(flag))


def test_unknown_or_truncated_replication_messages() -> None:
    for raw in (b"", b"x123", b"k\0\0"):
        with pytest.raises(PgOutputError):
            decode_replication_message(raw)


def test_standby_status_update_layout() -> None:
    raw = encode_standby_status(30, 20, 10, send_time=99, reply_requested=True)
    assert len(raw) == 34
    assert struct.unpack(">cQQQqB", raw) == (b"r", 30, 20, 10, 99, 1)
    now = struct.unpack(">cQQQqB", encode_standby_status(1, 1, 1))[4]
    assert abs(now - pg_now()) < 5_000_000


def test_protocol_time_conversions() -> None:
    assert pg_time_to_datetime(0) == datetime(2000, 1, 1, tzinfo=UTC)
    moment = datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    assert pg_time_to_datetime(datetime_to_pg_time(moment)) == moment
    assert pg_time_to_datetime(-1) == datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


# --- LSNs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text_lsn", "value"),
    [("0/0", 0), ("16/B374D848", 0x16_B374D848), ("FFFFFFFF/FFFFFFFF", 2**64 - 1), ("0/1", 1)],
)
def test_lsn_round_trip(text_lsn: str, value: int) -> None:
    assert parse_lsn(text_lsn) == value
    assert format_lsn(value) == text_lsn
    assert parse_lsn(text_lsn.lower()) == value


@pytest.mark.parametrize("bad", ["", "16", "/1", "1/", "G/1", "123456789/0", "1/2/3"])
def test_lsn_rejects_garbage(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_lsn(bad)


def test_format_lsn_range() -> None:
    with pytest.raises(ValueError):
        format_lsn(-1)
    with pytest.raises(ValueError):
        format_lsn(2**64)

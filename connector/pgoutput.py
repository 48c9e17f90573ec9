"""Decoder for the pgoutput logical replication protocol: bytes in, typed messages out.

This module is protocol only. It knows nothing of sockets, Kafka, vectorizers or when an LSN may
be confirmed; :mod:`connector.replication` moves the bytes and the connector decides what they
mean. Everything here is testable on byte strings alone.

Two layers are decoded:

* the streaming replication wrapper (CopyBoth data): ``XLogData`` (``'w'``) carrying one pgoutput
  message, ``PrimaryKeepalive`` (``'k'``), and the ``StandbyStatusUpdate`` (``'r'``) we *encode*
  to report progress;
* the pgoutput messages themselves, protocol version 1 (Begin, Commit, Origin, Relation, Type,
  Insert, Update, Delete, Truncate, Message) plus the version 2 streaming messages (Stream
  Start/Stop/Commit/Abort, and the transaction id that DML messages carry inside a streamed
  block). Version 3 two-phase messages are rejected with :class:`UnsupportedMessageError`: the
  connector never asks for ``two_phase``, so seeing one means the slot was set up by someone else.

Column values arrive as text (``'t'``), binary (``'b'``, only with the ``binary`` option), NULL
(``'n'``) or "unchanged TOAST" (``'u'``). The last one means the value was not changed by an
update and was not sent: it is the distinct sentinel :data:`UNCHANGED_TOAST`, never ``None``,
because ``None`` is a real NULL and confusing the two would erase data downstream.

Text values are decoded as UTF-8 (the connector refuses databases with another encoding).
Timestamps stay raw ints (microseconds since 2000-01-01 UTC); :func:`pg_time_to_datetime`
converts. LSNs are ints (see :mod:`pgai_orm.lsn`).

Speed: one precompiled ``struct.Struct`` per fixed layout, ``unpack_from`` at offsets, dispatch
on the first byte through a dict, slotted dataclasses. That keeps the pure-Python decoder well
ahead of the walsender that feeds it (``bench/slot_read.py`` times it alone).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal, TypeAlias

from pgai_orm.errors import VectorizerError

__all__ = [
    "UNCHANGED_TOAST",
    "Begin",
    "Column",
    "Commit",
    "Delete",
    "Insert",
    "Message",
    "Origin",
    "PgOutputError",
    "PgOutputMessage",
    "PrimaryKeepalive",
    "Relation",
    "ReplicationMessage",
    "StreamAbort",
    "StreamCommit",
    "StreamStart",
    "StreamStop",
    "Truncate",
    "Type",
    "UnchangedToast",
    "UnsupportedMessageError",
    "Update",
    "Value",
    "XLogData",
    "datetime_to_pg_time",
    "decode_message",
    "decode_replication_message",
    "encode_standby_status",
    "pg_now",
    "pg_time_to_datetime",
]


class PgOutputError(VectorizerError, ValueError):
    """The bytes are not a well-formed message of the protocol (truncated, unknown tag...)."""


class UnsupportedMessageError(PgOutputError):
    """A well-known message this decoder deliberately does not handle (two-phase commit)."""


class UnchangedToast:
    """Type of :data:`UNCHANGED_TOAST`; there is exactly one instance."""

    __slots__ = ()
    _instance: UnchangedToast | None = None

    def __new__(cls) -> UnchangedToast:  # a singleton: returns the one instance
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED_TOAST"

    def __reduce__(self) -> str:
        return "UNCHANGED_TOAST"

    def __bool__(self) -> bool:
        # Falsy would invite `if value:` bugs that treat it like NULL or "". Make such code fail loudly.
        raise TypeError("UNCHANGED_TOAST has no truth value; compare with `is UNCHANGED_TOAST`")


UNCHANGED_TOAST: Final = UnchangedToast()
"""Marker for a column whose out-of-line (TOAST) value an update did not change and did not send."""

Value: TypeAlias = str | bytes | None | UnchangedToast
"""One column of a tuple: text (``str``), binary (``bytes``), NULL (``None``) or UNCHANGED_TOAST."""

# --- pgoutput messages -------------------------------------------------------------------------


@dataclass(slots=True)
class Column:
    """One column of a :class:`Relation`, in the order tuples carry values."""

    name: str
    type_oid: int
    type_modifier: int
    is_key: bool  # part of the replica identity (the primary key under REPLICA IDENTITY DEFAULT)


@dataclass(slots=True)
class Begin:
    final_lsn: int  # LSN of the transaction's commit record
    commit_time: int  # microseconds since 2000-01-01 UTC
    xid: int


@dataclass(slots=True)
class Commit:
    flags: int
    commit_lsn: int
    end_lsn: int  # the LSN just past the commit: what to confirm once the transaction is handled
    commit_time: int


@dataclass(slots=True)
class Origin:
    commit_lsn: int
    name: str


@dataclass(slots=True)
class Relation:
    """Describes a table before its first change in a session (and again after DDL)."""

    relation_id: int
    namespace: str  # empty for pg_catalog
    name: str
    replica_identity: str  # 'd' default, 'n' nothing, 'f' full, 'i' index
    columns: tuple[Column, ...]
    xid: int | None = None  # only inside a streamed transaction (protocol 2+)


@dataclass(slots=True)
class Type:
    """Names a non-builtin data type (enum, domain, composite, extension type) by OID."""

    type_oid: int
    namespace: str
    name: str
    xid: int | None = None


@dataclass(slots=True)
class Insert:
    relation_id: int
    new: tuple[Value, ...]
    xid: int | None = None


@dataclass(slots=True)
class Update:
    """An update. ``old`` is present only when the key changed (``old_kind='K'``: key columns,
    others NULL) or under REPLICA IDENTITY FULL (``old_kind='O'``: the whole old row)."""

    relation_id: int
    new: tuple[Value, ...]
    old: tuple[Value, ...] | None = None
    old_kind: Literal["K", "O"] | None = None
    xid: int | None = None


@dataclass(slots=True)
class Delete:
    """A delete. ``old`` holds key columns only (``'K'``, others NULL) or the full row (``'O'``)."""

    relation_id: int
    old: tuple[Value, ...]
    old_kind: Literal["K", "O"]
    xid: int | None = None


@dataclass(slots=True)
class Truncate:
    relation_ids: tuple[int, ...]
    cascade: bool
    restart_identity: bool
    xid: int | None = None


@dataclass(slots=True)
class Message:
    """A ``pg_logical_emit_message`` payload (sent only with the ``messages`` option)."""

    transactional: bool
    lsn: int
    prefix: str
    content: bytes
    xid: int | None = None


@dataclass(slots=True)
class StreamStart:
    xid: int
    first_segment: bool


@dataclass(slots=True)
class StreamStop:
    pass


@dataclass(slots=True)
class StreamCommit:
    xid: int
    flags: int
    commit_lsn: int
    end_lsn: int
    commit_time: int


@dataclass(slots=True)
class StreamAbort:
    xid: int
    subxid: int
    abort_lsn: int | None = None  # protocol 4 with parallel streaming only
    abort_time: int | None = None


PgOutputMessage: TypeAlias = (
    Begin | Commit | Origin | Relation | Type | Insert | Update | Delete | Truncate | Message
    | StreamStart | StreamStop | StreamCommit | StreamAbort
)

# --- replication protocol wrapper ---------------------------------------------------------------


@dataclass(slots=True)
class XLogData:
    """One chunk of WAL data: here, exactly one pgoutput message in ``payload``."""

    start_lsn: int  # WAL position of this data (0 for messages that have none, like Commit's)
    end_lsn: int  # current end of WAL on the server
    send_time: int
    payload: bytes | bytearray | memoryview


@dataclass(slots=True)
class PrimaryKeepalive:
    wal_end: int
    send_time: int
    reply_requested: bool  # the server disconnects us if we do not answer soon


ReplicationMessage: TypeAlias = XLogData | PrimaryKeepalive

# --- time --------------------------------------------------------------------------------------

_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_PG_EPOCH_UNIX_US = 946_684_800_000_000


def pg_time_to_datetime(us: int) -> datetime:
    """Protocol timestamp (microseconds since 2000-01-01 UTC) to an aware UTC datetime."""
    return _PG_EPOCH + timedelta(microseconds=us)


def datetime_to_pg_time(value: datetime) -> int:
    """Aware datetime to a protocol timestamp."""
    delta = value - _PG_EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def pg_now() -> int:
    """The current time as a protocol timestamp (for status updates)."""
    return time.time_ns() // 1000 - _PG_EPOCH_UNIX_US


# --- decoding ----------------------------------------------------------------------------------

_Buf: TypeAlias = bytes | bytearray | memoryview

_I8 = struct.Struct(">b")
_U16 = struct.Struct(">H")
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_BEGIN = struct.Struct(">QqI")  # final lsn, commit time, xid
_COMMIT = struct.Struct(">BQQq")  # flags, commit lsn, end lsn, commit time
_REL_HEAD = struct.Struct(">I")
_COL_TAIL = struct.Struct(">Ii")  # type oid, typmod
_MSG_HEAD = struct.Struct(">BQ")  # flags, lsn
_TRUNC_HEAD = struct.Struct(">IB")  # relation count, options
_STREAM_START = struct.Struct(">IB")
_STREAM_COMMIT = struct.Struct(">IBQQq")
_STREAM_ABORT = struct.Struct(">II")
_STREAM_ABORT_V4 = struct.Struct(">IIQq")
_XLOG = struct.Struct(">QQq")
_KEEPALIVE = struct.Struct(">QqB")
_STATUS = struct.Struct(">cQQQqB")

_T, _N, _U, _B = ord("t"), ord("n"), ord("u"), ord("b")
_K, _O, _NEW = ord("K"), ord("O"), ord("N")


def _cstring(buf: _Buf, pos: int) -> tuple[str, int]:
    """Read a NUL-terminated UTF-8 string; return it and the position after the NUL."""
    if isinstance(buf, memoryview):
        end = bytes(buf[pos:]).index(0) + pos  # memoryview has no index(); names are short
    else:
        end = buf.index(0, pos)
    return str(buf[pos:end], "utf-8"), end + 1


def _tuple(buf: _Buf, pos: int) -> tuple[tuple[Value, ...], int]:
    """Read TupleData at ``pos``: the column count, then one tagged value per column."""
    (count,) = _U16.unpack_from(buf, pos)
    pos += 2
    values: list[Value] = []
    append = values.append
    unpack_len = _U32.unpack_from
    for _ in range(count):
        kind = buf[pos]
        pos += 1
        if kind == _T:
            (length,) = unpack_len(buf, pos)
            pos += 4
            end = pos + length
            append(str(buf[pos:end], "utf-8"))
            pos = end
        elif kind == _N:
            append(None)
        elif kind == _U:
            append(UNCHANGED_TOAST)
        elif kind == _B:
            (length,) = unpack_len(buf, pos)
            pos += 4
            end = pos + length
            append(bytes(buf[pos:end]))
            pos = end
        else:
            raise PgOutputError(f"unknown tuple value kind {chr(kind)!r} at offset {pos - 1}")
    if pos > len(buf):  # slicing past the end does not fail by itself
        raise PgOutputError("tuple data shorter than its value lengths")
    return tuple(values), pos


def _begin(buf: _Buf, pos: int, xid: int | None) -> Begin:
    return Begin(*_BEGIN.unpack_from(buf, pos))


def _commit(buf: _Buf, pos: int, xid: int | None) -> Commit:
    return Commit(*_COMMIT.unpack_from(buf, pos))


def _origin(buf: _Buf, pos: int, xid: int | None) -> Origin:
    (lsn,) = _U64.unpack_from(buf, pos)
    name, _ = _cstring(buf, pos + 8)
    return Origin(lsn, name)


def _relation(buf: _Buf, pos: int, xid: int | None) -> Relation:
    (relid,) = _REL_HEAD.unpack_from(buf, pos)
    namespace, pos = _cstring(buf, pos + 4)
    name, pos = _cstring(buf, pos)
    identity = chr(buf[pos])
    (ncols,) = _U16.unpack_from(buf, pos + 1)
    pos += 3
    columns = []
    for _ in range(ncols):
        flags = buf[pos]
        colname, pos = _cstring(buf, pos + 1)
        type_oid, typmod = _COL_TAIL.unpack_from(buf, pos)
        pos += 8
        columns.append(Column(colname, type_oid, typmod, bool(flags & 1)))
    return Relation(relid, namespace, name, identity, tuple(columns), xid)


def _type(buf: _Buf, pos: int, xid: int | None) -> Type:
    (oid,) = _U32.unpack_from(buf, pos)
    namespace, pos = _cstring(buf, pos + 4)
    name, _ = _cstring(buf, pos)
    return Type(oid, namespace, name, xid)


def _insert(buf: _Buf, pos: int, xid: int | None) -> Insert:
    (relid,) = _U32.unpack_from(buf, pos)
    if buf[pos + 4] != _NEW:
        raise PgOutputError(f"insert: expected 'N' before the new tuple, got {chr(buf[pos + 4])!r}")
    new, _ = _tuple(buf, pos + 5)
    return Insert(relid, new, xid)


def _update(buf: _Buf, pos: int, xid: int | None) -> Update:
    (relid,) = _U32.unpack_from(buf, pos)
    pos += 4
    kind = buf[pos]
    old = None
    old_kind: Literal["K", "O"] | None = None
    if kind in (_K, _O):
        old_kind = "K" if kind == _K else "O"
        old, pos = _tuple(buf, pos + 1)
        kind = buf[pos]
    if kind != _NEW:
        raise PgOutputError(f"update: expected 'N' before the new tuple, got {chr(kind)!r}")
    new, _ = _tuple(buf, pos + 1)
    return Update(relid, new, old, old_kind, xid)


def _delete(buf: _Buf, pos: int, xid: int | None) -> Delete:
    (relid,) = _U32.unpack_from(buf, pos)
    kind = buf[pos + 4]
    if kind != _K and kind != _O:
        raise PgOutputError(f"delete: expected 'K' or 'O' before the old tuple, got {chr(kind)!r}")
    old, _ = _tuple(buf, pos + 5)
    return Delete(relid, old, "K" if kind == _K else "O", xid)


def _truncate(buf: _Buf, pos: int, xid: int | None) -> Truncate:
    count, options = _TRUNC_HEAD.unpack_from(buf, pos)
    relids = struct.unpack_from(f">{count}I", buf, pos + 5)
    return Truncate(tuple(relids), bool(options & 1), bool(options & 2), xid)


def _message(buf: _Buf, pos: int, xid: int | None) -> Message:
    flags, lsn = _MSG_HEAD.unpack_from(buf, pos)
    prefix, pos = _cstring(buf, pos + 9)
    (length,) = _U32.unpack_from(buf, pos)
    pos += 4
    if pos + length > len(buf):
        raise PgOutputError("message: content shorter than its length")
    return Message(bool(flags & 1), lsn, prefix, bytes(buf[pos : pos + length]), xid)


def _stream_start(buf: _Buf, pos: int, xid: int | None) -> StreamStart:
    sxid, first = _STREAM_START.unpack_from(buf, pos)
    return StreamStart(sxid, first == 1)


def _stream_stop(buf: _Buf, pos: int, xid: int | None) -> StreamStop:
    return StreamStop()


def _stream_commit(buf: _Buf, pos: int, xid: int | None) -> StreamCommit:
    return StreamCommit(*_STREAM_COMMIT.unpack_from(buf, pos))


def _stream_abort(buf: _Buf, pos: int, xid: int | None) -> StreamAbort:
    if len(buf) - pos >= _STREAM_ABORT_V4.size:
        return StreamAbort(*_STREAM_ABORT_V4.unpack_from(buf, pos))
    return StreamAbort(*_STREAM_ABORT.unpack_from(buf, pos))


def _two_phase(buf: _Buf, pos: int, xid: int | None) -> PgOutputMessage:
    raise UnsupportedMessageError(
        f"two-phase message {chr(buf[0])!r} (protocol 3): this connector does not enable two_phase"
    )


_Parser = Callable[[_Buf, int, "int | None"], PgOutputMessage]

_PARSERS: dict[int, _Parser] = {
    ord("B"): _begin,
    ord("C"): _commit,
    ord("O"): _origin,
    ord("R"): _relation,
    ord("Y"): _type,
    ord("I"): _insert,
    ord("U"): _update,
    ord("D"): _delete,
    ord("T"): _truncate,
    ord("M"): _message,
    ord("S"): _stream_start,
    ord("E"): _stream_stop,
    ord("c"): _stream_commit,
    ord("A"): _stream_abort,
    ord("b"): _two_phase,  # Begin Prepare
    ord("P"): _two_phase,  # Prepare
    ord("K"): _two_phase,  # Commit Prepared
    ord("r"): _two_phase,  # Rollback Prepared
    ord("p"): _two_phase,  # Stream Prepare
}

# Messages that carry a leading xid when sent inside a streamed transaction (protocol 2+).
_XID_IN_STREAM = frozenset(ord(c) for c in "RYIUDTM")


def decode_message(buf: _Buf, *, in_stream: bool = False) -> PgOutputMessage:
    """Decode one pgoutput message.

    ``in_stream`` says the message sits between Stream Start and Stream Stop, where DML,
    Relation, Type and Message carry the transaction id first (only with protocol 2 and
    ``streaming``, which the connector does not ask for). Raises :class:`PgOutputError` on
    malformed input.
    """
    if not buf:
        raise PgOutputError("empty pgoutput message")
    tag = buf[0]
    parser = _PARSERS.get(tag)
    if parser is None:
        raise PgOutputError(f"unknown pgoutput message type {chr(tag)!r}")
    try:
        if in_stream and tag in _XID_IN_STREAM:
            (xid,) = _U32.unpack_from(buf, 1)
            return parser(buf, 5, xid)
        return parser(buf, 1, None)
    except (struct.error, IndexError, ValueError) as exc:
        if isinstance(exc, PgOutputError):
            raise
        raise PgOutputError(f"malformed pgoutput message {chr(tag)!r}: {exc}") from exc


def decode_replication_message(buf: _Buf) -> ReplicationMessage:
    """Decode one CopyData payload of a replication stream: XLogData or Primary keepalive.

    The XLogData payload is a zero-copy ``memoryview`` slice when given a memoryview.
    """
    if not buf:
        raise PgOutputError("empty replication message")
    tag = buf[0]
    try:
        if tag == 0x77:  # 'w'
            start, end, sent = _XLOG.unpack_from(buf, 1)
            return XLogData(start, end, sent, buf[25:])
        if tag == 0x6B:  # 'k'
            wal_end, sent, reply = _KEEPALIVE.unpack_from(buf, 1)
            return PrimaryKeepalive(wal_end, sent, reply == 1)
    except struct.error as exc:
        raise PgOutputError(f"malformed replication message {chr(tag)!r}: {exc}") from exc
    raise PgOutputError(f"unknown replication message type {chr(tag)!r}")


def encode_standby_status(
    written_lsn: int,
    flushed_lsn: int,
    applied_lsn: int,
    *,
    send_time: int | None = None,
    reply_requested: bool = False,
) -> bytes:
    """Encode a Standby status update (``'r'``).

    For logical slots the server moves ``confirmed_flush_lsn`` to ``flushed_lsn``: report there
    only what is durably handled downstream. ``send_time`` defaults to now.
    """
    return _STATUS.pack(
        b"r",
        written_lsn,
        flushed_lsn,
        applied_lsn,
        pg_now() if send_time is None else send_time,
        1 if reply_requested else 0,
    )

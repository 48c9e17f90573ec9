"""The replication stream: a logical slot read over the streaming replication protocol.

One small interface, :class:`ReplicationStream`, hides the driver. It moves bytes and LSNs and
nothing else: it creates the slot (optionally exporting a snapshot), starts pgoutput on it,
hands back XLogData messages in bounded batches, answers the server's keepalives, and reports
the flush LSN *it is told*. Deciding which LSN is safe to confirm (after Kafka acknowledged
everything up to a commit) belongs to the connector's main loop, not here.

Driver: psycopg 3, through the low-level ``pgconn`` (``replication=database`` connection,
``START_REPLICATION``, ``get_copy_data``), where replication commands go through the simple
query protocol that a walsender requires. ``bench/slot_read.py`` compares it with psycopg2 and
``pg_recvlogical``: wall time is bound by the server (the walsender decoding WAL) and equal for
both drivers; psycopg2 spends about a microsecond less client CPU per row, which is noise
against a Kafka produce, so the project keeps one driver stack.

Session settings. The walsender renders column values with the connection's settings, so the
stream forces the ones :mod:`connector.values` assumes (:data:`connector.values.SESSION_OPTIONS`:
ISO dates in UTC, ISO 8601 intervals, round-trip floats, hex bytea). The database must be UTF-8.

Exported snapshots. ``create_slot(export_snapshot=True)`` returns the name of a snapshot that
shows the database exactly at the slot's consistent point. It stays importable only while this
replication connection executes nothing else: import it first (on another connection:
``BEGIN ISOLATION LEVEL REPEATABLE READ; SET TRANSACTION SNAPSHOT '<name>'``), then call
:meth:`ReplicationStream.start`. Once imported, the importing transaction keeps it for itself.
"""

from __future__ import annotations

import contextlib
import re
import select
import time
from collections.abc import Sequence
from types import TracebackType
from typing import NamedTuple, Self

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from connector.pgoutput import (
    PrimaryKeepalive,
    XLogData,
    decode_replication_message,
    encode_standby_status,
)
from connector.values import SESSION_OPTIONS
from pgai_orm.errors import VectorizerError
from pgai_orm.lsn import Lsn, format_lsn, parse_lsn

__all__ = ["CreatedSlot", "ReplicationError", "ReplicationStream", "StreamSettingsError"]

_SLOT_NAME = re.compile(r"[a-z0-9_]{1,63}")  # what Postgres itself accepts for slot names


class ReplicationError(VectorizerError):
    """The server refused a replication command or ended the stream."""


class StreamSettingsError(ReplicationError, ValueError):
    """A slot name or publication list the server would refuse."""


class CreatedSlot(NamedTuple):
    consistent_lsn: Lsn  # changes committed after this LSN are streamed; the snapshot shows the rest
    snapshot_name: str | None  # exported snapshot, or None when not asked for


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class ReplicationStream:
    """A pgoutput replication stream on one slot.

    Usage::

        with ReplicationStream.open(dsn, "vectorizer_slot", ["vectorizer_1"]) as stream:
            slot = stream.create_slot()          # once, when the slot does not exist yet
            ...import slot.snapshot_name elsewhere...
            stream.start()                       # from the slot's confirmed position
            while True:
                for msg in stream.read_batch(max_messages=5000, timeout=1.0):
                    ...decode msg.payload, publish...
                stream.send_feedback(lsn_acknowledged_downstream)

    Not thread-safe: one thread reads and sends feedback.
    """

    def __init__(
        self,
        pgconn: pq.abc.PGconn,
        slot_name: str,
        publication_names: Sequence[str],
        *,
        protocol_version: int = 1,
        messages: bool = False,
        status_interval: float = 10.0,
    ) -> None:
        if not _SLOT_NAME.fullmatch(slot_name):
            raise StreamSettingsError(f"slot_name: use 1-63 lower-case letters, digits or '_', got {slot_name!r}")
        if not publication_names:
            raise StreamSettingsError("publication_names: at least one publication is needed")
        self._pg = pgconn
        self.slot_name = slot_name
        self.publication_names = tuple(publication_names)
        self.protocol_version = protocol_version
        self.messages = messages
        self.status_interval = status_interval
        self._streaming = False
        self._received_lsn: Lsn = 0  # highest WAL position seen (written)
        self._flushed_lsn: Lsn = 0  # highest position the caller confirmed (flushed)
        self._wal_end: Lsn = 0
        self._last_status = 0.0
        self._closed = False

    @classmethod
    def open(
        cls,
        dsn: str,
        slot_name: str,
        publication_names: Sequence[str],
        *,
        protocol_version: int = 1,
        messages: bool = False,
        status_interval: float = 10.0,
    ) -> ReplicationStream:
        """Connect a ``replication=database`` session to ``dsn`` with the value settings forced
        (``options`` given in ``dsn`` are kept, e.g. ``-c wal_sender_timeout=...``)."""
        given = conninfo_to_dict(dsn).get("options")
        options = f"{given} {SESSION_OPTIONS}" if given else SESSION_OPTIONS  # ours win: later -c
        conninfo = make_conninfo(dsn, replication="database", options=options)
        pgconn = pq.PGconn.connect(conninfo.encode())
        if pgconn.status != pq.ConnStatus.OK:
            message = pgconn.get_error_message()
            pgconn.finish()
            raise ReplicationError(f"cannot open replication connection: {message}")
        encoding = pgconn.parameter_status(b"server_encoding")
        if encoding != b"UTF8":
            pgconn.finish()
            raise ReplicationError(f"database encoding must be UTF8, is {encoding!r}")
        return cls(
            pgconn,
            slot_name,
            publication_names,
            protocol_version=protocol_version,
            messages=messages,
            status_interval=status_interval,
        )

    # --- commands (only before start) ---------------------------------------------------------

    def _command(self, sql: str) -> pq.abc.PGresult:
        if self._streaming:
            raise ReplicationError("the stream is started: no other command can run on it")
        result = self._pg.exec_(sql.encode())
        if result.status not in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK):
            raise ReplicationError(f"{sql.split(' ', 1)[0]} failed: {result.get_error_message()}")
        return result

    def create_slot(self, *, export_snapshot: bool = True, temporary: bool = False) -> CreatedSlot:
        """Create the slot (pgoutput) and return its consistent LSN and exported snapshot name.

        The snapshot dies with the next command on this connection (``start`` included), so
        import it first. Raises :class:`ReplicationError` if the slot already exists.
        """
        snapshot = "export" if export_snapshot else "nothing"
        sql = (
            f"CREATE_REPLICATION_SLOT {self.slot_name} {'TEMPORARY ' if temporary else ''}"
            f"LOGICAL pgoutput (SNAPSHOT '{snapshot}')"
        )
        result = self._command(sql)
        lsn_text = result.get_value(0, 1)
        name = result.get_value(0, 2)
        if lsn_text is None:
            raise ReplicationError(f"CREATE_REPLICATION_SLOT {self.slot_name} returned no consistent point")
        return CreatedSlot(parse_lsn(lsn_text.decode()), name.decode() if name else None)

    def start(self, start_lsn: Lsn = 0) -> None:
        """Start streaming. ``0`` resumes from the slot's ``confirmed_flush_lsn`` (the usual)."""
        pubs = ",".join(_quote_ident(p) for p in self.publication_names)
        options = [
            f"proto_version '{int(self.protocol_version)}'",
            f"publication_names {_quote_literal(pubs)}",
        ]
        if self.messages:
            options.append("messages 'true'")
        sql = (
            f"START_REPLICATION SLOT {self.slot_name} LOGICAL {format_lsn(start_lsn)} "
            f"({', '.join(options)})"
        )
        if self._streaming:
            raise ReplicationError("the stream is already started")
        result = self._pg.exec_(sql.encode())
        if result.status != pq.ExecStatus.COPY_BOTH:
            raise ReplicationError(f"START_REPLICATION failed: {result.get_error_message()}")
        self._streaming = True
        self._flushed_lsn = max(self._flushed_lsn, start_lsn)
        self._last_status = time.monotonic()

    # --- streaming ----------------------------------------------------------------------------

    @property
    def wal_end(self) -> Lsn:
        """The WAL position the server reported in its latest keepalive (everything before it has
        been sent). When every message received so far is handled downstream, confirming it lets
        the slot release WAL even if no published table changes (pg_recvlogical does the same)."""
        return self._wal_end

    @property
    def flushed_lsn(self) -> Lsn:
        """The highest LSN reported as flushed to the server."""
        return self._flushed_lsn

    def read_batch(
        self, max_messages: int = 1000, timeout: float = 1.0, linger: float = 0.0
    ) -> list[XLogData]:
        """Return up to ``max_messages`` XLogData messages, waiting at most ``timeout`` seconds.

        Once a message is there, returns when no more is readable, or, with ``linger`` > 0,
        keeps collecting for up to ``linger`` seconds after the first message (bigger batches
        for the producer at the price of that much latency). Keepalives are answered here.
        An empty list means nothing arrived in time.
        """
        if not self._streaming:
            raise ReplicationError("call start() before read_batch()")
        try:
            return self._read_batch(max_messages, timeout, linger)
        except psycopg.Error as exc:  # connection lost, server terminated us...
            self._streaming = False
            raise ReplicationError(f"replication stream broken: {exc}") from exc

    def _read_batch(self, max_messages: int, timeout: float, linger: float) -> list[XLogData]:
        pg = self._pg
        out: list[XLogData] = []
        append = out.append
        decode = decode_replication_message
        deadline = time.monotonic() + timeout
        linger_until = 0.0
        tried_socket = False
        while len(out) < max_messages:
            nbytes, data = pg.get_copy_data(1)
            if nbytes > 0:
                tried_socket = False
                match decode(data):
                    case XLogData() as xlog:
                        if not out and linger > 0:
                            linger_until = time.monotonic() + linger
                        append(xlog)
                        if xlog.start_lsn > self._received_lsn:
                            self._received_lsn = xlog.start_lsn
                    case PrimaryKeepalive() as keepalive:
                        self._wal_end = max(self._wal_end, keepalive.wal_end)
                        if keepalive.reply_requested:
                            self._send_status()
                continue
            if nbytes == -1:
                if out:  # hand over what arrived; the next call reports the end
                    break
                self._streaming = False
                result = pg.get_result()
                detail = result.get_error_message() if result is not None else ""
                raise ReplicationError(f"server ended the replication stream {detail}".strip())
            # Nothing complete in libpq's buffer: read what the socket already has, once.
            if not tried_socket:
                tried_socket = True
                pg.consume_input()
                continue
            now = time.monotonic()
            if out:
                if now >= linger_until:
                    break
                remaining = linger_until - now
            else:
                if now - self._last_status >= self.status_interval:
                    self._send_status()
                remaining = deadline - now
            if remaining <= 0:
                break
            select.select([pg.socket], [], [], min(remaining, self.status_interval))
            pg.consume_input()
        if time.monotonic() - self._last_status >= self.status_interval:
            self._send_status()
        return out

    def send_feedback(self, flush_lsn: Lsn) -> None:
        """Report ``flush_lsn`` as durably handled; the server advances ``confirmed_flush_lsn``.

        Never goes backwards: a lower value than already reported is ignored. Sent at once.
        """
        self._flushed_lsn = max(self._flushed_lsn, flush_lsn)
        try:
            self._send_status()
        except psycopg.Error as exc:
            self._streaming = False
            raise ReplicationError(f"replication stream broken: {exc}") from exc

    def _send_status(self) -> None:
        if not self._streaming:
            return
        flushed = self._flushed_lsn
        written = max(self._received_lsn, flushed)
        self._pg.put_copy_data(encode_standby_status(written, flushed, flushed))
        self._pg.flush()
        self._last_status = time.monotonic()

    # --- lifetime -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection. The slot stays (and keeps its WAL) until dropped."""
        if self._closed:
            return
        self._closed = True
        # The connection may be broken already; closing must still happen.
        with contextlib.suppress(psycopg.Error):
            if self._streaming:
                self._streaming = False
                self._pg.put_copy_end()
                self._pg.flush()
        self._pg.finish()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

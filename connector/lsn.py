"""Log sequence numbers (LSNs) as plain ints.

Postgres writes an LSN as two hex halves ``"16/B374D848"``; on the wire (pgoutput, the
replication protocol) it is an unsigned 64-bit integer. The connector compares, stores and
confirms LSNs, so it keeps them as ``int`` (cheap, ordered, JSON-able) and converts to the text
form only at the edges: SQL (``pg_lsn`` columns, ``pg_replication_slots``), replication
commands and logs.
"""

from __future__ import annotations

Lsn = int
"""An LSN: an unsigned 64-bit position in the WAL. ``0`` means "none yet"."""

INVALID_LSN: Lsn = 0
_MAX = (1 << 64) - 1


def parse_lsn(text: str) -> Lsn:
    """Turn Postgres' ``"XXX/YYY"`` text form into an int; raise ``ValueError`` on anything else."""
    high, sep, low = text.strip().partition("/")
    if not sep or not high or not low or len(high) > 8 or len(low) > 8:
        raise ValueError(f"not an LSN: {text!r}")
    try:
        return (int(high, 16) << 32) | int(low, 16)
    except ValueError:
        raise ValueError(f"not an LSN: {text!r}") from None


def format_lsn(lsn: Lsn) -> str:
    """Write an int LSN the way Postgres does (upper-case hex, no padding): ``"16/B374D848"``."""
    if not 0 <= lsn <= _MAX:
        raise ValueError(f"LSN out of range: {lsn}")
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"

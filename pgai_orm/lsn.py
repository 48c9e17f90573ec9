"""Log sequence numbers (LSNs) as plain ints, and the one text form every log and report uses.

Postgres writes an LSN as two hex halves ``"16/B374D848"``; on the wire (pgoutput, the
replication protocol, the event contract) it is an unsigned 64-bit integer. The connector compares, stores and
confirms LSNs, so it keeps them as ``int`` (cheap, ordered, JSON-able) and converts to the text
form only at the edges: SQL (``pg_lsn`` columns, ``pg_replication_slots``), replication
commands and logs.
"""

from __future__ import annotations

from pgai_orm.errors import VectorizerError

__all__ = ["INVALID_LSN", "Lsn", "LsnError", "format_lsn", "parse_lsn"]

Lsn = int
"""An LSN: an unsigned 64-bit position in the WAL. ``0`` means "none yet"."""

INVALID_LSN: Lsn = 0
_MAX = (1 << 64) - 1


class LsnError(VectorizerError, ValueError):
    """Text that is not an LSN, or an int outside the 64-bit range."""


def parse_lsn(text: str) -> Lsn:
    """Turn Postgres' ``"XXX/YYY"`` text form into an int; raise :class:`LsnError` on anything else."""
    high, sep, low = text.strip().partition("/")
    if not sep or not high or not low or len(high) > 8 or len(low) > 8:
        raise LsnError(f"not an LSN: {text!r}")
    try:
        return (int(high, 16) << 32) | int(low, 16)
    except ValueError:
        raise LsnError(f"not an LSN: {text!r}") from None


def format_lsn(lsn: Lsn) -> str:
    """Write an int LSN the way Postgres does (upper-case hex, no padding): ``"16/B374D848"``."""
    if not 0 <= lsn <= _MAX:
        raise LsnError(f"LSN out of range: {lsn}")
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"

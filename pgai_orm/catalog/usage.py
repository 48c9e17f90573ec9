"""``vectorizer.usage``: what embedding cost, per vectorizer config version, provider and model.

The worker adds each batch's tokens, requests and 429s (from ``BatchReport``, which sums what the
embedder counted) in the batch's own transaction, so the totals move with the rows they paid
for; ``vectorizer status`` reads them (:mod:`pgai_orm.catalog.report`). Rows are increments of
one key (an upsert), never a log of batches, so the table stays one row per version and model.
``RECORD_USAGE_SQL`` serves sync and async connections alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["RECORD_USAGE_SQL", "UsageRow", "arecord_usage", "read_usage", "record_usage"]

RECORD_USAGE_SQL = (
    "INSERT INTO vectorizer.usage AS u"
    " (vectorizer_id, version, provider, model, tokens, requests, rate_limited)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (vectorizer_id, version, provider, model) DO UPDATE"
    " SET tokens = u.tokens + EXCLUDED.tokens, requests = u.requests + EXCLUDED.requests,"
    " rate_limited = u.rate_limited + EXCLUDED.rate_limited, updated_at = now()"
)
"""Params ``(vectorizer_id, version, provider, model, tokens, requests, rate_limited)``."""


@dataclass(frozen=True)
class UsageRow:
    """The totals of one config version and model since the vectorizer was created."""

    vectorizer_id: int
    version: int
    provider: str
    model: str
    tokens: int
    requests: int
    rate_limited: int
    updated_at: datetime | None


def _params(vectorizer_id: int, version: int, provider: str, model: str, tokens: int,
            requests: int, rate_limited: int) -> tuple[Any, ...] | None:
    if not (tokens or requests or rate_limited):
        return None  # nothing was embedded: no write, no row
    return (vectorizer_id, version, provider, model, tokens, requests, rate_limited)


def record_usage(conn: Any, vectorizer_id: int, version: int, provider: str, model: str, *,
                 tokens: int, requests: int, rate_limited: int = 0) -> None:
    """Add to the totals on a psycopg connection (inside the caller's transaction, if any)."""
    params = _params(vectorizer_id, version, provider, model, tokens, requests, rate_limited)
    if params is not None:
        conn.execute(RECORD_USAGE_SQL, params)


async def arecord_usage(conn: Any, vectorizer_id: int, version: int, provider: str, model: str, *,
                        tokens: int, requests: int, rate_limited: int = 0) -> None:
    """:func:`record_usage` on a psycopg ``AsyncConnection``."""
    params = _params(vectorizer_id, version, provider, model, tokens, requests, rate_limited)
    if params is not None:
        await conn.execute(RECORD_USAGE_SQL, params)


def read_usage(conn: Any, vectorizer_id: int | None = None) -> list[UsageRow]:
    """Every usage row (of one vectorizer when given), by vectorizer, version, provider, model.

    Empty on a catalog from before the table existed (``ensure_catalog`` adds it).
    """
    row = conn.execute("SELECT to_regclass('vectorizer.usage') IS NOT NULL").fetchone()
    if not (row and row[0]):
        return []
    rows = conn.execute(
        "SELECT vectorizer_id, version, provider, model, tokens, requests, rate_limited, updated_at"
        "  FROM vectorizer.usage WHERE %(id)s::int IS NULL OR vectorizer_id = %(id)s"
        " ORDER BY vectorizer_id, version, provider, model",
        {"id": vectorizer_id},
    ).fetchall()
    return [UsageRow(int(v), int(ver), p, m, int(t), int(r), int(rl), at)
            for v, ver, p, m, t, r, rl, at in rows]

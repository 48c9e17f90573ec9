"""What a search returns: :class:`SearchResult`, one per chunk or, grouped, one per parent row.

A hit carries what a caller reaches for first: the parent row, its key (``hit.id`` for a parent
keyed by ``id``: the key columns are attributes of the hit), the matching chunk text, the
vector ``distance`` and a ``score`` that is higher for a better hit in every mode.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import inspect

__all__ = ["SearchResult", "hits_from_rows", "parent_key_attributes"]


@dataclass(frozen=True, slots=True)
class SearchResult:
    """One ranked hit.

    ``embedding_row`` is the best matching chunk (a row of the store), ``parent`` the source row
    it belongs to, ``key`` the parent's primary key by attribute name (also readable as
    ``hit.<name>``). ``distance`` is the chunk's vector distance (None in keyword mode, where
    no vector is computed). ``score`` is higher for better hits: the similarity in vector mode,
    ``ts_rank`` in keyword mode, the fused reciprocal-rank score in hybrid mode; grouped by
    parent it is the parent's. ``chunks`` are the hit's chunks, best first: one per hit, or up
    to ``chunks_per_parent`` when grouped.
    """

    embedding_row: Any
    parent: Any
    distance: float | None
    score: float
    key: Mapping[str, Any]
    chunks: tuple[Any, ...]

    @property
    def chunk(self) -> str:
        """The text of the best matching chunk."""
        return str(self.embedding_row.chunk)

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup failed: the parent's key columns (``hit.id``).
        key = object.__getattribute__(self, "key") if not name.startswith("__") else {}
        if name in key:
            return key[name]
        raise AttributeError(
            f"{type(self).__name__} has no attribute {name!r} (key columns: "
            f"{', '.join(key) or 'none'}; the parent row is hit.parent)")


def parent_key_attributes(model: Any) -> list[str]:
    """The parent's attribute names of its key columns, in key order."""
    owner_mapper = inspect(model.__vectorizer__.owner)
    (constraint,) = model.__table__.foreign_key_constraints
    return [owner_mapper.get_property_by_column(fk.column).key for fk in constraint.elements]


def hits_from_rows(rows: Sequence[Any], key_attributes: Sequence[str], *,
                   grouped: bool) -> list[SearchResult]:
    """``(embedding row, parent, distance, score)`` rows -> hits.

    Grouped statements return each parent's chunks consecutively, best first; they become one
    hit whose ``embedding_row`` is the first. The identity map gives every row of one parent the
    same object, so identity tells the groups apart.
    """
    hits: list[SearchResult] = []
    chunks: list[Any] = []
    for row in rows:
        embedding_row, parent, distance, score = row[0], row[1], row[2], row[3]
        if grouped and hits and hits[-1].parent is parent:
            chunks.append(embedding_row)
            continue
        if hits:
            _close(hits, chunks)
        chunks = [embedding_row]
        key = {name: getattr(parent, name) for name in key_attributes}
        hits.append(SearchResult(embedding_row, parent,
                                 None if distance is None else float(distance),
                                 float(score), key, ()))
    if hits:
        _close(hits, chunks)
    return hits


def _close(hits: list[SearchResult], chunks: list[Any]) -> None:
    last = hits[-1]
    hits[-1] = SearchResult(last.embedding_row, last.parent, last.distance, last.score,
                            last.key, tuple(chunks))

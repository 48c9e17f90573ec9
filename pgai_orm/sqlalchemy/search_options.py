"""What a search asks for, checked once: mode, ranking knobs, grouping, filters, index settings.

Its own module because the statement builder, the session settings and the public functions
all read the same options, and every check must run before any SQL does (a bad value is a
``ValueError`` naming the argument, never a Postgres error inside the caller's transaction).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import ColumnElement

Mode = Literal["vector", "keyword", "hybrid"]
KeywordMatch = Literal["any", "all", "websearch"]
IterativeScan = Literal["off", "strict_order", "relaxed_order"]

#: Names ``distance=`` accepts: pgvector's comparator names and the short ones -> comparator.
DISTANCES: dict[str, str] = {
    "cosine": "cosine_distance",  # <=>, vector_cosine_ops
    "cosine_distance": "cosine_distance",
    "l2": "l2_distance",  # <->, vector_l2_ops
    "l2_distance": "l2_distance",
    "inner_product": "max_inner_product",  # <#>, vector_ip_ops (negated: smaller is nearer)
    "max_inner_product": "max_inner_product",
    "l1": "l1_distance",  # <+>, vector_l1_ops
    "l1_distance": "l1_distance",
}
Distance = Literal["cosine", "cosine_distance", "l2", "l2_distance", "inner_product",
                   "max_inner_product", "l1", "l1_distance"]

MODES: tuple[str, ...] = ("vector", "keyword", "hybrid")
KEYWORD_MATCHES: tuple[str, ...] = ("any", "all", "websearch")
ITERATIVE_SCANS: tuple[str, ...] = ("off", "strict_order", "relaxed_order")

Filter = ColumnElement[bool] | Sequence[ColumnElement[bool]] | None


def _positive_int(name: str, value: Any, low: int = 1, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (
            high is not None and value > high):
        bounds = f">= {low}" if high is None else f"between {low} and {high}"
        raise ValueError(f"{name}: must be an integer {bounds}, got {value!r}")
    return value


def _number(name: str, value: Any, *, non_negative: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}: must be a number, got {value!r}")
    if non_negative and value < 0:
        raise ValueError(f"{name}: must be >= 0, got {value!r}")
    return float(value)


def _choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name}: must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return str(value)


@dataclass(frozen=True)
class SearchOptions:
    """Every knob of :func:`pgai_orm.sqlalchemy.search.search`, validated on construction.

    ``distance`` is the comparator name after resolution (``"cosine"`` -> ``"cosine_distance"``);
    ``None`` means "the vectorizer's HNSW opclass, else cosine" and is resolved against the
    catalog by :meth:`resolved`. ``candidates`` is how many chunks each ranking reads before
    fusing or grouping (``None``: ``max(100, 10 * (offset + limit))``).
    """

    mode: str = "vector"
    limit: int = 5
    offset: int = 0
    filter: Filter = None
    distance: str | None = None
    group_by_parent: bool = False
    chunks_per_parent: int = 1
    max_distance: float | None = None
    min_score: float | None = None
    rrf_k: int = 60
    vector_weight: float = 1.0
    keyword_weight: float = 1.0
    candidates: int | None = None
    keyword_match: str | None = None
    ef_search: int | None = None
    iterative_scan: str | None = None

    def __post_init__(self) -> None:
        _choice("mode", self.mode, MODES)
        _positive_int("limit", self.limit)
        _positive_int("offset", self.offset, low=0)
        if self.distance is not None:
            method = DISTANCES.get(self.distance)
            if method is None:
                raise ValueError(f"distance: must be one of {sorted(DISTANCES)}, "
                                 f"got {self.distance!r}")
            object.__setattr__(self, "distance", method)
        if not isinstance(self.group_by_parent, bool):
            raise ValueError(f"group_by_parent: must be True or False, got {self.group_by_parent!r}")
        _positive_int("chunks_per_parent", self.chunks_per_parent)
        if self.max_distance is not None:
            object.__setattr__(self, "max_distance", _number("max_distance", self.max_distance))
        if self.min_score is not None:
            object.__setattr__(self, "min_score", _number("min_score", self.min_score))
        _positive_int("rrf_k", self.rrf_k, low=0)
        object.__setattr__(self, "vector_weight",
                           _number("vector_weight", self.vector_weight, non_negative=True))
        object.__setattr__(self, "keyword_weight",
                           _number("keyword_weight", self.keyword_weight, non_negative=True))
        if self.mode == "hybrid" and self.vector_weight == 0 and self.keyword_weight == 0:
            raise ValueError("vector_weight, keyword_weight: at least one must be > 0")
        if self.candidates is not None:
            _positive_int("candidates", self.candidates)
        if self.keyword_match is not None:
            _choice("keyword_match", self.keyword_match, KEYWORD_MATCHES)
        if self.ef_search is not None:
            _positive_int("ef_search", self.ef_search, high=1000)  # pgvector's range
        if self.iterative_scan is not None:
            _choice("iterative_scan", self.iterative_scan, ITERATIVE_SCANS)
        if self.mode == "keyword" and self.max_distance is not None:
            raise ValueError("max_distance: mode='keyword' has no vector distance; use min_score")

    @property
    def needs_vector(self) -> bool:
        """Vector and hybrid modes embed the query; keyword mode never does."""
        return self.mode != "keyword"

    @property
    def needs_keywords(self) -> bool:
        return self.mode != "vector"

    @property
    def window(self) -> int:
        """Chunks per ranking before fusing or grouping: enough for ``offset + limit`` hits."""
        if self.candidates is not None:
            return max(self.candidates, self.offset + self.limit)
        return max(100, 10 * (self.offset + self.limit))

    @property
    def match(self) -> str:
        """How the query text becomes a tsquery; by default what measured best per mode.

        Alone, keyword search needs recall: ``any`` word (a long question still finds chunks,
        those with more of its words first). In hybrid, the vector ranking brings the recall and
        the keyword ranking is best as precision: ``websearch`` (every word, an identifier's
        parts as a phrase). bench/search_quality.py: hybrid recall@5 0.79 with ``websearch``,
        0.68 with ``any``, below keyword alone (0.72).
        """
        if self.keyword_match is not None:
            return self.keyword_match
        return "websearch" if self.mode == "hybrid" else "any"

    @property
    def method(self) -> str:
        """The pgvector comparator (``cosine_distance``, ...); cosine until resolved."""
        return self.distance or "cosine_distance"

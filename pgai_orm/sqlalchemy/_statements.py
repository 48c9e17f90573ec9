"""The SQL of a search: one SELECT per call, whatever the mode, the grouping and the filters.

Every statement returns ``(embedding row, parent, distance, score)`` rows, parents filled from
the same row (``contains_eager``), so a hit never lazy-loads. The shapes:

* **vector** (ungrouped): ``... WHERE filters ORDER BY embedding <=> :q LIMIT n``, the form an
  HNSW index serves directly.
* **keyword** (ungrouped): ``... WHERE chunk_tsv @@ :tsquery AND filters ORDER BY ts_rank DESC``;
  the GIN index finds the matches, every match is ranked.
* **hybrid** and every **grouped** search: each ranking reads its ``window`` best chunks in a CTE
  (filters applied inside it, so the index scan and the filter share one plan), then
  reciprocal rank fusion (Cormack et al. 2009: ``sum(weight / (k + rank))``) or the grouping
  by parent runs over those few rows, and the final SELECT joins back to store and parent.

Scores say "higher is better" in every mode: a vector similarity (``1 - cosine distance``,
the inner product, ``1 / (1 + l1 or l2 distance)``), ``ts_rank`` for keywords, the fused RRF
score for hybrid. Grouped by parent, a parent's score is its best chunk's (vector, keyword) or
the fusion of the parents' ranks in each ranking (hybrid: a post whose vector match is one chunk
and whose keyword match another gets credit for both).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    CTE,
    ColumnElement,
    Float,
    Select,
    Text,
    and_,
    cast,
    func,
    literal,
    null,
    select,
)
from sqlalchemy.dialects.postgresql import REGCONFIG, TSQUERY, TSVECTOR
from sqlalchemy.orm import contains_eager
from sqlalchemy.sql.expression import ColumnClause

from pgai_orm.sqlalchemy.search_options import SearchOptions

#: The store's keyword column (``TextIndexingFullTextConfig``); not mapped: it exists only in
#: stores with a keyword index, and loading it with every hit would be waste.
TSV_COLUMN = "chunk_tsv"


@dataclass(frozen=True)
class SearchQuery:
    """The query in the forms the modes need: a checked vector, the text for keywords."""

    vector: list[float] | None
    keywords: str | None
    text_config: str | None


def store_key_columns(model: Any) -> list[Any]:
    """The store's copies of the parent's key columns, in key order (the ORM-only foreign key)."""
    (constraint,) = model.__table__.foreign_key_constraints
    return list(constraint.columns)


def tsvector_column(model: Any) -> ColumnElement[Any]:
    """``<store>.chunk_tsv``, bound to the mapped table so it renders qualified like its columns."""
    return ColumnClause(TSV_COLUMN, TSVECTOR(), _selectable=model.__table__)


def tsquery(text_config: str, keywords: str, match: str) -> ColumnElement[Any]:
    """The keyword query, parsed with the index's own text search configuration.

    ``all``: every word (``plainto_tsquery``); ``websearch``: search-engine syntax (quotes,
    ``or``, ``-word``; otherwise every word, and ``dirs_exist_ok`` as the phrase of its parts);
    ``any``: any word, so a long natural-language query still finds chunks and ``ts_rank`` puts
    those with more of its words first. plainto_tsquery's output joins quoted lexemes with
    `` & `` and a lexeme never holds a space, so swapping the operator is exact.
    """
    config = cast(literal(text_config, Text), REGCONFIG)
    text = literal(keywords, Text)
    if match == "websearch":
        return func.websearch_to_tsquery(config, text)
    plain = func.plainto_tsquery(config, text)
    if match == "all":
        return plain
    return cast(func.replace(cast(plain, Text), " & ", " | "), TSQUERY)


def _criteria(options: SearchOptions) -> list[ColumnElement[bool]]:
    if options.filter is None:
        return []
    if isinstance(options.filter, ColumnElement):
        return [options.filter]
    return list(options.filter)


def _distance(model: Any, options: SearchOptions, vector: Sequence[float]) -> ColumnElement[Any]:
    result: ColumnElement[Any] = getattr(model.embedding, options.method)(list(vector))
    return result


def similarity(method: str, distance: ColumnElement[Any]) -> ColumnElement[Any]:
    """Distance -> "higher is better", monotonic, so ordering by either gives the same ranking."""
    if method == "cosine_distance":
        return 1 - distance
    if method == "max_inner_product":
        return -distance  # pgvector's <#> is the negated inner product
    return 1 / (1 + distance)


def _rrf(weight: float, k: int, rank: ColumnElement[Any]) -> ColumnElement[Any]:
    """One ranking's share of the fused score; 0 where it did not return the item."""
    return func.coalesce(literal(weight, Float) / cast(k + rank, Float), 0.0)


def _hits(model: Any, *columns: ColumnElement[Any]) -> Select[Any]:
    owner = model.__vectorizer__.owner
    return select(model, owner, *columns)


def _vector_only(model: Any, query: SearchQuery, options: SearchOptions) -> Select[Any]:
    if query.vector is None:
        raise ValueError("a vector search needs a query vector")
    distance = _distance(model, options, query.vector)
    score = similarity(options.method, distance)
    stmt = (_hits(model, distance.label("distance"), score.label("score"))
            .join(model.parent).options(contains_eager(model.parent))
            .where(*_criteria(options)))
    if options.max_distance is not None:
        stmt = stmt.where(distance <= options.max_distance)
    if options.min_score is not None:
        stmt = stmt.where(score >= options.min_score)
    # ORDER BY the distance alone: a tie-breaker would keep the HNSW index from serving it.
    return stmt.order_by(distance).limit(options.limit).offset(options.offset or None)


def _keyword_only(model: Any, query: SearchQuery, options: SearchOptions) -> Select[Any]:
    tsv, tsq = _keyword_parts(model, query, options)
    rank = func.ts_rank(tsv, tsq)
    stmt = (_hits(model, cast(null(), Float).label("distance"), rank.label("score"))
            .join(model.parent).options(contains_eager(model.parent))
            .where(tsv.op("@@")(tsq), *_criteria(options)))
    if options.min_score is not None:
        stmt = stmt.where(rank >= options.min_score)
    return (stmt.order_by(rank.desc(), model.embedding_uuid)
            .limit(options.limit).offset(options.offset or None))


def _keyword_parts(model: Any, query: SearchQuery,
                   options: SearchOptions) -> tuple[ColumnElement[Any], ColumnElement[Any]]:
    if query.keywords is None or query.text_config is None:
        raise ValueError("a keyword search needs the query text and the index's text_config")
    return tsvector_column(model), tsquery(query.text_config, query.keywords, options.match)


def _key_labels(model: Any) -> list[str]:
    return [f"key_{i}" for i in range(len(store_key_columns(model)))]


def _vector_ranking(model: Any, query: SearchQuery, options: SearchOptions) -> CTE:
    """The ``window`` nearest chunks that pass the filters, with their rank (1 = nearest)."""
    if query.vector is None:
        raise ValueError("a vector ranking needs a query vector")
    distance = _distance(model, options, query.vector)
    keys = [c.label(name) for c, name in zip(store_key_columns(model), _key_labels(model),
                                             strict=True)]
    stmt = (select(model.embedding_uuid.label("chunk_id"), *keys, distance.label("distance"),
                   func.row_number().over(order_by=distance).label("rank"))
            .join(model.parent).where(*_criteria(options)))
    if options.max_distance is not None:
        stmt = stmt.where(distance <= options.max_distance)
    return stmt.order_by(distance).limit(options.window).cte("vector_ranking")


def _keyword_ranking(model: Any, query: SearchQuery, options: SearchOptions) -> CTE:
    """The ``window`` chunks that match the keywords best and pass the filters, ranked."""
    tsv, tsq = _keyword_parts(model, query, options)
    score = func.ts_rank(tsv, tsq)
    keys = [c.label(name) for c, name in zip(store_key_columns(model), _key_labels(model),
                                             strict=True)]
    order = (score.desc(), model.embedding_uuid)
    stmt = (select(model.embedding_uuid.label("chunk_id"), *keys, score.label("keyword_score"),
                   func.row_number().over(order_by=order).label("rank"))
            .join(model.parent).where(tsv.op("@@")(tsq), *_criteria(options)))
    return stmt.order_by(*order).limit(options.window).cte("keyword_ranking")


def _chunks(model: Any, query: SearchQuery, options: SearchOptions,
            ) -> tuple[CTE, CTE | None, CTE | None]:
    """Chunk-level ``(chunk_id, key_*, score)`` for the mode, and the rankings it came from."""
    labels = _key_labels(model)
    vector = _vector_ranking(model, query, options) if options.needs_vector else None
    keyword = _keyword_ranking(model, query, options) if options.needs_keywords else None
    if vector is not None and keyword is not None:
        joined = vector.outerjoin(keyword, vector.c.chunk_id == keyword.c.chunk_id, full=True)
        stmt = select(
            func.coalesce(vector.c.chunk_id, keyword.c.chunk_id).label("chunk_id"),
            *[func.coalesce(vector.c[k], keyword.c[k]).label(k) for k in labels],
            (_rrf(options.vector_weight, options.rrf_k, vector.c.rank)
             + _rrf(options.keyword_weight, options.rrf_k, keyword.c.rank)).label("score"),
        ).select_from(joined)
    elif vector is not None:
        stmt = select(vector.c.chunk_id, *[vector.c[k] for k in labels],
                      similarity(options.method, vector.c.distance).label("score"))
    elif keyword is not None:
        stmt = select(keyword.c.chunk_id, *[keyword.c[k] for k in labels],
                      keyword.c.keyword_score.label("score"))
    else:  # SearchOptions has no mode without a ranking
        raise ValueError(f"mode {options.mode!r} ranks nothing")
    return stmt.cte("chunks"), vector, keyword


def _parent_rank(ranking: CTE, labels: list[str], name: str) -> CTE:
    """Parents in the order of their best chunk in one ranking (1 = best)."""
    keys = [ranking.c[k] for k in labels]
    return (select(*keys, func.row_number().over(order_by=func.min(ranking.c.rank)).label("rank"))
            .group_by(*keys).cte(name))


def _parents(chunks: CTE, vector: CTE | None, keyword: CTE | None, labels: list[str],
             options: SearchOptions) -> CTE:
    """``(key_*, parent_score)``: fused parent ranks (hybrid) or the best chunk's score."""
    if vector is not None and keyword is not None:
        by_vector = _parent_rank(vector, labels, "vector_parents")
        by_keyword = _parent_rank(keyword, labels, "keyword_parents")
        joined = by_vector.outerjoin(
            by_keyword, and_(*[by_vector.c[k] == by_keyword.c[k] for k in labels]), full=True)
        stmt = select(
            *[func.coalesce(by_vector.c[k], by_keyword.c[k]).label(k) for k in labels],
            (_rrf(options.vector_weight, options.rrf_k, by_vector.c.rank)
             + _rrf(options.keyword_weight, options.rrf_k, by_keyword.c.rank)
             ).label("parent_score"),
        ).select_from(joined)
    else:
        keys = [chunks.c[k] for k in labels]
        stmt = select(*keys, func.max(chunks.c.score).label("parent_score")).group_by(*keys)
    return stmt.cte("parents")


def _final_distance(model: Any, query: SearchQuery, options: SearchOptions) -> ColumnElement[Any]:
    """The hit's own vector distance, computed for the returned rows only (NULL for keywords)."""
    if query.vector is None or not options.needs_vector:
        return cast(null(), Float)
    return _distance(model, options, query.vector)


def _fused(model: Any, query: SearchQuery, options: SearchOptions) -> Select[Any]:
    chunks, _, _ = _chunks(model, query, options)
    stmt = (_hits(model, _final_distance(model, query, options).label("distance"),
                  chunks.c.score.label("score"))
            .select_from(chunks).join(model, model.embedding_uuid == chunks.c.chunk_id)
            .join(model.parent).options(contains_eager(model.parent)))
    if options.min_score is not None:
        stmt = stmt.where(chunks.c.score >= options.min_score)
    return (stmt.order_by(chunks.c.score.desc(), chunks.c.chunk_id)
            .limit(options.limit).offset(options.offset or None))


def _grouped(model: Any, query: SearchQuery, options: SearchOptions) -> Select[Any]:
    labels = _key_labels(model)
    chunks, vector, keyword = _chunks(model, query, options)
    parents = _parents(chunks, vector, keyword, labels, options)
    parent_keys = [parents.c[k] for k in labels]
    ranked_stmt = (
        select(
            chunks.c.chunk_id,
            parents.c.parent_score,
            func.dense_rank().over(
                order_by=[parents.c.parent_score.desc(), *parent_keys]).label("parent_rank"),
            func.row_number().over(
                partition_by=[chunks.c[k] for k in labels],
                order_by=[chunks.c.score.desc(), chunks.c.chunk_id]).label("chunk_rank"),
        ).select_from(chunks.join(parents, and_(*[chunks.c[k] == parents.c[k] for k in labels])))
    )
    if options.min_score is not None:
        ranked_stmt = ranked_stmt.where(parents.c.parent_score >= options.min_score)
    ranked = ranked_stmt.cte("ranked")
    return (
        _hits(model, _final_distance(model, query, options).label("distance"),
              ranked.c.parent_score.label("score"))
        .select_from(ranked).join(model, model.embedding_uuid == ranked.c.chunk_id)
        .join(model.parent).options(contains_eager(model.parent))
        .where(ranked.c.parent_rank > options.offset,
               ranked.c.parent_rank <= options.offset + options.limit,
               ranked.c.chunk_rank <= options.chunks_per_parent)
        .order_by(ranked.c.parent_rank, ranked.c.chunk_rank)
    )


def build_statement(model: Any, query: SearchQuery, options: SearchOptions) -> Select[Any]:
    """The one SELECT of a search with these options (see the module docstring)."""
    if options.group_by_parent:
        return _grouped(model, query, options)
    if options.mode == "vector":
        return _vector_only(model, query, options)
    if options.mode == "keyword":
        return _keyword_only(model, query, options)
    return _fused(model, query, options)

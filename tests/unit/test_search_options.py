"""Search options, HNSW settings, hits and the keyword query, without a database."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import column
from sqlalchemy.dialects import postgresql

from pgai_orm.configuration import (
    ChunkingRecursiveCharacterTextSplitterConfig,
    IndexingHnswConfig,
    TextIndexingFullTextConfig,
    VectorizerConfig,
)
from pgai_orm.sqlalchemy._catalog import VectorizerInfo
from pgai_orm.sqlalchemy._settings import hnsw_settings
from pgai_orm.sqlalchemy._statements import tsquery
from pgai_orm.sqlalchemy.results import SearchResult, hits_from_rows
from pgai_orm.sqlalchemy.search_options import DISTANCES, SearchOptions


def info(**parts: Any) -> VectorizerInfo:
    config = VectorizerConfig(
        chunking=ChunkingRecursiveCharacterTextSplitterConfig(chunk_column="content"), **parts)
    return VectorizerInfo("v", "public", "t_embedding_store", config.to_dict())


def test_distance_takes_pgvector_comparator_names_and_the_short_ones() -> None:
    for short, comparator in (("cosine", "cosine_distance"), ("l2", "l2_distance"),
                              ("inner_product", "max_inner_product"), ("l1", "l1_distance")):
        assert SearchOptions(distance=short).distance == comparator
        assert SearchOptions(distance=comparator).distance == comparator
    assert set(DISTANCES.values()) == {"cosine_distance", "l2_distance", "max_inner_product",
                                       "l1_distance"}
    assert SearchOptions().distance is None and SearchOptions().method == "cosine_distance"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"mode": "semantic"}, "mode: must be one of"),
    ({"limit": 0}, "limit: must be an integer >= 1"),
    ({"offset": -1}, "offset: must be an integer >= 0"),
    ({"limit": True}, "limit: must be an integer"),
    ({"distance": "hamming"}, "distance: must be one of"),
    ({"chunks_per_parent": 0}, "chunks_per_parent"),
    ({"vector_weight": -1}, "vector_weight: must be >= 0"),
    ({"mode": "hybrid", "vector_weight": 0, "keyword_weight": 0}, "at least one must be > 0"),
    ({"keyword_match": "some"}, "keyword_match: must be one of"),
    ({"ef_search": 5000}, "ef_search: must be an integer between 1 and 1000"),
    ({"iterative_scan": "on"}, "iterative_scan: must be one of"),
    ({"mode": "keyword", "max_distance": 0.5}, "max_distance: mode='keyword'"),
    ({"group_by_parent": 1}, "group_by_parent: must be True or False"),
])
def test_bad_options_name_the_argument(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SearchOptions(**kwargs)


def test_defaults_per_mode() -> None:
    assert SearchOptions(mode="keyword").match == "any"
    assert SearchOptions(mode="hybrid").match == "websearch"
    assert SearchOptions(mode="hybrid", keyword_match="all").match == "all"
    assert SearchOptions(limit=5).window == 100
    assert SearchOptions(limit=20, offset=10).window == 300
    assert SearchOptions(limit=20, candidates=8).window == 20  # never fewer than wanted
    assert not SearchOptions(mode="keyword").needs_vector
    assert SearchOptions(mode="hybrid").needs_vector and SearchOptions(mode="hybrid").needs_keywords


def test_iterative_scans_are_on_when_an_hnsw_index_could_come_back_short() -> None:
    hnsw, plain = info(indexing=IndexingHnswConfig()), info()
    filtered = SearchOptions(filter=column("x") == 1)
    assert hnsw_settings(SearchOptions(), hnsw) == {}
    assert hnsw_settings(filtered, hnsw) == {"hnsw.iterative_scan": "strict_order"}
    assert hnsw_settings(SearchOptions(limit=41), hnsw) == {"hnsw.iterative_scan": "strict_order"}
    assert hnsw_settings(SearchOptions(mode="hybrid"), hnsw) == {
        "hnsw.iterative_scan": "strict_order"}  # its window (100) is above ef_search (40)
    assert hnsw_settings(SearchOptions(limit=41, ef_search=64), hnsw) == {"hnsw.ef_search": "64"}
    assert hnsw_settings(SearchOptions(filter=column("x") == 1, iterative_scan="off"), hnsw) == {
        "hnsw.iterative_scan": "off"}
    assert hnsw_settings(filtered, plain) == {}  # no index: nothing to set
    assert hnsw_settings(SearchOptions(mode="keyword", ef_search=10), hnsw) == {}


def test_catalog_info_says_what_the_store_has() -> None:
    assert info().text_config is None and info().hnsw_distance is None
    assert info(text_indexing=TextIndexingFullTextConfig(text_config="simple")).text_config == "simple"
    assert info(indexing=IndexingHnswConfig(opclass="vector_l2_ops")).hnsw_distance == "l2_distance"
    assert VectorizerInfo("v", "s", "t", {"embedding": {"dimensions": 3}}).text_config is None


def test_grouped_rows_become_one_hit_per_parent() -> None:
    a, b = SimpleNamespace(id=1), SimpleNamespace(id=2)
    rows = [("a1", a, 0.1, 0.9), ("a2", a, 0.2, 0.9), ("b1", b, None, 0.5)]
    grouped = hits_from_rows(rows, ["id"], grouped=True)
    assert [(h.parent, h.chunks, h.score, h.distance) for h in grouped] == [
        (a, ("a1", "a2"), 0.9, 0.1), (b, ("b1",), 0.5, None)]
    flat = hits_from_rows(rows, ["id"], grouped=False)
    assert [h.chunks for h in flat] == [("a1",), ("a2",), ("b1",)]
    hit = grouped[0]
    assert hit.id == 1 and hit.key == {"id": 1} and hit.embedding_row == "a1"
    with pytest.raises(AttributeError, match=r"no attribute 'title' \(key columns: id"):
        _ = hit.title
    assert isinstance(hit, SearchResult)


@pytest.mark.parametrize(("match", "sql"), [
    ("any", "CAST(replace(CAST(plainto_tsquery(CAST('english' AS REGCONFIG), 'a b') AS TEXT), "
            "' & ', ' | ') AS TSQUERY)"),
    ("all", "plainto_tsquery(CAST('english' AS REGCONFIG), 'a b')"),
    ("websearch", "websearch_to_tsquery(CAST('english' AS REGCONFIG), 'a b')"),
])
def test_keyword_query_is_parsed_with_the_index_configuration(match: str, sql: str) -> None:
    compiled = tsquery("english", "a b", match).compile(
        dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
    assert str(compiled) == sql

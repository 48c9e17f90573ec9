"""The Ollama embedder against a local server speaking ``/api/embed``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from pgai_orm.embedders import (
    DimensionMismatchError,
    PermanentEmbeddingError,
    RetryPolicy,
    TransientEmbeddingError,
    create_embedder,
)
from pgai_orm.embedders.ollama import OllamaEmbedder, default_base_url
from tests.fake_providers._server import Fault, fake_vector
from tests.fake_providers.configs import make_config
from tests.fake_providers.ollama_server import FakeOllamaServer

FAST_RETRY = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.01, max_total=10)


@pytest.fixture
def server() -> Iterator[FakeOllamaServer]:
    with FakeOllamaServer({"nomic-embed-text": 768, "tiny": 4}) as srv:
        yield srv


def test_config_options_and_keep_alive_reach_the_api(server: FakeOllamaServer) -> None:
    config = make_config(
        "EmbeddingOllamaConfig",
        model="nomic-embed-text",
        dimensions=768,
        base_url=server.url,
        options={"num_ctx": 2048},
        keep_alive="10m",
    )
    embedder = create_embedder(config, retry=FAST_RETRY)
    texts = ["one", "two"]
    vectors = asyncio.run(embedder.embed(texts))
    assert vectors == [pytest.approx(fake_vector(t, 768), abs=1e-9) for t in texts]
    (request,) = server.requests
    assert request.path == "/api/embed"
    assert request.body == {
        "model": "nomic-embed-text",
        "input": texts,
        "options": {"num_ctx": 2048},
        "keep_alive": "10m",
    }


def test_unknown_model_is_permanent(server: FakeOllamaServer) -> None:
    embedder = OllamaEmbedder("llama-nope", 4, base_url=server.url, retry=FAST_RETRY)
    with pytest.raises(PermanentEmbeddingError, match="not found") as info:
        embedder.embed_sync(["x"])
    assert info.value.status == 404
    assert len(server.requests) == 1


def test_server_errors_retry_then_succeed(server: FakeOllamaServer) -> None:
    server.add_fault(Fault(status=500, body={"error": "model runner crashed"}, times=2))
    embedder = OllamaEmbedder("tiny", 4, base_url=server.url, retry=FAST_RETRY)
    assert len(embedder.embed_sync(["x"])) == 1
    assert len(server.requests) == 3


def test_server_errors_are_bounded(server: FakeOllamaServer) -> None:
    server.add_fault(Fault(status=503, times=50))
    embedder = OllamaEmbedder("tiny", 4, base_url=server.url, retry=FAST_RETRY)
    with pytest.raises(TransientEmbeddingError):
        embedder.embed_sync(["x"])
    assert len(server.requests) == FAST_RETRY.max_attempts


def test_wrong_dimensions(server: FakeOllamaServer) -> None:
    server.add_fault(Fault(wrong_dimensions=True))
    embedder = OllamaEmbedder("tiny", 4, base_url=server.url, retry=FAST_RETRY)
    with pytest.raises(DimensionMismatchError):
        embedder.embed_sync(["x"])


def test_timeout_is_transient(server: FakeOllamaServer) -> None:
    server.add_fault(Fault(delay=30, times=1))
    embedder = OllamaEmbedder(
        "tiny", 4, base_url=server.url, timeout=0.3, retry=RetryPolicy(max_attempts=1)
    )
    with pytest.raises(TransientEmbeddingError, match="timed out"):
        embedder.embed_sync(["x"])


def test_connection_refused_is_transient() -> None:
    with FakeOllamaServer() as srv:
        url = srv.url
    embedder = OllamaEmbedder("tiny", 4, base_url=url, retry=RetryPolicy(max_attempts=1))
    with pytest.raises(TransientEmbeddingError, match="connection"):
        embedder.embed_sync(["x"])


def test_ollama_host_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "gpu-box:11434")
    assert default_base_url() == "http://gpu-box:11434"
    monkeypatch.delenv("OLLAMA_HOST")
    assert default_base_url() == "http://localhost:11434"

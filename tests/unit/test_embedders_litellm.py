"""LiteLLM and Voyage AI (through LiteLLM): real ``litellm`` calls to the local OpenAI-style server.

Importing litellm takes seconds, so this module shares one import across its tests.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Iterator

import pytest

pytest.importorskip("litellm")

from pgai_orm.embedders import (
    DimensionMismatchError,
    MissingApiKeyError,
    PermanentEmbeddingError,
    RetryPolicy,
    TransientEmbeddingError,
    create_embedder,
)
from pgai_orm.embedders.litellm import LiteLLMEmbedder
from pgai_orm.embedders.voyageai import VoyageAIEmbedder
from tests.fake_providers._server import Fault, fake_vector
from tests.fake_providers.configs import make_config
from tests.fake_providers.openai_server import FakeOpenAIServer

KEY = "sk-litellm-test-secret-9876"
FAST_RETRY = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.01, max_total=10)


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(api_key=KEY) as srv:
        yield srv


def _embedder(server: FakeOpenAIServer, **kwargs: object) -> LiteLLMEmbedder:
    options: dict[str, object] = {"retry": FAST_RETRY}
    options.update(kwargs)
    return LiteLLMEmbedder(
        "openai/text-embedding-3-small",
        8,
        api_key=KEY,
        extra_options={"api_base": server.base_url},
        **options,  # type: ignore[arg-type]
    )


def test_factory_config_through_litellm(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LITELLM_TEST_KEY", KEY)
    config = make_config(
        "EmbeddingLitellmConfig",
        model="openai/text-embedding-3-small",
        dimensions=16,
        api_key_name="LITELLM_TEST_KEY",
        extra_options={"api_base": server.base_url},
    )
    embedder = create_embedder(config, retry=FAST_RETRY)
    texts = ["alpha", "beta", "gamma"]
    vectors = asyncio.run(embedder.embed(texts))
    assert vectors == [pytest.approx(fake_vector(t, 16), abs=1e-6) for t in texts]
    (request,) = server.embedding_requests()
    assert request["dimensions"] == 16 and request["input"] == texts
    assert embedder.embed_sync(["delta"])[0] == pytest.approx(fake_vector("delta", 16), abs=1e-6)


def test_missing_key_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ABSENT_LITELLM_KEY", raising=False)
    config = make_config(
        "EmbeddingLitellmConfig",
        model="cohere/embed-english-v3.0",
        dimensions=1024,
        api_key_name="ABSENT_LITELLM_KEY",
    )
    with pytest.raises(MissingApiKeyError, match="ABSENT_LITELLM_KEY"):
        create_embedder(config)


def test_litellm_does_not_retry_itself(server: FakeOpenAIServer) -> None:
    server.add_fault(Fault(status=500, times=100))
    with pytest.raises(TransientEmbeddingError):
        _embedder(server).embed_sync(["x"])
    assert len(server.requests) == FAST_RETRY.max_attempts  # ours only, none of litellm's


def test_429_retry_after_survives_litellm(server: FakeOpenAIServer) -> None:
    embedder = _embedder(server, retry=RetryPolicy(max_attempts=1))
    embedder.embed_sync(["warm-up"])  # litellm's first call is slow; time only the retry
    server.add_fault(Fault(status=429, headers={"Retry-After": "0.25"}, times=1))
    with pytest.raises(TransientEmbeddingError) as info:
        embedder.embed_sync(["x"])
    assert info.value.retry_after == 0.25 and info.value.status == 429
    server.add_fault(Fault(status=429, headers={"Retry-After": "0.25"}, times=1))
    embedder.retry = RetryPolicy(max_attempts=3, base_delay=0, max_total=10)
    started = time.monotonic()
    assert len(embedder.embed_sync(["x"])) == 1
    assert time.monotonic() - started >= 0.25
    assert len(server.requests) == 4


def test_400_is_permanent(server: FakeOpenAIServer) -> None:
    server.add_fault(Fault(status=400, body={"error": {"message": "nope"}}))
    with pytest.raises(PermanentEmbeddingError) as info:
        _embedder(server).embed_sync(["x"])
    assert not isinstance(info.value, TransientEmbeddingError)
    assert len(server.requests) == 1


def test_wrong_dimensions(server: FakeOpenAIServer) -> None:
    server.add_fault(Fault(wrong_dimensions=True))
    with pytest.raises(DimensionMismatchError):
        _embedder(server).embed_sync(["x"])


def test_bad_key_never_leaks(server: FakeOpenAIServer) -> None:
    wrong = KEY + "-wrong"
    embedder = LiteLLMEmbedder(
        "openai/text-embedding-3-small",
        8,
        api_key=wrong,
        extra_options={"api_base": server.base_url},
        retry=FAST_RETRY,
    )
    with pytest.raises(PermanentEmbeddingError) as info:
        embedder.embed_sync(["x"])
    rendered = "".join(traceback.format_exception(info.value)) + repr(info.value)
    assert wrong not in rendered and KEY not in rendered


def test_voyage_through_litellm(server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOYAGE_API_KEY", KEY)
    embedder = VoyageAIEmbedder(
        "voyage-3.5", 8, input_type="query", base_url=server.base_url, api_key=KEY, retry=FAST_RETRY
    )
    vectors = embedder.embed_sync(["what is logical replication?"])
    assert vectors[0] == pytest.approx(fake_vector("what is logical replication?", 8), abs=1e-6)
    (request,) = server.embedding_requests()
    assert request["model"] == "voyage-3.5"
    assert request["input_type"] == "query"
    assert request["output_dimension"] == 8


def test_voyage_factory_needs_its_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VOYAGE_API_KEY", raising=False)
    config = make_config("EmbeddingVoyageaiConfig", model="voyage-3.5", dimensions=1024)
    with pytest.raises(MissingApiKeyError, match="VOYAGE_API_KEY"):
        create_embedder(config)

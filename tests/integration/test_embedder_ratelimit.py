"""Pacing against a rate-limited OpenAI-style server: the real ``openai`` SDK (and LiteLLM) over HTTP.

The server (``tests.fake_providers.openai_server`` with ``bench.rate_limits.RateLimiter``) admits
requests as OpenAI does and answers the rest with 429 and ``Retry-After``. Needs no database or
broker, only a local port. Nothing here measures time: the assertions are counts (429s, tokens,
requests) and vectors.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from bench.rate_limits import RateLimiter
from pgai_orm.embedders import RetryPolicy
from pgai_orm.embedders.batching import BatchLimits, cl100k
from pgai_orm.embedders.openai import OpenAIEmbedder
from pgai_orm.embedders.ratelimit import reset_buckets
from pgai_orm.embedders.usage import Usage
from tests.fake_providers._server import fake_vector
from tests.fake_providers.openai_server import FakeOpenAIServer

KEY = "sk-ratelimit-test-secret-1234"
MODEL = "text-embedding-3-small"
PATIENT = RetryPolicy(max_attempts=8, base_delay=0.01, max_delay=0.5, max_total=60)


@pytest.fixture(autouse=True)
def _fresh_buckets() -> Iterator[None]:
    reset_buckets()
    yield
    reset_buckets()


def texts(prefix: str, count: int, repeat: int = 4) -> list[str]:
    return [f"{prefix} {i}: " + "a short paragraph about rate limits and pacing " * repeat
            for i in range(count)]


def embedder(server: FakeOpenAIServer, max_inputs: int = 4) -> OpenAIEmbedder:
    built = OpenAIEmbedder(MODEL, 8, api_key=KEY, base_url=server.base_url, retry=PATIENT)
    built.limits = BatchLimits(max_inputs=max_inputs, max_tokens=300_000, context_tokens=8191)
    return built


def expected(items: list[str]) -> list[object]:
    """The server's vectors for ``items`` (sent as float32: compared to 1e-6)."""
    return [pytest.approx(fake_vector(t, 8), abs=1e-6) for t in items]


def tokens_of(items: list[str]) -> int:
    return sum(len(t) for t in cl100k().encode_ordinary_batch(items))


def test_paced_embedders_sharing_a_key_provoke_no_429() -> None:
    # 10k tokens/s in a bucket of 5k tokens; three embedders of one key send ~3 buckets' worth
    limiter = RateLimiter(rpm=60_000, tpm=600_000, burst_s=0.5)
    with FakeOpenAIServer(api_key=KEY, limiter=limiter) as server:
        embedders = [embedder(server) for _ in range(3)]
        assert embedders[0].embed_sync(["warm up"]) == expected(["warm up"])  # learn limits
        batches = [texts(f"embedder {n}", 60) for n in range(3)]
        usages = [Usage() for _ in embedders]

        async def run_all() -> list[list[list[float]]]:
            return await asyncio.gather(*(e.embed(b, usage=u)
                                          for e, b, u in zip(embedders, batches, usages, strict=True)))

        results = asyncio.run(run_all())
        assert server.rate_limited == 0
        for batch, vectors in zip(batches, results, strict=True):
            assert vectors == expected(batch)
        assert sum(u.requests for u in usages) == 3 * 15
        assert sum(u.tokens for u in usages) == tokens_of([t for b in batches for t in b])
        assert sum(e.usage.tokens for e in embedders) == server.admitted_tokens
        assert all(u.rate_limited == 0 for u in usages)
        for e in embedders:
            e.close()


def test_a_first_wave_over_the_limit_is_retried_and_nothing_fails() -> None:
    # nothing is known before the first answer: eight requests of ~1,000 tokens go at once into a
    # bucket of 1,000 tokens; the 429s are waited out (Retry-After) and every text is embedded
    limiter = RateLimiter(rpm=60_000, tpm=600_000, burst_s=0.1)
    with FakeOpenAIServer(api_key=KEY, limiter=limiter) as server:
        paced = embedder(server)
        batch = texts("wave", 64, repeat=25)
        usage = Usage()
        vectors = asyncio.run(paced.embed(batch, usage=usage))
        assert vectors == expected(batch)
        assert 1 <= server.rate_limited <= paced.concurrency
        assert usage.rate_limited == server.rate_limited
        assert usage.requests == 16
        assert usage.tokens == tokens_of(batch) == server.admitted_tokens
        assert paced._pacing() is not None and paced._pacing().paced  # type: ignore[union-attr]


def test_litellm_to_openai_reads_the_same_headers() -> None:
    pytest.importorskip("litellm")
    from pgai_orm.embedders.litellm import LiteLLMEmbedder

    limiter = RateLimiter(rpm=60_000, tpm=6_000_000, burst_s=1.0)
    with FakeOpenAIServer(api_key=KEY, limiter=limiter) as server:
        built = LiteLLMEmbedder(f"openai/{MODEL}", 8, api_key=KEY, retry=PATIENT,
                                extra_options={"api_base": server.base_url})
        batch = texts("litellm", 5)
        usage = Usage()
        assert built.embed_sync(["warm up"]) == expected(["warm up"])
        vectors = asyncio.run(built.embed(batch, usage=usage))
        assert vectors == expected(batch)
        bucket = built._pacing()
        assert bucket is not None and bucket.paced
        assert usage.requests == 1 and usage.tokens == tokens_of(batch)
        built.close()

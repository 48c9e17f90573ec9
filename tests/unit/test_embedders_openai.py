"""The OpenAI embedder: the real ``openai`` SDK against a local server speaking OpenAI's API."""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Iterator

import pytest

from pgai_orm.embedders import (
    DimensionMismatchError,
    InputTooLongError,
    MissingApiKeyError,
    PermanentEmbeddingError,
    RetryPolicy,
    TransientEmbeddingError,
    create_embedder,
)
from pgai_orm.embedders.batching import BatchLimits, cl100k
from pgai_orm.embedders.openai import OpenAIEmbedder
from tests.fake_providers._server import Fault, fake_vector
from tests.fake_providers.configs import make_config
from tests.fake_providers.openai_server import FakeOpenAIServer

KEY = "sk-test-very-secret-key-4242"
FAST_RETRY = RetryPolicy(max_attempts=4, base_delay=0.001, max_delay=0.01, max_total=10)


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(api_key=KEY) as srv:
        yield srv


def _embedder(server: FakeOpenAIServer, **kwargs: object) -> OpenAIEmbedder:
    options: dict[str, object] = {"api_key": KEY, "base_url": server.base_url, "retry": FAST_RETRY}
    options.update(kwargs)
    model = str(options.pop("model", "text-embedding-3-small"))
    dimensions = int(options.pop("dimensions", 8))  # type: ignore[call-overload]
    return OpenAIEmbedder(model, dimensions, **options)  # type: ignore[arg-type]


def _assert_no_key(exc: BaseException) -> None:
    rendered = "".join(traceback.format_exception(exc)) + repr(exc) + str(exc)
    assert KEY not in rendered


def test_factory_reads_config_and_sends_the_wire_format(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_OPENAI_KEY", KEY)
    config = make_config(
        "EmbeddingOpenaiConfig",
        model="text-embedding-3-small",
        dimensions=16,
        chat_user="alice",
        api_key_name="MY_OPENAI_KEY",
        base_url=server.base_url,
    )
    embedder = create_embedder(config, retry=FAST_RETRY)
    texts = ["first text", "second text", "third"]
    vectors = asyncio.run(embedder.embed(texts))
    assert vectors == [pytest.approx(fake_vector(t, 16), abs=1e-6) for t in texts]
    (request,) = server.requests
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.body["encoding_format"] == "base64"  # the SDK's default, decoded by the SDK
    assert request.body["dimensions"] == 16
    assert request.body["user"] == "alice"
    assert request.body["input"] == texts
    assert KEY not in repr(embedder)


def test_missing_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    config = make_config(
        "EmbeddingOpenaiConfig",
        model="text-embedding-3-small",
        dimensions=8,
        api_key_name="NO_SUCH_KEY_VAR",
    )
    with pytest.raises(MissingApiKeyError, match="NO_SUCH_KEY_VAR"):
        create_embedder(config)


def test_ada_002_gets_no_dimensions(server: FakeOpenAIServer) -> None:
    embedder = _embedder(server, model="text-embedding-ada-002", dimensions=1536)
    assert len(embedder.embed_sync(["x"])[0]) == 1536
    assert "dimensions" not in server.embedding_requests()[0]


def test_429_with_retry_after_is_retried_and_honoured(server: FakeOpenAIServer) -> None:
    server.add_fault(Fault(status=429, headers={"retry-after-ms": "150"}))  # OpenAI's header
    server.add_fault(Fault(status=429, headers={"Retry-After": "0.2"}))  # the standard one
    embedder = _embedder(server, retry=RetryPolicy(max_attempts=5, base_delay=0, max_total=10))
    started = time.monotonic()
    assert len(embedder.embed_sync(["a", "b"])) == 2
    assert time.monotonic() - started >= 0.35  # waited at least what each 429 asked for
    assert len(server.requests) == 3


def test_5xx_retries_are_bounded(server: FakeOpenAIServer) -> None:
    server.add_fault(Fault(status=500, times=100))
    embedder = _embedder(server)
    with pytest.raises(TransientEmbeddingError) as info:
        embedder.embed_sync(["a"])
    assert info.value.status == 500
    assert len(server.requests) == FAST_RETRY.max_attempts


def test_5xx_then_success(server: FakeOpenAIServer) -> None:
    server.add_fault(Fault(status=503, times=2))
    assert len(_embedder(server).embed_sync(["a"])) == 1
    assert len(server.requests) == 3


def test_slow_server_times_out_as_transient(server: FakeOpenAIServer) -> None:
    server.add_fault(Fault(delay=30, times=2))
    embedder = _embedder(server, timeout=0.3, retry=RetryPolicy(max_attempts=2, base_delay=0))
    with pytest.raises(TransientEmbeddingError, match="timed out"):
        embedder.embed_sync(["a"])
    assert len(server.requests) == 2


def test_wrong_dimensions_is_permanent_and_not_retried(server: FakeOpenAIServer) -> None:
    server.add_fault(Fault(wrong_dimensions=True, times=10))
    with pytest.raises(DimensionMismatchError, match="7-dimensional"):
        _embedder(server).embed_sync(["a"])
    assert len(server.requests) == 1


def test_400_is_permanent_and_not_retried(server: FakeOpenAIServer) -> None:
    server.add_fault(Fault(status=400, body={"error": {"message": "bad input", "type": "x"}}))
    with pytest.raises(PermanentEmbeddingError, match="bad input") as info:
        _embedder(server).embed_sync(["a"])
    assert not isinstance(info.value, TransientEmbeddingError)
    assert info.value.status == 400
    assert len(server.requests) == 1


def test_context_length_400_is_input_too_long(server: FakeOpenAIServer) -> None:
    message = "This model's maximum context length is 8191 tokens, however you requested 9000"
    server.add_fault(Fault(status=400, body={"error": {"message": message}}))
    with pytest.raises(InputTooLongError):
        _embedder(server).embed_sync(["a"])


def test_bad_key_is_permanent_and_never_leaks(server: FakeOpenAIServer) -> None:
    embedder = _embedder(server, api_key=KEY + "-wrong")
    with pytest.raises(PermanentEmbeddingError) as info:
        embedder.embed_sync(["a"])
    assert info.value.status == 401
    assert KEY + "-wrong" not in str(info.value)
    _assert_no_key(info.value)


def test_key_never_leaks_from_transient_errors(server: FakeOpenAIServer) -> None:
    server.add_fault(Fault(status=500, body={"error": {"message": f"echo {KEY}"}}, times=10))
    with pytest.raises(TransientEmbeddingError) as info:
        _embedder(server).embed_sync(["a"])
    _assert_no_key(info.value)


def test_batches_by_count_within_the_2048_limit(server: FakeOpenAIServer) -> None:
    texts = [f"t{i}" for i in range(2050)]
    vectors = _embedder(server).embed_sync(texts)
    assert len(vectors) == 2050
    # batches run concurrently, so the server may see them in either order
    assert sorted(len(r["input"]) for r in server.embedding_requests()) == [2, 2048]
    assert vectors[2049] == pytest.approx(fake_vector("t2049", 8), abs=1e-6)


def test_batches_by_tokens_within_300k(server: FakeOpenAIServer) -> None:
    text = "lorem " * 8000  # about 8,000 tokens
    tokens = len(cl100k().encode_ordinary(text))
    assert 7000 < tokens <= 8191
    count = 300_000 // tokens + 5
    vectors = _embedder(server).embed_sync([text] * count)
    assert len(vectors) == count
    sizes = [len(r["input"]) for r in server.embedding_requests()]
    assert len(sizes) == 2 and sum(sizes) == count  # the server rejects > 300k tokens


def test_over_long_input_is_truncated_with_a_warning_without_text(
    server: FakeOpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    long_text = "zebra " * 9000
    with caplog.at_level(logging.WARNING, logger="pgai_orm.embedders.batching"):
        vectors = _embedder(server).embed_sync(["short", long_text])
    assert len(vectors) == 2
    sent = server.embedding_requests()[0]["input"][1]
    assert len(cl100k().encode_ordinary(sent)) == 8191
    assert "truncated" in caplog.text and "8191" in caplog.text
    assert "zebra" not in caplog.text


def test_special_token_text_is_plain_data(server: FakeOpenAIServer) -> None:
    assert len(_embedder(server).embed_sync(["before <|endoftext|> after"])) == 1


def test_batches_run_concurrently_up_to_the_limit(server: FakeOpenAIServer) -> None:
    embedder = _embedder(server, concurrency=3)
    embedder.limits = BatchLimits(max_inputs=2, max_tokens=None, context_tokens=8191)
    server.hold_until_concurrent(3)
    texts = [f"text {i}" for i in range(12)]
    vectors = asyncio.run(embedder.embed(texts))
    assert vectors == [pytest.approx(fake_vector(t, 8), abs=1e-6) for t in texts]
    assert len(server.requests) == 6
    assert server.max_in_flight == 3


def test_a_permanent_failure_stops_the_other_batches(server: FakeOpenAIServer) -> None:
    embedder = _embedder(server, concurrency=1)
    embedder.limits = BatchLimits(max_inputs=1)
    server.add_fault(Fault(status=400))
    with pytest.raises(PermanentEmbeddingError):
        embedder.embed_sync(["a", "b", "c", "d"])
    assert len(server.requests) == 1


def test_embed_sync_works_inside_a_running_loop(server: FakeOpenAIServer) -> None:
    embedder = _embedder(server)

    async def caller() -> list[list[float]]:
        first = await embedder.embed(["async"])
        return first + embedder.embed_sync(["sync from inside a loop"])

    vectors = asyncio.run(caller())
    assert len(vectors) == 2
    embedder.close()

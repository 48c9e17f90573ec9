"""Request sizing by count and tokens, and truncation to the context window (cl100k, offline)."""

from __future__ import annotations

import logging

import pytest

from pgai_orm.embedders.batching import OPENAI_LIMITS, BatchLimits, cl100k, fit_to_context, plan_batches


def test_cl100k_is_available_offline() -> None:
    encoding = cl100k()
    assert encoding.encode_ordinary("hello world") == [15339, 1917]


def test_batches_by_count() -> None:
    batches = plan_batches([1] * 5000, OPENAI_LIMITS)
    assert [len(b) for b in batches] == [2048, 2048, 904]
    assert batches[1].start == 2048


def test_batches_by_tokens_keep_order_and_cover_everything() -> None:
    tokens = [100_000, 150_000, 60_000, 10, 299_000, 1]
    batches = plan_batches(tokens, OPENAI_LIMITS)
    assert [list(b) for b in batches] == [[0, 1], [2, 3], [4, 5]]
    for batch in batches:
        assert sum(tokens[i] for i in batch) <= 300_000


def test_single_oversized_input_gets_its_own_batch() -> None:
    batches = plan_batches([5, 500, 5], BatchLimits(max_inputs=10, max_tokens=100))
    assert [list(b) for b in batches] == [[0], [1], [2]]
    assert plan_batches([], OPENAI_LIMITS) == []


def test_truncation_counts_and_logs_lengths_only(caplog: pytest.LogCaptureFixture) -> None:
    secret_words = "confidential " * 50
    with caplog.at_level(logging.WARNING, logger="pgai_orm.embedders.batching"):
        prepared = fit_to_context(["short", secret_words], cl100k(), 20)
    assert prepared.tokens[0] == 1 and prepared.tokens[1] == 20
    assert len(cl100k().encode_ordinary(prepared.texts[1])) == 20
    assert prepared.texts[0] == "short"
    original = len(cl100k().encode_ordinary(secret_words))
    assert "confidential" not in caplog.text
    assert f"truncated from {original} to 20 tokens" in caplog.text


def test_truncation_never_splits_into_more_tokens() -> None:
    # multi-byte characters: cutting token ids can split a character; the result must still fit
    text = "数据库复制流式嵌入" * 400 + "🙂" * 300
    prepared = fit_to_context([text], cl100k(), 101)
    assert len(cl100k().encode_ordinary(prepared.texts[0])) <= 101


def test_without_a_tokenizer_nothing_is_counted() -> None:
    prepared = fit_to_context(["a", "b"], None, 10)
    assert prepared.texts == ["a", "b"] and prepared.tokens == [0, 0]

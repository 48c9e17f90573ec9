"""``PooledWordllama`` computes exactly wordllama's own embeddings (the worker's faster path)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from pgai_orm.embedders.local import PooledWordllama, _wordllama


@pytest.mark.parametrize("dimensions", [64, 128, 256])
def test_the_same_vectors_as_wordllama_itself(dimensions: int) -> None:
    rng = random.Random(dimensions)
    words = ["postgres", "streams", "every", "change", "über", "naïve", "日本語", "x", "3.14", ";"]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 400))) for _ in range(600)]
    texts += ["", "   ", "one"]  # empty ones, and the last run of ids ends the array
    model = _wordllama(dimensions)
    with np.errstate(invalid="ignore"):
        expected = model.embed(texts, norm=True)
    got = PooledWordllama(model)(texts)
    assert got.shape == expected.shape == (len(texts), dimensions)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=2e-6, equal_nan=True)


def test_one_text_and_no_text() -> None:
    model = _wordllama(256)
    assert PooledWordllama(model)([]).shape == (0, 256)
    np.testing.assert_allclose(PooledWordllama(model)(["hello world"]),
                               model.embed(["hello world"], norm=True), atol=2e-6)

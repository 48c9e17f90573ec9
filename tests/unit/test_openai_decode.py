"""``decode_embeddings``: an OpenAI embeddings answer's body, read without the SDK's models."""

from __future__ import annotations

import base64

import numpy as np
import orjson
import pytest

from pgai_orm.embedders.errors import PermanentEmbeddingError
from pgai_orm.embedders.openai import decode_embeddings


def _b64(values: list[float]) -> str:
    return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode()


def test_base64_and_float_answers_decode_in_input_order_with_tokens() -> None:
    body = orjson.dumps({"object": "list", "model": "m", "usage": {"total_tokens": 7},
                         "data": [{"index": 1, "embedding": _b64([0.5, -1.0])},
                                  {"index": 0, "embedding": [0.25, 2.0]}]})
    vectors, tokens = decode_embeddings(body)
    assert vectors == [[0.25, 2.0], [0.5, -1.0]]
    assert all(isinstance(v, list) for v in vectors)
    assert tokens == 7


def test_an_answer_without_usage_has_no_token_count() -> None:
    assert decode_embeddings(orjson.dumps({"data": [{"index": 0, "embedding": [1.0]}]})) == ([[1.0]], None)


@pytest.mark.parametrize("body", [b"<html>proxy error</html>", b'{"error": "nope"}',
                                  b'{"data": [{"index": 0, "embedding": 3}]}',
                                  b'{"data": [{"index": 0, "embedding": "not base64!"}]}'])
def test_a_body_that_is_not_an_embeddings_answer_names_the_endpoint(body: bytes) -> None:
    with pytest.raises(PermanentEmbeddingError, match=r"http://x/v1 answered something that is not"
                                                      r" an embeddings response.*base_url"):
        decode_embeddings(body, "http://x/v1")

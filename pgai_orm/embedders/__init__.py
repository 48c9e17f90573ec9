"""Embedders: one provider per module, chosen from a config's ``implementation``.

``create_embedder(config)`` is the single way to get one, used by the processors to embed
chunks and by query-time search to embed the query, so both use the same model, dimensions and
provider settings. Provider modules are imported only when their implementation is used (the
``litellm`` import alone takes seconds).
"""

from __future__ import annotations

import importlib
from typing import Any

from pgai_orm.embedders.base import Embedder, Vector
from pgai_orm.embedders.errors import (
    DimensionMismatchError,
    EmbeddingError,
    InputTooLongError,
    MissingApiKeyError,
    MissingExtraError,
    PermanentEmbeddingError,
    TransientEmbeddingError,
)
from pgai_orm.embedders.retry import RetryPolicy

__all__ = [
    "DimensionMismatchError",
    "Embedder",
    "EmbeddingError",
    "InputTooLongError",
    "MissingApiKeyError",
    "MissingExtraError",
    "PermanentEmbeddingError",
    "RetryPolicy",
    "TransientEmbeddingError",
    "Vector",
    "create_embedder",
]

_MODULES = {
    "local": "pgai_orm.embedders.local",
    "openai": "pgai_orm.embedders.openai",
    "ollama": "pgai_orm.embedders.ollama",
    "litellm": "pgai_orm.embedders.litellm",
    "voyageai": "pgai_orm.embedders.voyageai",
}


def create_embedder(
    config: Any,
    *,
    concurrency: int | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
) -> Embedder:
    """Build the embedder for an embedding config (duck-typed on ``.implementation``).

    ``concurrency`` (requests in flight per ``embed`` call), ``retry`` and ``timeout`` (seconds
    per request) are runtime settings, not part of the vectorizer's config; ``None`` keeps the
    provider's default. A missing API key raises :class:`MissingApiKeyError` here, at start-up,
    naming the environment variable.
    """
    implementation = getattr(config, "implementation", None)
    module_name = _MODULES.get(implementation)  # type: ignore[arg-type]  # None finds nothing: the error below
    if module_name is None:
        raise PermanentEmbeddingError(
            f"implementation: unknown embedding implementation {implementation!r}"
        )
    options: dict[str, Any] = {}
    if concurrency is not None:
        options["concurrency"] = concurrency
    if retry is not None:
        options["retry"] = retry
    if timeout is not None and implementation != "local":
        options["timeout"] = timeout
    embedder: Embedder = importlib.import_module(module_name).create(config, **options)
    return embedder

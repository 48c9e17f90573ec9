"""Ollama embeddings over its HTTP API (``POST /api/embed``) with httpx.

``/api/embed`` takes a list of inputs in one request and returns unit vectors; ``options``
(model parameters such as ``num_ctx``) and ``keep_alive`` (how long the model stays loaded) pass
through from the config as pgai does. Ollama truncates over-long inputs itself
(``truncate`` defaults to true), so no tokenizer is needed here.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from pgai_orm.embedders.base import DEFAULT_TIMEOUT, BatchResult, Embedder, PerLoop
from pgai_orm.embedders.batching import BatchLimits
from pgai_orm.embedders.errors import PermanentEmbeddingError, TransientEmbeddingError
from pgai_orm.embedders.http import error_for_status

if TYPE_CHECKING:
    import httpx

DEFAULT_BASE_URL = "http://localhost:11434"


def default_base_url() -> str:
    """``OLLAMA_HOST`` (as the Ollama CLI reads it), else the local default."""
    host = os.environ.get("OLLAMA_HOST", "").strip()
    if not host:
        return DEFAULT_BASE_URL
    return host if "://" in host else f"http://{host}"


class OllamaEmbedder(Embedder):
    """One ``/api/embed`` request per batch."""

    limits = BatchLimits(max_inputs=256)
    provider = "ollama"

    def __init__(
        self,
        model: str,
        dimensions: int,
        *,
        base_url: str | None = None,
        options: dict[str, Any] | None = None,
        keep_alive: str | int | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        super().__init__(dimensions, **kwargs)
        self.model = model
        self.base_url = (base_url or default_base_url()).rstrip("/")
        self.options = options
        self.keep_alive = keep_alive
        self.timeout = timeout
        self._clients: PerLoop[httpx.AsyncClient] = PerLoop(self._new_client)

    def _new_client(self) -> httpx.AsyncClient:
        import httpx

        return httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout)

    def _body(self, texts: list[str]) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "input": texts}
        if self.options:
            body["options"] = self.options
        if self.keep_alive is not None:
            body["keep_alive"] = self.keep_alive
        return body

    async def _embed_batch(self, texts: list[str]) -> BatchResult:
        import httpx

        try:
            response = await (await self._clients.get()).post("/api/embed", json=self._body(texts))
        except httpx.TimeoutException as exc:
            raise TransientEmbeddingError(f"request timed out: {type(exc).__name__}") from None
        except httpx.TransportError as exc:
            raise TransientEmbeddingError(f"connection failed: {exc}") from None
        if response.status_code != 200:
            raise error_for_status(response.status_code, _error_text(response), response.headers)
        try:
            body = response.json()
            vectors = list(body["embeddings"])
        except (ValueError, KeyError, TypeError) as exc:
            raise PermanentEmbeddingError(f"unexpected response from Ollama: {exc!r}") from None
        tokens = body.get("prompt_eval_count")  # the tokens Ollama evaluated, when it says
        return BatchResult(vectors, tokens if isinstance(tokens, int) else None)


def _error_text(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.text))
    except ValueError:
        return response.text[:500]


def create(config: Any, **kwargs: Any) -> OllamaEmbedder:
    """Build from an ``EmbeddingOllamaConfig``-like object."""
    return OllamaEmbedder(
        config.model,
        config.dimensions,
        base_url=getattr(config, "base_url", None),
        options=getattr(config, "options", None),
        keep_alive=getattr(config, "keep_alive", None),
        **kwargs,
    )

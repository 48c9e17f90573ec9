"""Any provider LiteLLM supports (Cohere, Azure, Bedrock, Mistral, ...) via ``litellm.aembedding``.

``litellm`` is an optional extra and takes seconds to import, so it is imported on first use
only. Before that import ``LITELLM_LOCAL_MODEL_COST_MAP=True`` keeps it from fetching its cost
map from the network. LiteLLM's own retries are disabled (``num_retries=0`` and
``litellm.DEFAULT_MAX_RETRIES = 0``: for embeddings it treats ``max_retries=0`` as "use the
default"), since :mod:`pgai_orm.embedders.retry` retries with the pipeline's bounded policy.

LiteLLM passes the provider's response headers on in ``_hidden_params["additional_headers"]``
(OpenAI's ``x-ratelimit-*`` under their own names and every header again prefixed with
``llm_provider-``); they feed the pacing bucket as for the OpenAI embedder. Providers that send
no such headers are not paced.
"""

from __future__ import annotations

import functools
import os
import threading
from typing import Any

from pgai_orm.embedders.base import DEFAULT_TIMEOUT, REMOTE_CONCURRENCY, BatchResult, Embedder
from pgai_orm.embedders.batching import OPENAI_LIMITS, BatchLimits, cl100k
from pgai_orm.embedders.errors import (
    EmbeddingError,
    InputTooLongError,
    MissingApiKeyError,
    MissingExtraError,
    PermanentEmbeddingError,
    TransientEmbeddingError,
    redact,
)
from pgai_orm.embedders.http import error_for_status
from pgai_orm.embedders.ratelimit import PacingBucket, bucket_for

_import_lock = threading.Lock()

#: request limits by LiteLLM provider prefix (provider documentation); others: count only
_LIMITS_BY_PREFIX: dict[str, BatchLimits] = {
    "openai/": OPENAI_LIMITS,
    "azure/": OPENAI_LIMITS,
    "text-embedding-": OPENAI_LIMITS,
    "cohere/": BatchLimits(max_inputs=96),
    "voyage/": BatchLimits(max_inputs=128, max_tokens=120_000),
    "mistral/": BatchLimits(max_inputs=128, max_tokens=16_000),
}


@functools.cache
def _litellm_module() -> Any:
    with _import_lock:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        try:
            import litellm
        except ImportError as exc:
            raise MissingExtraError(
                "the litellm and voyageai embedders need the 'litellm' extra "
                "(pip install 'pg-stream-vectorizer[litellm]')"
            ) from exc
        litellm.DEFAULT_MAX_RETRIES = 0  # type: ignore[misc]  # declared Final, but read at call time
        litellm.num_retries = 0
        litellm.telemetry = False
        litellm.suppress_debug_info = True
        return litellm


def limits_for(model: str) -> BatchLimits:
    for prefix, limits in _LIMITS_BY_PREFIX.items():
        if model.startswith(prefix):
            return limits
    return BatchLimits(max_inputs=512)


def _headers_of(exc: Exception) -> Any:
    headers = getattr(exc, "litellm_response_headers", None) or getattr(exc, "headers", None)
    if headers:
        return headers
    response = getattr(exc, "response", None)
    return getattr(response, "headers", None)


def map_litellm_error(exc: Exception, api_key: str | None) -> EmbeddingError:
    """Translate a LiteLLM exception (they subclass OpenAI's) into our two classes."""
    import openai

    litellm = _litellm_module()
    message = redact(str(exc), api_key)
    if isinstance(exc, litellm.ContextWindowExceededError):
        return InputTooLongError(message, status=400)
    if isinstance(exc, openai.APITimeoutError):
        return TransientEmbeddingError(f"request timed out: {message}", status=408)
    status = getattr(exc, "status_code", None)
    if isinstance(exc, openai.APIConnectionError) and not isinstance(status, int):
        return TransientEmbeddingError(f"connection failed: {message}")
    if isinstance(status, int):
        return error_for_status(status, message, _headers_of(exc))
    return PermanentEmbeddingError(f"unexpected {type(exc).__name__}: {message}")


class LiteLLMEmbedder(Embedder):
    """One ``litellm.aembedding`` call per batch."""

    provider = "litellm"

    def __init__(
        self,
        model: str,
        dimensions: int,
        *,
        api_key: str | None = None,
        extra_options: dict[str, Any] | None = None,
        send_dimensions: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("concurrency", REMOTE_CONCURRENCY)
        super().__init__(dimensions, **kwargs)
        self.model = model
        self.extra_options = dict(extra_options or {})
        self.send_dimensions = send_dimensions
        self.timeout = timeout
        self.limits = limits_for(model)
        self._api_key = api_key
        self._litellm = _litellm_module()
        endpoint = self.extra_options.get("api_base") or self.extra_options.get("base_url")
        self._bucket = bucket_for(self.provider, str(endpoint or ""), api_key, model)

    def __repr__(self) -> str:  # never show the key
        return f"{type(self).__name__}(model={self.model!r}, dimensions={self.dimensions})"

    def _encoding(self) -> Any:
        # cl100k is exact for OpenAI models and a fair estimate for token caps elsewhere
        return cl100k() if self.limits.max_tokens is not None else None

    def _pacing(self) -> PacingBucket | None:
        return self._bucket

    def _request_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"timeout": self.timeout, "num_retries": 0}
        if self.send_dimensions:
            options["dimensions"] = self.dimensions
        if self._api_key is not None:
            options["api_key"] = self._api_key
        options.update(self.extra_options)
        return options

    async def _embed_batch(self, texts: list[str]) -> BatchResult:
        try:
            response = await self._litellm.aembedding(
                model=self.model, input=texts, **self._request_options()
            )
        except Exception as exc:  # noqa: BLE001  # litellm raises many types; all are mapped
            raise map_litellm_error(exc, self._api_key) from None
        data = sorted(response.data, key=_index)
        return BatchResult([_embedding(item) for item in data], _total_tokens(response),
                           _response_headers(response))


def _total_tokens(response: Any) -> int | None:
    usage = getattr(response, "usage", None)
    tokens = usage.get("total_tokens") if isinstance(usage, dict) else getattr(usage, "total_tokens", None)
    return tokens if isinstance(tokens, int) and tokens > 0 else None


def _response_headers(response: Any) -> dict[str, str] | None:
    """The provider's headers LiteLLM kept (``_hidden_params``), else ``_response_headers``."""
    hidden = getattr(response, "_hidden_params", None) or {}
    headers = hidden.get("additional_headers") if isinstance(hidden, dict) else None
    headers = headers or getattr(response, "_response_headers", None)
    return {str(k): str(v) for k, v in headers.items()} if headers else None


def _index(item: Any) -> int:
    return int(item["index"] if isinstance(item, dict) else item.index)


def _embedding(item: Any) -> list[float]:
    return list(item["embedding"] if isinstance(item, dict) else item.embedding)


def optional_api_key(variable: str | None) -> str | None:
    """The key from ``variable`` if the config names one (an unset variable is an error)."""
    if not variable:
        return None
    key = os.environ.get(variable, "")
    if not key:
        raise MissingApiKeyError(variable)
    return key


def create(config: Any, **kwargs: Any) -> LiteLLMEmbedder:
    """Build from an ``EmbeddingLitellmConfig``-like object."""
    return LiteLLMEmbedder(
        config.model,
        config.dimensions,
        api_key=optional_api_key(getattr(config, "api_key_name", None)),
        extra_options=getattr(config, "extra_options", None),
        **kwargs,
    )

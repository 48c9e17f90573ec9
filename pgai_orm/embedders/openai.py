"""OpenAI embeddings (and OpenAI-compatible servers via ``base_url``) through the ``openai`` SDK.

The SDK's own retries are off (``max_retries=0``): retrying happens in :mod:`pgai_orm.embedders.retry`
with the pipeline's bounded policy, and the SDK's exceptions are mapped to our two classes.
Requests ask for ``encoding_format: base64`` (the SDK's default; a quarter of the JSON size of
floats), and the answer's body is decoded here (``orjson`` and ``numpy.frombuffer``) instead of by
the SDK, whose pydantic models and list copies of every float were most of a worker's CPU per
batch; an endpoint that answers floats anyway is read as floats. ``dimensions`` is sent only to
models that accept it (``text-embedding-ada-002`` rejects it). ``user`` carries pgai's ``chat_user``.

Requests go through ``with_raw_response`` so the ``x-ratelimit-*`` headers reach the pacing
bucket of this key, endpoint and model (:mod:`pgai_orm.embedders.ratelimit`), and
``usage.total_tokens`` is reported as what the request cost.
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from pgai_orm.embedders.base import (
    DEFAULT_TIMEOUT,
    REMOTE_CONCURRENCY,
    BatchResult,
    Embedder,
    PerLoop,
    Vector,
)
from pgai_orm.embedders.batching import OPENAI_LIMITS, cl100k
from pgai_orm.embedders.errors import (
    EmbeddingError,
    MissingApiKeyError,
    MissingExtraError,
    PermanentEmbeddingError,
    TransientEmbeddingError,
    redact,
)
from pgai_orm.embedders.http import error_for_status
from pgai_orm.embedders.ratelimit import PacingBucket, bucket_for

if TYPE_CHECKING:
    import openai
    import tiktoken

DEFAULT_API_KEY_NAME = "OPENAI_API_KEY"
_MODELS_WITHOUT_DIMENSIONS = ("text-embedding-ada-002",)
#: The names of OpenAI's embedding models, whose tokenizer is cl100k_base.
OPENAI_MODEL_PREFIX = "text-embedding-"


def api_key_from_env(variable: str) -> str:
    """Read an API key from the environment variable named by the config."""
    key = os.environ.get(variable, "")
    if not key:
        raise MissingApiKeyError(variable)
    return key


def map_openai_error(exc: Exception, api_key: str | None) -> EmbeddingError:
    """Translate an ``openai`` SDK exception into a transient or permanent error."""
    import openai

    message = redact(str(exc), api_key)
    if isinstance(exc, openai.APITimeoutError):
        return TransientEmbeddingError(f"request timed out: {message}")
    if isinstance(exc, openai.APIConnectionError):
        return TransientEmbeddingError(f"connection failed: {message}")
    if isinstance(exc, openai.APIStatusError):
        return error_for_status(exc.status_code, message, exc.response.headers)
    return PermanentEmbeddingError(f"unexpected {type(exc).__name__}: {message}")


class OpenAIEmbedder(Embedder):
    """``AsyncOpenAI().embeddings.create`` per batch; inputs counted with cl100k_base."""

    limits = OPENAI_LIMITS
    provider = "openai"

    def __init__(
        self,
        model: str,
        dimensions: int,
        *,
        api_key: str,
        base_url: str | None = None,
        user: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("concurrency", REMOTE_CONCURRENCY)
        super().__init__(dimensions, **kwargs)
        self.model = model
        self.base_url = base_url
        self.user = user
        self.timeout = timeout
        self._api_key = api_key
        self._clients: PerLoop[openai.AsyncOpenAI] = PerLoop(self._new_client)
        self._bucket = bucket_for(self.provider, base_url, api_key, model)

    def __repr__(self) -> str:  # never show the key
        return (
            f"OpenAIEmbedder(model={self.model!r}, dimensions={self.dimensions}, "
            f"base_url={self.base_url!r})"
        )

    def warm(self) -> None:
        """Also import what the SDK imports on its first request: its resource classes and the
        pydantic models of the response (about a second of model building on two cores)."""
        super().warm()
        import openai.types.create_embedding_response  # noqa: F401  # pydantic models

        _ = self._new_client().embeddings.with_raw_response  # resources are imported lazily

    def _new_client(self) -> openai.AsyncOpenAI:
        try:
            import openai
        except ImportError as exc:
            raise MissingExtraError(
                "the openai embedder needs the 'openai' extra"
                " (pip install 'pg-stream-vectorizer[openai]')") from exc

        return openai.AsyncOpenAI(
            api_key=self._api_key, base_url=self.base_url, max_retries=0, timeout=self.timeout
        )

    def _encoding(self) -> tiktoken.Encoding | None:
        """cl100k_base for OpenAI's own models (``text-embedding-*``, wherever they are served);
        none for another model behind an OpenAI-compatible endpoint, whose tokenizer is not
        cl100k: counting with it would be a guess that costs ~40 MiB and a pass over every text,
        so such inputs are not truncated here and pacing estimates tokens from characters
        (pgai's worker does the same)."""
        return cl100k() if self.model.startswith(OPENAI_MODEL_PREFIX) else None

    def _pacing(self) -> PacingBucket | None:
        return self._bucket

    def _request_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if self.model not in _MODELS_WITHOUT_DIMENSIONS:
            options["dimensions"] = self.dimensions
        if self.user is not None:
            options["user"] = self.user
        return options

    async def _embed_batch(self, texts: list[str]) -> BatchResult:
        import openai

        try:
            raw = await (await self._clients.get()).embeddings.with_raw_response.create(
                input=texts, model=self.model, encoding_format="base64", **self._request_options()
            )
        except openai.OpenAIError as exc:
            raise map_openai_error(exc, self._api_key) from None
        vectors, tokens = decode_embeddings(raw.content, self.base_url)
        return BatchResult(vectors, tokens, raw.headers)


def decode_embeddings(body: bytes, base_url: str | None = None) -> tuple[list[Vector], int | None]:
    """The vectors (in input order) and billed tokens of an embeddings answer's JSON body."""
    try:
        answer = orjson.loads(body)
        data = sorted(answer["data"], key=lambda item: item["index"])
        vectors = [_vector(item["embedding"]) for item in data]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, binascii.Error) as exc:
        where = base_url or "api.openai.com"
        raise PermanentEmbeddingError(
            f"{where} answered something that is not an embeddings response ({type(exc).__name__}:"
            f" {exc}): check the base_url and that the endpoint speaks OpenAI's /v1/embeddings"
        ) from None
    usage = answer.get("usage") if isinstance(answer, dict) else None
    tokens = usage.get("total_tokens") if isinstance(usage, dict) else None
    return vectors, tokens if isinstance(tokens, int) else None


def _vector(embedding: str | list[float]) -> Vector:
    if isinstance(embedding, str):  # little-endian float32, base64
        vector: Vector = np.frombuffer(base64.b64decode(embedding), dtype="<f4").tolist()
        return vector
    if not isinstance(embedding, list):
        raise TypeError(f"an embedding is a {type(embedding).__name__}, not a list or base64")
    return embedding


def create(config: Any, **kwargs: Any) -> OpenAIEmbedder:
    """Build from an ``EmbeddingOpenaiConfig``-like object."""
    api_key = api_key_from_env(getattr(config, "api_key_name", None) or DEFAULT_API_KEY_NAME)
    return OpenAIEmbedder(
        config.model,
        config.dimensions,
        api_key=api_key,
        base_url=getattr(config, "base_url", None),
        user=getattr(config, "chat_user", None),
        **kwargs,
    )

"""Voyage AI embeddings, through LiteLLM's ``voyage/`` provider.

Going through LiteLLM rather than the ``voyageai`` SDK keeps one dependency (the ``litellm``
extra) and one error mapping. ``input_type`` (``document`` for stored chunks, ``query`` for
searches) is passed through; ``output_dimension`` is sent only to the models that accept a
choice of size, the others have a fixed size that the dimension check verifies.
"""

from __future__ import annotations

from typing import Any

from pgai_orm.embedders.litellm import LiteLLMEmbedder, optional_api_key

DEFAULT_API_KEY_NAME = "VOYAGE_API_KEY"
_FLEXIBLE_DIMENSION_MODELS = ("voyage-3-large", "voyage-3.5", "voyage-code-3", "voyage-4")


class VoyageAIEmbedder(LiteLLMEmbedder):
    """``litellm.aembedding(model="voyage/<model>", input_type=...)`` per batch."""

    provider = "voyageai"

    def __init__(
        self,
        model: str,
        dimensions: int,
        *,
        input_type: str | None = "document",
        base_url: str | None = None,
        **kwargs: Any,
    ) -> None:
        bare = model.removeprefix("voyage/")
        extra: dict[str, Any] = dict(kwargs.pop("extra_options", None) or {})
        if input_type:
            extra["input_type"] = input_type
        if base_url:
            extra["api_base"] = base_url
        super().__init__(
            f"voyage/{bare}",
            dimensions,
            extra_options=extra,
            send_dimensions=bare.startswith(_FLEXIBLE_DIMENSION_MODELS),
            **kwargs,
        )


def create(config: Any, **kwargs: Any) -> VoyageAIEmbedder:
    """Build from an ``EmbeddingVoyageaiConfig``-like object."""
    return VoyageAIEmbedder(
        config.model,
        config.dimensions,
        input_type=getattr(config, "input_type", "document"),
        base_url=getattr(config, "base_url", None),
        api_key=optional_api_key(getattr(config, "api_key_name", None) or DEFAULT_API_KEY_NAME),
        **kwargs,
    )

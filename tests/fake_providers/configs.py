"""Config objects for tests: the real ``pgai_orm.configuration`` classes once they exist.

Until that module lands, a namespace with the same attributes stands in, since the processors
read configs by attribute and ``.implementation`` only.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

_IMPLEMENTATIONS = {
    "EmbeddingLocalConfig": "local",
    "EmbeddingOpenaiConfig": "openai",
    "EmbeddingOllamaConfig": "ollama",
    "EmbeddingVoyageaiConfig": "voyageai",
    "EmbeddingLitellmConfig": "litellm",
}


def make_config(class_name: str, **fields: Any) -> Any:
    try:
        from pgai_orm import configuration
    except ImportError:
        return SimpleNamespace(implementation=_IMPLEMENTATIONS[class_name], **fields)
    return getattr(configuration, class_name)(**fields)

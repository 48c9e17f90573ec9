"""Vectorizer configs as the catalog stores them (``VectorizerConfig.to_dict()``).

Dicts, not config objects: the tests hand them to processes through the catalog, compare the
store with what they imply, and change single fields to make bad ones.
"""

from __future__ import annotations

from typing import Any

from pgai_orm.configuration import (
    ChunkingRecursiveCharacterTextSplitterConfig,
    EmbeddingLocalConfig,
    EmbeddingOpenaiConfig,
    FormattingPythonTemplateConfig,
    VectorizerConfig,
)


def local_config(template: str = "$title - $chunk", dimensions: int = 256) -> dict[str, Any]:
    """The offline wordllama model on ``content``, in chunks of about two sentences."""
    return VectorizerConfig(
        embedding=EmbeddingLocalConfig(model="wordllama", dimensions=dimensions),
        chunking=ChunkingRecursiveCharacterTextSplitterConfig(
            chunk_column="content", chunk_size=120, chunk_overlap=20, separators=[". ", " "]),
        formatting=FormattingPythonTemplateConfig(template=template),
    ).to_dict()


#: the environment variable :func:`openai_config` names for the key unless told otherwise
OPENAI_KEY_ENV = "VECTORIZER_TEST_OPENAI_KEY"


def openai_config(base_url: str, api_key_name: str = OPENAI_KEY_ENV,
                  dimensions: int = 64) -> dict[str, Any]:
    """:func:`local_config` with the OpenAI embedder pointed at ``base_url`` (a fake server);
    the key is read from the environment variable ``api_key_name``."""
    config = local_config()
    config["embedding"] = EmbeddingOpenaiConfig(
        model="text-embedding-3-small", dimensions=dimensions, api_key_name=api_key_name,
        base_url=base_url).to_dict()
    return config

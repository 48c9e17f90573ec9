"""pgai_orm.configuration: pgai's defaults, validation naming the field, and the round trips
(JSON for the catalog, repr for rendered migrations) that the rest of the project relies on."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from pgai_orm import configuration as cfg
from pgai_orm.configuration import (
    ChunkingCharacterTextSplitterConfig,
    ChunkingNoneConfig,
    ChunkingRecursiveCharacterTextSplitterConfig,
    ConfigurationError,
    EmbeddingLitellmConfig,
    EmbeddingLocalConfig,
    EmbeddingOllamaConfig,
    EmbeddingOpenaiConfig,
    EmbeddingVoyageaiConfig,
    FormattingChunkValueConfig,
    FormattingPythonTemplateConfig,
    IndexingHnswConfig,
    IndexingNoneConfig,
    LoadingColumnConfig,
    ProcessingConfig,
    VectorizerConfig,
    config_from_dict,
)

#: (kind for config_from_dict, instance) for every class, defaults and non-defaults
SAMPLES: list[tuple[str, Any]] = [
    ("loading", LoadingColumnConfig("body")),
    ("loading", LoadingColumnConfig(column_name="body", retries=0)),
    ("chunking", ChunkingCharacterTextSplitterConfig()),
    ("chunking", ChunkingCharacterTextSplitterConfig(
        chunk_column="c", chunk_size=10, chunk_overlap=0, separator=r"\s+",
        is_separator_regex=True)),
    ("chunking", ChunkingRecursiveCharacterTextSplitterConfig()),
    ("chunking", ChunkingRecursiveCharacterTextSplitterConfig(
        chunk_column="content", separators=[".", " "])),
    ("chunking", ChunkingNoneConfig()),
    ("formatting", FormattingPythonTemplateConfig()),
    ("formatting", FormattingPythonTemplateConfig(template="$title - $chunk ($$5)")),
    ("formatting", FormattingChunkValueConfig()),
    ("embedding", EmbeddingOpenaiConfig(model="text-embedding-3-small")),
    ("embedding", EmbeddingOpenaiConfig(
        model="text-embedding-3-large", dimensions=256, chat_user="u", api_key_name="K",
        base_url="http://127.0.0.1:1/v1")),
    ("embedding", EmbeddingOpenaiConfig(model="my-proxy-model", dimensions=7)),
    ("embedding", EmbeddingOllamaConfig(model="nomic-embed-text", dimensions=768)),
    ("embedding", EmbeddingOllamaConfig(
        model="m", dimensions=3, base_url="http://h:11434",
        options={"num_ctx": 2048, "stop": ["a", {"x": None}]}, keep_alive="5m")),
    ("embedding", EmbeddingVoyageaiConfig(model="voyage-3", dimensions=1024)),
    ("embedding", EmbeddingVoyageaiConfig(
        model="voyage-3", dimensions=1024, input_type=None, api_key_name="V")),
    ("embedding", EmbeddingLitellmConfig(model="cohere/embed-english-v3.0", dimensions=1024)),
    ("embedding", EmbeddingLitellmConfig(
        model="m", dimensions=2, api_key_name="K", extra_options={"timeout": 3.5})),
    ("embedding", EmbeddingLocalConfig()),
    ("embedding", EmbeddingLocalConfig(dimensions=64)),
    ("embedding", EmbeddingLocalConfig(model="all-MiniLM-L6-v2")),
    ("indexing", IndexingNoneConfig()),
    ("indexing", IndexingHnswConfig()),
    ("indexing", IndexingHnswConfig(min_rows=0, opclass="vector_l2_ops", m=8,
                                    ef_construction=16, create_when_queue_empty=False)),
    ("processing", ProcessingConfig()),
    ("processing", ProcessingConfig(batch_size=2048, concurrency=50)),
]

FULL = VectorizerConfig(
    embedding=EmbeddingOpenaiConfig(model="text-embedding-3-small", dimensions=1536),
    chunking=ChunkingRecursiveCharacterTextSplitterConfig(
        chunk_column="content", chunk_size=800, chunk_overlap=400, separators=[".", " "]),
    formatting=FormattingPythonTemplateConfig(template="$title - $chunk"),
    indexing=IndexingHnswConfig(),
)
WITH_LOADING = VectorizerConfig(
    loading=LoadingColumnConfig("body"), chunking=ChunkingNoneConfig(),
    formatting=FormattingChunkValueConfig(),
    embedding=EmbeddingOllamaConfig(model="m", dimensions=4, options={"a": 1}),
    processing=ProcessingConfig(batch_size=10, concurrency=2))
VECTORIZERS = [FULL, WITH_LOADING,
               VectorizerConfig(chunking=ChunkingRecursiveCharacterTextSplitterConfig("c"))]


def _ids(samples: list[tuple[str, Any]]) -> list[str]:
    return [repr(s) for _, s in samples]


# --------------------------------------------------------------------------- defaults = pgai's


def test_defaults_match_pgai() -> None:
    rec = ChunkingRecursiveCharacterTextSplitterConfig()
    assert (rec.chunk_column, rec.chunk_size, rec.chunk_overlap, rec.is_separator_regex) == (
        None, 800, 400, False)
    assert rec.separators == ("\n\n", "\n", ".", "?", "!", " ", "")
    char = ChunkingCharacterTextSplitterConfig()
    assert (char.chunk_size, char.chunk_overlap, char.separator, char.is_separator_regex) == (
        800, 400, "\n\n", False)
    assert FormattingPythonTemplateConfig().template == "$chunk"
    assert LoadingColumnConfig("c").retries == 6
    hnsw = IndexingHnswConfig()
    assert (hnsw.min_rows, hnsw.opclass, hnsw.m, hnsw.ef_construction,
            hnsw.create_when_queue_empty) == (100000, "vector_cosine_ops", 16, 64, True)
    assert hnsw.distance == "cosine_distance"
    assert ProcessingConfig() == ProcessingConfig(batch_size=50, concurrency=1)
    openai = EmbeddingOpenaiConfig(model="text-embedding-3-small")
    assert (openai.dimensions, openai.api_key_name, openai.chat_user, openai.base_url) == (
        1536, "OPENAI_API_KEY", None, None)
    voyage = EmbeddingVoyageaiConfig(model="voyage-3", dimensions=1024)
    assert (voyage.input_type, voyage.api_key_name) == ("document", "VOYAGE_API_KEY")
    litellm = EmbeddingLitellmConfig(model="m", dimensions=1)
    assert (litellm.api_key_name, litellm.extra_options) == (None, None)
    ollama = EmbeddingOllamaConfig(model="m", dimensions=1)
    assert (ollama.base_url, ollama.options, ollama.keep_alive) == (None, None, None)
    assert EmbeddingLocalConfig() == EmbeddingLocalConfig(model="wordllama", dimensions=256)
    vc = VectorizerConfig(chunking=ChunkingRecursiveCharacterTextSplitterConfig("content"))
    assert vc.embedding == EmbeddingLocalConfig()
    assert vc.formatting == FormattingPythonTemplateConfig()
    assert (vc.loading, vc.indexing, vc.processing) == (
        None, IndexingNoneConfig(), ProcessingConfig())


def test_implementation_names_are_pgais() -> None:
    names = {type(s).__name__: s.to_dict().get("implementation") for _, s in SAMPLES}
    assert names == {
        "LoadingColumnConfig": "column",
        "ChunkingCharacterTextSplitterConfig": "character_text_splitter",
        "ChunkingRecursiveCharacterTextSplitterConfig": "recursive_character_text_splitter",
        "ChunkingNoneConfig": "none",
        "FormattingPythonTemplateConfig": "python_template",
        "FormattingChunkValueConfig": "chunk_value",
        "EmbeddingOpenaiConfig": "openai",
        "EmbeddingOllamaConfig": "ollama",
        "EmbeddingVoyageaiConfig": "voyageai",
        "EmbeddingLitellmConfig": "litellm",
        "EmbeddingLocalConfig": "local",
        "IndexingNoneConfig": "none",
        "IndexingHnswConfig": "hnsw",
        "ProcessingConfig": None,
    }
    for _, sample in SAMPLES:
        assert getattr(sample, "implementation", None) == names[type(sample).__name__]


def test_every_embedding_config_resolves_dimensions() -> None:
    for kind, sample in SAMPLES:
        if kind == "embedding":
            assert isinstance(sample.dimensions, int) and sample.dimensions > 0
    assert EmbeddingOpenaiConfig(model="text-embedding-3-large").dimensions == 3072
    assert EmbeddingOpenaiConfig(model="text-embedding-ada-002").dimensions == 1536
    assert EmbeddingLocalConfig(model="all-MiniLM-L6-v2").dimensions == 384


def test_hnsw_distance_per_opclass() -> None:
    assert {op: IndexingHnswConfig(opclass=op).distance for op in (
        "vector_cosine_ops", "vector_l2_ops", "vector_ip_ops", "vector_l1_ops")} == {
        "vector_cosine_ops": "cosine_distance", "vector_l2_ops": "l2_distance",
        "vector_ip_ops": "max_inner_product", "vector_l1_ops": "l1_distance"}


def test_placeholders() -> None:
    assert FormattingPythonTemplateConfig("$title - ${chunk} $$x").placeholders == {
        "title", "chunk"}
    assert FormattingChunkValueConfig().placeholders == {"chunk"}


def test_source_column() -> None:
    assert FULL.source_column == "content"
    assert WITH_LOADING.source_column == "body"
    same = VectorizerConfig(loading=LoadingColumnConfig("b"),
                            chunking=ChunkingRecursiveCharacterTextSplitterConfig("b"))
    assert same.source_column == "b"


# --------------------------------------------------------------------------- validation

BAD: list[tuple[Callable[[], Any], str]] = [
    (lambda: LoadingColumnConfig(""), "LoadingColumnConfig.column_name:"),
    (lambda: LoadingColumnConfig(3), "LoadingColumnConfig.column_name:"),
    (lambda: LoadingColumnConfig("c", retries=-1), "LoadingColumnConfig.retries:"),
    (lambda: ChunkingCharacterTextSplitterConfig(chunk_size=0),
     "ChunkingCharacterTextSplitterConfig.chunk_size:"),
    (lambda: ChunkingCharacterTextSplitterConfig(chunk_size=10.5),
     "ChunkingCharacterTextSplitterConfig.chunk_size:"),
    (lambda: ChunkingCharacterTextSplitterConfig(chunk_size=100, chunk_overlap=100),
     "ChunkingCharacterTextSplitterConfig.chunk_overlap:"),
    (lambda: ChunkingCharacterTextSplitterConfig(chunk_overlap=-1),
     "ChunkingCharacterTextSplitterConfig.chunk_overlap:"),
    (lambda: ChunkingCharacterTextSplitterConfig(separator=None),
     "ChunkingCharacterTextSplitterConfig.separator:"),
    (lambda: ChunkingCharacterTextSplitterConfig(separator="(", is_separator_regex=True),
     "ChunkingCharacterTextSplitterConfig.separator:"),
    (lambda: ChunkingCharacterTextSplitterConfig(is_separator_regex="false"),
     "ChunkingCharacterTextSplitterConfig.is_separator_regex:"),
    (lambda: ChunkingCharacterTextSplitterConfig(chunk_column=""),
     "ChunkingCharacterTextSplitterConfig.chunk_column:"),
    (lambda: ChunkingRecursiveCharacterTextSplitterConfig(separators=[]),
     "ChunkingRecursiveCharacterTextSplitterConfig.separators:"),
    (lambda: ChunkingRecursiveCharacterTextSplitterConfig(separators=". "),
     "ChunkingRecursiveCharacterTextSplitterConfig.separators:"),
    (lambda: ChunkingRecursiveCharacterTextSplitterConfig(separators=[".", 1]),
     "ChunkingRecursiveCharacterTextSplitterConfig.separators:"),
    (lambda: ChunkingRecursiveCharacterTextSplitterConfig(separators=["["],
                                                          is_separator_regex=True),
     "ChunkingRecursiveCharacterTextSplitterConfig.separators:"),
    (lambda: ChunkingRecursiveCharacterTextSplitterConfig(chunk_size=-5),
     "ChunkingRecursiveCharacterTextSplitterConfig.chunk_size:"),
    (lambda: FormattingPythonTemplateConfig("$title"), "FormattingPythonTemplateConfig.template:"),
    (lambda: FormattingPythonTemplateConfig("$chunk $"),
     "FormattingPythonTemplateConfig.template:"),
    (lambda: FormattingPythonTemplateConfig(""), "FormattingPythonTemplateConfig.template:"),
    (lambda: EmbeddingOpenaiConfig(model="text-embedding-3-small", dimensions=0),
     "EmbeddingOpenaiConfig.dimensions:"),
    (lambda: EmbeddingOpenaiConfig(model="text-embedding-3-small", dimensions=True),
     "EmbeddingOpenaiConfig.dimensions:"),
    (lambda: EmbeddingOpenaiConfig(model="text-embedding-3-small", dimensions=4096),
     "EmbeddingOpenaiConfig.dimensions:"),
    (lambda: EmbeddingOpenaiConfig(model="text-embedding-ada-002", dimensions=512),
     "EmbeddingOpenaiConfig.dimensions:"),
    (lambda: EmbeddingOpenaiConfig(model="unknown-model"), "EmbeddingOpenaiConfig.dimensions:"),
    (lambda: EmbeddingOpenaiConfig(model=""), "EmbeddingOpenaiConfig.model:"),
    (lambda: EmbeddingOpenaiConfig(model="text-embedding-3-small", api_key_name=""),
     "EmbeddingOpenaiConfig.api_key_name:"),
    (lambda: EmbeddingOllamaConfig(model="m", dimensions=-1), "EmbeddingOllamaConfig.dimensions:"),
    (lambda: EmbeddingOllamaConfig(model="m", dimensions=3, options=[1]),
     "EmbeddingOllamaConfig.options:"),
    (lambda: EmbeddingOllamaConfig(model="m", dimensions=3, options={"a": object()}),
     "EmbeddingOllamaConfig.options:"),
    (lambda: EmbeddingOllamaConfig(model="m", dimensions=3, options={1: "x"}),
     "EmbeddingOllamaConfig.options:"),
    (lambda: EmbeddingVoyageaiConfig(model="v", dimensions=8, input_type="passage"),
     "EmbeddingVoyageaiConfig.input_type:"),
    (lambda: EmbeddingVoyageaiConfig(model="v", dimensions="8"),
     "EmbeddingVoyageaiConfig.dimensions:"),
    (lambda: EmbeddingLitellmConfig(model="m", dimensions=3, extra_options="x"),
     "EmbeddingLitellmConfig.extra_options:"),
    (lambda: EmbeddingLitellmConfig(model="m", dimensions=0), "EmbeddingLitellmConfig.dimensions:"),
    (lambda: EmbeddingLocalConfig(model="bert"), "EmbeddingLocalConfig.model:"),
    (lambda: EmbeddingLocalConfig(dimensions=300), "EmbeddingLocalConfig.dimensions:"),
    (lambda: EmbeddingLocalConfig(dimensions=512), "EmbeddingLocalConfig.dimensions:"),
    (lambda: EmbeddingLocalConfig(model="all-MiniLM-L6-v2", dimensions=256),
     "EmbeddingLocalConfig.dimensions:"),
    (lambda: IndexingHnswConfig(opclass="vector_hamming_ops"), "IndexingHnswConfig.opclass:"),
    (lambda: IndexingHnswConfig(min_rows=-1), "IndexingHnswConfig.min_rows:"),
    (lambda: IndexingHnswConfig(m=1), "IndexingHnswConfig.m:"),
    (lambda: IndexingHnswConfig(ef_construction=2000), "IndexingHnswConfig.ef_construction:"),
    (lambda: IndexingHnswConfig(m=40, ef_construction=64), "IndexingHnswConfig.ef_construction:"),
    (lambda: IndexingHnswConfig(create_when_queue_empty=1),
     "IndexingHnswConfig.create_when_queue_empty:"),
    (lambda: ProcessingConfig(batch_size=0), "ProcessingConfig.batch_size:"),
    (lambda: ProcessingConfig(batch_size=2049), "ProcessingConfig.batch_size:"),
    (lambda: ProcessingConfig(concurrency=0), "ProcessingConfig.concurrency:"),
    (lambda: ProcessingConfig(concurrency=51), "ProcessingConfig.concurrency:"),
    (lambda: VectorizerConfig(), "VectorizerConfig.chunking:"),
    (lambda: VectorizerConfig(chunking=ChunkingNoneConfig()), "VectorizerConfig.loading:"),
    (lambda: VectorizerConfig(loading=LoadingColumnConfig("a"),
                              chunking=ChunkingRecursiveCharacterTextSplitterConfig("b")),
     "VectorizerConfig.chunking:"),
    (lambda: VectorizerConfig(embedding={"implementation": "local"},
                              chunking=ChunkingRecursiveCharacterTextSplitterConfig("b")),
     "VectorizerConfig.embedding:"),
    (lambda: VectorizerConfig(chunking=IndexingNoneConfig()), "VectorizerConfig.chunking:"),
    (lambda: VectorizerConfig(loading="body",
                              chunking=ChunkingRecursiveCharacterTextSplitterConfig("b")),
     "VectorizerConfig.loading:"),
]


@pytest.mark.parametrize("make, prefix", BAD, ids=[p for _, p in BAD])
def test_validation_error_names_the_field(make: Callable[[], Any], prefix: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        make()
    assert str(raised.value).startswith(prefix)
    assert isinstance(raised.value, ValueError)


def test_unknown_keys_and_implementations_are_named() -> None:
    with pytest.raises(ConfigurationError, match=r"^LoadingColumnConfig\.colum_name: unknown"):
        LoadingColumnConfig.from_dict({"colum_name": "x"})
    with pytest.raises(ConfigurationError, match=r"^ProcessingConfig\.implementation: unknown"):
        config_from_dict({"implementation": "default", "batch_size": 5}, "processing")
    with pytest.raises(ConfigurationError, match=r"^embedding\.implementation: .*'cohere'"):
        config_from_dict({"implementation": "cohere", "model": "m"}, "embedding")
    with pytest.raises(ConfigurationError, match=r"^chunking\.implementation: .*None"):
        config_from_dict({"chunk_size": 5}, "chunking")
    with pytest.raises(ConfigurationError, match=r"^config_from_dict\.kind: .*'scheduling'"):
        config_from_dict({"implementation": "none"}, "scheduling")
    with pytest.raises(ConfigurationError, match=r"^IndexingHnswConfig\.implementation:"):
        IndexingHnswConfig.from_dict({"implementation": "diskann"})
    with pytest.raises(ConfigurationError, match=r"^VectorizerConfig\.scheduling: unknown"):
        VectorizerConfig.from_dict({**FULL.to_dict(), "scheduling": {}})
    with pytest.raises(ConfigurationError, match=r"^indexing\.implementation: .*'diskann'"):
        VectorizerConfig.from_dict({**FULL.to_dict(), "indexing": {"implementation": "diskann"}})


def test_same_name_means_different_class_per_kind() -> None:
    assert config_from_dict({"implementation": "none"}, "chunking") == ChunkingNoneConfig()
    assert config_from_dict({"implementation": "none"}, "indexing") == IndexingNoneConfig()


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("kind, config", SAMPLES, ids=_ids(SAMPLES))
def test_json_round_trip(kind: str, config: Any) -> None:
    data = orjson.loads(orjson.dumps(config.to_dict()))
    assert data == config.to_dict()
    assert config_from_dict(data, kind) == config
    assert type(config).from_dict(data) == config


@pytest.mark.parametrize("kind, config", SAMPLES, ids=_ids(SAMPLES))
def test_repr_round_trip_and_hash(kind: str, config: Any) -> None:
    again = eval(repr(config), vars(cfg))
    assert again == config and type(again) is type(config)
    assert hash(again) == hash(config)


@pytest.mark.parametrize("config", VECTORIZERS, ids=["full", "loading", "defaults"])
def test_vectorizer_round_trips(config: VectorizerConfig) -> None:
    data = orjson.loads(orjson.dumps(config.to_dict()))
    assert VectorizerConfig.from_dict(data) == config
    assert eval(repr(config), vars(cfg)) == config
    assert hash(VectorizerConfig.from_dict(data)) == hash(config)


def test_vectorizer_from_partial_dict_takes_defaults() -> None:
    vc = VectorizerConfig.from_dict({"chunking": {
        "implementation": "recursive_character_text_splitter", "chunk_column": "c"}})
    assert vc == VectorizerConfig(chunking=ChunkingRecursiveCharacterTextSplitterConfig("c"))


def test_repr_omits_defaults() -> None:
    assert repr(EmbeddingLocalConfig()) == "EmbeddingLocalConfig()"
    assert repr(ChunkingRecursiveCharacterTextSplitterConfig(chunk_column="content")) == (
        "ChunkingRecursiveCharacterTextSplitterConfig(chunk_column='content')")
    assert repr(EmbeddingOpenaiConfig(model="text-embedding-3-small", dimensions=1536)) == (
        "EmbeddingOpenaiConfig(model='text-embedding-3-small')")


def test_lists_stored_as_tuples_and_options_frozen() -> None:
    splitter = ChunkingRecursiveCharacterTextSplitterConfig(separators=[".", " "])
    assert splitter.separators == (".", " ")
    assert splitter == ChunkingRecursiveCharacterTextSplitterConfig(separators=(".", " "))
    ollama = EmbeddingOllamaConfig(model="m", dimensions=3, options={"num_ctx": 2048})
    assert ollama.options == {"num_ctx": 2048}
    assert dict(**ollama.options) == {"num_ctx": 2048}
    with pytest.raises(TypeError):
        ollama.options["num_ctx"] = 1  # type: ignore[index]
    with pytest.raises(AttributeError):
        ollama.model = "other"  # type: ignore[misc]
    assert len({ollama, EmbeddingOllamaConfig(model="m", dimensions=3,
                                              options={"num_ctx": 2048})}) == 1


# --------------------------------------------------------------------------- wordllama


@pytest.mark.parametrize("dimensions", cfg.WORDLLAMA_DIMENSIONS)
def test_wordllama_dimensions_load_offline(dimensions: int) -> None:
    """Every accepted wordllama size loads from the wheel itself, with downloads disabled."""
    wordllama = pytest.importorskip("wordllama")
    folder = os.path.dirname(wordllama.__file__)
    model = wordllama.WordLlama.load(
        cache_dir=folder, disable_download=True, dim=256,
        trunc_dim=None if dimensions == 256 else dimensions)
    assert model.embed(["offline"]).shape == (1, EmbeddingLocalConfig(
        dimensions=dimensions).dimensions)


def test_wordllama_larger_sizes_are_not_bundled() -> None:
    """512/1024 exist upstream but need a download, which is why the config refuses them."""
    wordllama = pytest.importorskip("wordllama")
    folder = os.path.dirname(wordllama.__file__)
    with pytest.raises(FileNotFoundError):
        wordllama.WordLlama.load(cache_dir=folder, disable_download=True, dim=512)


def test_all_names_exported() -> None:
    for name in cfg.__all__:
        assert hasattr(cfg, name), name


@pytest.mark.parametrize("kind, config", SAMPLES, ids=_ids(SAMPLES))
def test_pickle_and_deepcopy(kind: str, config: Any) -> None:
    """faust and multiprocessing may pickle configs; nested options must stay frozen."""
    import copy
    import pickle

    assert pickle.loads(pickle.dumps(config)) == config
    assert copy.deepcopy(config) == config

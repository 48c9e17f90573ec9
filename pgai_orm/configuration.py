"""Vectorizer configuration objects, named and shaped like pgai Vectorizer's Python classes.

Each class mirrors one of pgai's SQL config functions (``ai.embedding_openai``,
``ai.chunking_recursive_character_text_splitter``, ...) with the same parameter names and
defaults, so a migration written for pgai reads the same here. Unlike pgai's generated classes,
these validate on construction (a bad value fails when the migration is written or run, not in a
processor hours later), are frozen and hashable (autogenerate compares them), and round-trip
through ``to_dict``/``from_dict`` (the catalog's JSON) and ``repr`` (rendered migrations).
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from pgai_orm._config_base import (
    ConfigBase,
    ConfigurationError,
    _Invalid,
    any_str,
    boolean,
    field,
    instance_of,
    int_range,
    json_object,
    non_empty_str,
    one_of,
    optional,
    positive_int,
    regexes,
    str_tuple,
)
from pgai_orm.errors import InvariantError

__all__ = [
    "ChunkingCharacterTextSplitterConfig",
    "ChunkingConfig",
    "ChunkingNoneConfig",
    "ChunkingRecursiveCharacterTextSplitterConfig",
    "ConfigurationError",
    "DestinationColumnConfig",
    "DestinationConfig",
    "DestinationTableConfig",
    "EmbeddingConfig",
    "EmbeddingLitellmConfig",
    "EmbeddingLocalConfig",
    "EmbeddingOllamaConfig",
    "EmbeddingOpenaiConfig",
    "EmbeddingVoyageaiConfig",
    "FormattingChunkValueConfig",
    "FormattingConfig",
    "FormattingPythonTemplateConfig",
    "IndexingConfig",
    "IndexingHnswConfig",
    "IndexingNoneConfig",
    "LoadingColumnConfig",
    "LoadingConfig",
    "LoadingUriConfig",
    "OPENAI_NATIVE_DIMENSIONS",
    "ParsingAutoConfig",
    "ParsingConfig",
    "ParsingDoclingConfig",
    "ParsingNoneConfig",
    "ParsingPymupdfConfig",
    "ProcessingConfig",
    "TextIndexingConfig",
    "TextIndexingFullTextConfig",
    "TextIndexingNoneConfig",
    "VectorizerConfig",
    "WORDLLAMA_DIMENSIONS",
    "config_from_dict",
]

#: pgai's defaults for the recursive splitter (``ai.chunking_recursive_character_text_splitter``)
DEFAULT_SEPARATORS: tuple[str, ...] = ("\n\n", "\n", ".", "?", "!", " ", "")

# --------------------------------------------------------------------------- loading


@dataclass(frozen=True, repr=False)
class LoadingColumnConfig(ConfigBase):
    """``ai.loading_column``: embed the text of one column of the source row."""

    implementation: ClassVar[str] = "column"

    column_name: str = field(non_empty_str)
    retries: int = field(int_range(0), 6)


#: pgai's rule for ``aws_role_arn`` (``ai._validate_loading``: ``like 'arn:aws:iam::%:role/%'``)
_AWS_ROLE_ARN = re.compile(r"arn:aws:iam::[^:]*:role/.+")


def _aws_role_arn(value: Any) -> str:
    arn = non_empty_str(value)
    if not _AWS_ROLE_ARN.fullmatch(arn):
        raise _Invalid(f"must match arn:aws:iam::<account>:role/<name>, got {value!r}")
    return arn


@dataclass(frozen=True, repr=False)
class LoadingUriConfig(ConfigBase):
    """``ai.loading_uri``: the column (text) holds a URI and the worker fetches the document.

    Schemes: ``file://`` or a plain path on the worker's machine, ``http://``/``https://``,
    ``s3://bucket/key`` (boto3's credential chain; ``aws_role_arn`` is assumed through STS
    first). A transient failure (timeout, 5xx, throttling) is tried ``retries`` more times;
    docs/documents.md has the rest.
    """

    implementation: ClassVar[str] = "uri"

    column_name: str = field(non_empty_str)
    retries: int = field(int_range(0), 6)
    aws_role_arn: str | None = field(optional(_aws_role_arn), None)


LoadingConfig = LoadingColumnConfig | LoadingUriConfig

# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True, repr=False)
class ParsingAutoConfig(ConfigBase):
    """``ai.parsing_auto`` (the default): a document is parsed by its type, found from its
    bytes, its content type and its extension (PDF, DOCX, HTML, Markdown, plain text); text
    from a text column passes through unchanged."""

    implementation: ClassVar[str] = "auto"


@dataclass(frozen=True, repr=False)
class ParsingNoneConfig(ConfigBase):
    """``ai.parsing_none``: no parsing; a loaded document must be UTF-8 text (not for bytea)."""

    implementation: ClassVar[str] = "none"


@dataclass(frozen=True, repr=False)
class ParsingPymupdfConfig(ConfigBase):
    """``ai.parsing_pymupdf``: PDF (and EPUB, XPS, ...) to Markdown with PyMuPDF and
    pymupdf4llm, as pgai does. Needs the ``pymupdf`` extra on the worker, which is AGPL-3.0
    licensed (the rest of this project is Apache-2.0)."""

    implementation: ClassVar[str] = "pymupdf"


@dataclass(frozen=True, repr=False)
class ParsingDoclingConfig(ConfigBase):
    """``ai.parsing_docling`` is refused: docling downloads its layout and OCR models from the
    Hugging Face hub at first use, so it cannot work on an install that has no such access, and
    this project does not pretend otherwise. The class exists so that a pgai migration fails
    here with a message that says what to use instead."""

    implementation: ClassVar[str] = "docling"

    def _validate(self) -> None:
        raise ConfigurationError(
            "ParsingDoclingConfig: not supported: docling needs model files downloaded from the "
            "Hugging Face hub at run time, which this install cannot fetch; use "
            "ParsingAutoConfig() (PDF, DOCX, HTML, Markdown, text; the 'documents' extra) or "
            "ParsingPymupdfConfig() (the 'pymupdf' extra, AGPL-3.0)")


ParsingConfig = ParsingAutoConfig | ParsingNoneConfig | ParsingPymupdfConfig | ParsingDoclingConfig

# --------------------------------------------------------------------------- chunking


class _SplitterChecks(ConfigBase):
    """The overlap rule both LangChain-style splitters share (LangChain raises on it too)."""

    chunk_size: int
    chunk_overlap: int

    def _validate(self) -> None:
        if self.chunk_overlap >= self.chunk_size:
            raise self._error("chunk_overlap", f"must be smaller than chunk_size "
                                               f"({self.chunk_size}), got {self.chunk_overlap}")


@dataclass(frozen=True, repr=False)
class ChunkingCharacterTextSplitterConfig(_SplitterChecks):
    """``ai.chunking_character_text_splitter``: split on one separator, then merge to size."""

    implementation: ClassVar[str] = "character_text_splitter"

    chunk_column: str | None = field(optional(non_empty_str), None)
    chunk_size: int = field(positive_int, 800)
    chunk_overlap: int = field(int_range(0), 400)
    separator: str = field(any_str, "\n\n")
    is_separator_regex: bool = field(boolean, False)

    def _validate(self) -> None:
        super()._validate()
        if self.is_separator_regex:
            try:
                regexes((self.separator,))
            except _Invalid as exc:
                raise self._error("separator", str(exc)) from None


@dataclass(frozen=True, repr=False)
class ChunkingRecursiveCharacterTextSplitterConfig(_SplitterChecks):
    """``ai.chunking_recursive_character_text_splitter``: try separators in order until it fits."""

    implementation: ClassVar[str] = "recursive_character_text_splitter"

    chunk_column: str | None = field(optional(non_empty_str), None)
    chunk_size: int = field(positive_int, 800)
    chunk_overlap: int = field(int_range(0), 400)
    separators: tuple[str, ...] = field(str_tuple, DEFAULT_SEPARATORS)
    is_separator_regex: bool = field(boolean, False)

    def _validate(self) -> None:
        super()._validate()
        if self.is_separator_regex:
            try:
                regexes(self.separators)
            except _Invalid as exc:
                raise self._error("separators", str(exc)) from None


@dataclass(frozen=True, repr=False)
class ChunkingNoneConfig(ConfigBase):
    """``ai.chunking_none``: the whole (loaded) value is one chunk; needs a loading config."""

    implementation: ClassVar[str] = "none"

    @property
    def chunk_column(self) -> None:
        """Never set: the column comes from ``LoadingColumnConfig``."""
        return None


ChunkingConfig = (ChunkingCharacterTextSplitterConfig | ChunkingRecursiveCharacterTextSplitterConfig
                  | ChunkingNoneConfig)

# --------------------------------------------------------------------------- formatting


@dataclass(frozen=True, repr=False)
class FormattingPythonTemplateConfig(ConfigBase):
    """``ai.formatting_python_template``: ``string.Template`` over ``$chunk`` and row columns."""

    implementation: ClassVar[str] = "python_template"

    template: str = field(non_empty_str, "$chunk")

    def _validate(self) -> None:
        tpl = string.Template(self.template)
        if not tpl.is_valid():
            raise self._error("template", f"not a valid string.Template: {self.template!r} "
                                          "(write a literal $ as $$)")
        if "chunk" not in tpl.get_identifiers():
            raise self._error("template", f"must contain $chunk, got {self.template!r}")

    @property
    def placeholders(self) -> frozenset[str]:
        """Every ``$name`` in the template; all but ``chunk`` must be source columns."""
        return frozenset(string.Template(self.template).get_identifiers())


@dataclass(frozen=True, repr=False)
class FormattingChunkValueConfig(ConfigBase):
    """``ai.formatting_chunk_value``: embed the chunk as it is."""

    implementation: ClassVar[str] = "chunk_value"

    @property
    def placeholders(self) -> frozenset[str]:
        """Only the chunk itself, so callers need not special-case this class."""
        return frozenset({"chunk"})


FormattingConfig = FormattingPythonTemplateConfig | FormattingChunkValueConfig

# --------------------------------------------------------------------------- embedding

#: native output size of OpenAI's embedding models; text-embedding-3-* can shorten it
OPENAI_NATIVE_DIMENSIONS: dict[str, int] = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
_OPENAI_FIXED_DIMENSIONS = frozenset({"text-embedding-ada-002"})

WORDLLAMA = "wordllama"
MINILM = "all-MiniLM-L6-v2"
#: What the wordllama wheel can produce offline: it bundles only ``l2_supercat_256``; 64 and 128
#: come from Matryoshka truncation of it. wordllama also knows 512/1024, but those weights are a
#: download, which the offline default must never need, so they are refused here.
WORDLLAMA_DIMENSIONS: tuple[int, ...] = (64, 128, 256)
_LOCAL_NATIVE_DIMENSIONS = {WORDLLAMA: 256, MINILM: 384}
_LOCAL_ALLOWED_DIMENSIONS = {WORDLLAMA: WORDLLAMA_DIMENSIONS, MINILM: (384,)}


@dataclass(frozen=True, repr=False)
class EmbeddingOpenaiConfig(ConfigBase):
    """``ai.embedding_openai``; ``dimensions=None`` means the model's native size."""

    implementation: ClassVar[str] = "openai"

    model: str = field(non_empty_str)
    dimensions: int | None = field(optional(positive_int), None)
    chat_user: str | None = field(optional(non_empty_str), None)
    api_key_name: str = field(non_empty_str, "OPENAI_API_KEY")
    base_url: str | None = field(optional(non_empty_str), None)

    def _validate(self) -> None:
        native = OPENAI_NATIVE_DIMENSIONS.get(self.model)
        if self.dimensions is None:
            if native is None:
                raise self._error("dimensions", f"required for model {self.model!r}, whose "
                                                "native size is not known here")
            self._set("dimensions", native)
        elif native is not None and self.dimensions != native and (
                self.model in _OPENAI_FIXED_DIMENSIONS or self.dimensions > native):
            allowed = (f"must be {native}" if self.model in _OPENAI_FIXED_DIMENSIONS
                       else f"must be at most {native}")
            raise self._error("dimensions", f"{allowed} for {self.model!r}, "
                                            f"got {self.dimensions}")

    def _default_for(self, field_name: str) -> Any:
        if field_name == "dimensions" and self.model in OPENAI_NATIVE_DIMENSIONS:
            return OPENAI_NATIVE_DIMENSIONS[self.model]
        return super()._default_for(field_name)


@dataclass(frozen=True, repr=False)
class EmbeddingOllamaConfig(ConfigBase):
    """``ai.embedding_ollama``: a local or remote Ollama server."""

    implementation: ClassVar[str] = "ollama"

    model: str = field(non_empty_str)
    dimensions: int = field(positive_int)
    base_url: str | None = field(optional(non_empty_str), None)
    options: Mapping[str, Any] | None = field(optional(json_object), None)
    keep_alive: str | None = field(optional(non_empty_str), None)


@dataclass(frozen=True, repr=False)
class EmbeddingVoyageaiConfig(ConfigBase):
    """``ai.embedding_voyageai``; ``input_type`` tells Voyage whether it embeds documents."""

    implementation: ClassVar[str] = "voyageai"

    model: str = field(non_empty_str)
    dimensions: int = field(positive_int)
    input_type: str | None = field(optional(one_of("document", "query")), "document")
    api_key_name: str = field(non_empty_str, "VOYAGE_API_KEY")


@dataclass(frozen=True, repr=False)
class EmbeddingLitellmConfig(ConfigBase):
    """``ai.embedding_litellm``: any provider LiteLLM speaks to, options passed through."""

    implementation: ClassVar[str] = "litellm"

    model: str = field(non_empty_str)
    dimensions: int = field(positive_int)
    api_key_name: str | None = field(optional(non_empty_str), None)
    extra_options: Mapping[str, Any] | None = field(optional(json_object), None)


@dataclass(frozen=True, repr=False)
class EmbeddingLocalConfig(ConfigBase):
    """A model shipped inside a PyPI package, run in-process: offline, no API key.

    ``"wordllama"`` (default, 256 dims, or 64/128 truncated) needs nothing beyond the base
    install; ``"all-MiniLM-L6-v2"`` (384 dims) needs the ``quality`` extra. ``dimensions=None``
    means the model's native size.
    """

    implementation: ClassVar[str] = "local"

    model: str = field(one_of(WORDLLAMA, MINILM), WORDLLAMA)
    dimensions: int | None = field(optional(positive_int), None)

    def _validate(self) -> None:
        if self.dimensions is None:
            self._set("dimensions", _LOCAL_NATIVE_DIMENSIONS[self.model])
        allowed = _LOCAL_ALLOWED_DIMENSIONS[self.model]
        if self.dimensions not in allowed:
            sizes = ", ".join(map(str, allowed))
            raise self._error("dimensions",
                              f"{self.model!r} offers {sizes}, got {self.dimensions}")

    def _default_for(self, field_name: str) -> Any:
        if field_name == "dimensions":
            return _LOCAL_NATIVE_DIMENSIONS[self.model]
        return super()._default_for(field_name)


EmbeddingConfig = (EmbeddingOpenaiConfig | EmbeddingOllamaConfig | EmbeddingVoyageaiConfig
                   | EmbeddingLitellmConfig | EmbeddingLocalConfig)

# --------------------------------------------------------------------------- indexing

#: pgvector operator class -> the pgvector-python comparator that uses its index
_OPCLASS_DISTANCE = {
    "vector_cosine_ops": "cosine_distance",
    "vector_l2_ops": "l2_distance",
    "vector_ip_ops": "max_inner_product",
    "vector_l1_ops": "l1_distance",
}


@dataclass(frozen=True, repr=False)
class IndexingNoneConfig(ConfigBase):
    """``ai.indexing_none``: no vector index (exact search, fine for small stores)."""

    implementation: ClassVar[str] = "none"


@dataclass(frozen=True, repr=False)
class IndexingHnswConfig(ConfigBase):
    """``ai.indexing_hnsw``: a pgvector HNSW index, built once the store has ``min_rows`` rows.

    ``m`` and ``ef_construction`` are checked against pgvector's own limits (2..100, 4..1000,
    ``ef_construction >= 2 * m``) so ``CREATE INDEX`` cannot fail later.
    """

    implementation: ClassVar[str] = "hnsw"

    min_rows: int = field(int_range(0), 100000)
    opclass: str = field(one_of(*_OPCLASS_DISTANCE), "vector_cosine_ops")
    m: int = field(int_range(2, 100), 16)
    ef_construction: int = field(int_range(4, 1000), 64)
    create_when_queue_empty: bool = field(boolean, True)

    def _validate(self) -> None:
        if self.ef_construction < 2 * self.m:
            raise self._error("ef_construction", f"must be at least 2 * m ({2 * self.m}), "
                                                 f"got {self.ef_construction}")

    @property
    def distance(self) -> str:
        """The comparator (``Vector`` column method) whose queries this index serves."""
        return _OPCLASS_DISTANCE[self.opclass]


IndexingConfig = IndexingNoneConfig | IndexingHnswConfig

# --------------------------------------------------------------------------- text indexing
# pgai's open pull request for keyword search (timescale/pgai#908) adds ``text_indexing =>
# ai.text_indexing_bm25(text_config, ...)`` / ``ai.text_indexing_none()``. The embedded Postgres
# has no BM25 extension, so the index here is Postgres' own full-text search; the parameter and
# the language field keep pgai's names (``text_indexing``, ``text_config``).

#: A text search configuration name as ``regconfig`` reads it: ``english`` or ``schema.name``.
_REGCONFIG_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?")


def _regconfig_name(value: Any) -> str:
    """A plain identifier; whether the configuration exists is checked by the catalog function."""
    name = non_empty_str(value)
    if not _REGCONFIG_NAME.fullmatch(name):
        raise _Invalid(f"must be a text search configuration name such as 'english' or "
                       f"'simple', got {value!r}")
    return name


@dataclass(frozen=True, repr=False)
class TextIndexingNoneConfig(ConfigBase):
    """``ai.text_indexing_none``: no keyword index; only ``mode="vector"`` search works."""

    implementation: ClassVar[str] = "none"


@dataclass(frozen=True, repr=False)
class TextIndexingFullTextConfig(ConfigBase):
    """A keyword index of every chunk: ``chunk_tsv tsvector GENERATED ALWAYS AS (to_tsvector(
    text_config, chunk)) STORED`` plus a GIN index, in the store table itself.

    A generated column, so the workers write nothing new and an existing store gets it in place
    (``alter_vectorizer(text_indexing=...)``, no re-embedding). ``text_config`` is the Postgres
    text search configuration (language: stemming and stop words); ``"simple"`` only lower-cases,
    which suits identifiers and mixed languages.
    """

    implementation: ClassVar[str] = "full_text"

    text_config: str = field(_regconfig_name, "english")


TextIndexingConfig = TextIndexingNoneConfig | TextIndexingFullTextConfig

# --------------------------------------------------------------------------- destination
# pgai 0.10+ (``ai.destination_table`` / ``ai.destination_column``): where the embeddings go.


def _identifier(value: Any) -> str:
    """A Postgres name: non-empty, no NUL, at most 63 bytes (longer ones would be truncated)."""
    name = non_empty_str(value)
    if "\x00" in name:
        raise _Invalid(f"must not contain NUL bytes, got {value!r}")
    if len(name.encode("utf-8")) > 63:
        raise _Invalid(f"{value!r} is longer than 63 bytes; Postgres would truncate it")
    return name


@dataclass(frozen=True, repr=False)
class DestinationTableConfig(ConfigBase):
    """``ai.destination_table``: a store table (one row per chunk) and a view joining it to the
    source. ``destination`` is a base name: view ``<destination>``, store
    ``<destination>_store``; ``target_table`` and ``view_name`` take precedence over it.
    Defaults: ``<source>_embedding_store`` and ``<source>_embedding`` in the source's schema.
    """

    implementation: ClassVar[str] = "table"

    destination: str | None = field(optional(_identifier), None)
    target_schema: str | None = field(optional(_identifier), None)
    target_table: str | None = field(optional(_identifier), None)
    view_schema: str | None = field(optional(_identifier), None)
    view_name: str | None = field(optional(_identifier), None)

    def _validate(self) -> None:
        if self.destination is not None and len((self.destination + "_store").encode()) > 63:
            raise self._error("destination", f"{self.destination!r} + '_store' is longer than "
                                             "63 bytes; Postgres would truncate the store's name")

    @property
    def resolved_target_table(self) -> str | None:
        """``target_table``, else ``<destination>_store``, else None (the catalog's default)."""
        if self.target_table is not None:
            return self.target_table
        return None if self.destination is None else f"{self.destination}_store"

    @property
    def resolved_view_name(self) -> str | None:
        """``view_name``, else ``destination``, else None (the catalog's default)."""
        return self.view_name if self.view_name is not None else self.destination


@dataclass(frozen=True, repr=False)
class DestinationColumnConfig(ConfigBase):
    """``ai.destination_column``: one embedding per row, in a ``vector`` column of the source
    table itself (added when missing). No store table, no view; needs ``ChunkingNoneConfig``.
    """

    implementation: ClassVar[str] = "column"

    embedding_column: str = field(_identifier)


DestinationConfig = DestinationTableConfig | DestinationColumnConfig

# --------------------------------------------------------------------------- processing


@dataclass(frozen=True, repr=False)
class ProcessingConfig(ConfigBase):
    """``ai.processing_default``: rows per batch and parallel batches, within pgai's limits."""

    batch_size: int = field(int_range(1, 2048), 50)
    concurrency: int = field(int_range(1, 50), 1)


# --------------------------------------------------------------------------- registry

_CLASSES: dict[str, dict[str | None, type[ConfigBase]]] = {
    "embedding": {c.implementation: c for c in (
        EmbeddingOpenaiConfig, EmbeddingOllamaConfig, EmbeddingVoyageaiConfig,
        EmbeddingLitellmConfig, EmbeddingLocalConfig)},
    "chunking": {c.implementation: c for c in (
        ChunkingCharacterTextSplitterConfig, ChunkingRecursiveCharacterTextSplitterConfig,
        ChunkingNoneConfig)},
    "formatting": {c.implementation: c for c in (
        FormattingPythonTemplateConfig, FormattingChunkValueConfig)},
    "indexing": {c.implementation: c for c in (IndexingNoneConfig, IndexingHnswConfig)},
    "text_indexing": {c.implementation: c for c in (TextIndexingNoneConfig,
                                                    TextIndexingFullTextConfig)},
    "loading": {c.implementation: c for c in (LoadingColumnConfig, LoadingUriConfig)},
    "parsing": {c.implementation: c for c in (ParsingAutoConfig, ParsingNoneConfig,
                                              ParsingPymupdfConfig, ParsingDoclingConfig)},
    "destination": {c.implementation: c for c in (DestinationTableConfig,
                                                  DestinationColumnConfig)},
    "processing": {None: ProcessingConfig},
}


def config_from_dict(data: Mapping[str, Any], kind: str) -> Any:
    """Rebuild one config from its ``to_dict()`` form; ``kind`` is needed because pgai reuses
    implementation names across kinds (``"none"`` is both a chunking and an indexing)."""
    if kind not in _CLASSES:
        raise ConfigurationError(
            f"config_from_dict.kind: must be one of {', '.join(_CLASSES)}, got {kind!r}")
    classes = _CLASSES[kind]
    if kind == "processing":
        return ProcessingConfig.from_dict(data)
    if not isinstance(data, Mapping):
        raise ConfigurationError(f"{kind}: expected a dict, got {data!r}")
    implementation = data.get("implementation")
    if implementation not in classes:
        raise ConfigurationError(
            f"{kind}.implementation: unknown {kind} implementation {implementation!r} "
            f"(known: {', '.join(map(repr, classes))})")
    return classes[implementation].from_dict(data)


# --------------------------------------------------------------------------- the whole config


@dataclass(frozen=True, repr=False)
class VectorizerConfig(ConfigBase):
    """Everything a vectorizer needs, as stored in the catalog's ``config`` column.

    ``source_column`` is resolved and checked here so a vectorizer that names no column, or two
    different ones, never reaches the catalog.
    """

    embedding: EmbeddingConfig = field(
        instance_of(*_CLASSES["embedding"].values()), EmbeddingLocalConfig())
    chunking: ChunkingConfig = field(
        instance_of(*_CLASSES["chunking"].values()),
        ChunkingRecursiveCharacterTextSplitterConfig())
    formatting: FormattingConfig = field(
        instance_of(*_CLASSES["formatting"].values()), FormattingPythonTemplateConfig())
    loading: LoadingConfig | None = field(
        optional(instance_of(*_CLASSES["loading"].values())), None)
    parsing: ParsingConfig = field(instance_of(*_CLASSES["parsing"].values()), ParsingAutoConfig())
    indexing: IndexingConfig = field(
        instance_of(*_CLASSES["indexing"].values()), IndexingNoneConfig())
    processing: ProcessingConfig = field(instance_of(ProcessingConfig), ProcessingConfig())
    text_indexing: TextIndexingConfig = field(
        instance_of(*_CLASSES["text_indexing"].values()), TextIndexingNoneConfig())
    #: ``None``: a store table (its names are the catalog's, not the config's);
    #: ``DestinationColumnConfig``: the embedding column of the source table
    destination: DestinationColumnConfig | None = field(
        optional(instance_of(DestinationColumnConfig)), None)

    def _validate(self) -> None:
        if self.destination is not None:
            if not isinstance(self.chunking, ChunkingNoneConfig):
                raise self._error("chunking", "DestinationColumnConfig holds one embedding per "
                                              "row: use chunking=ChunkingNoneConfig()")
            if not isinstance(self.text_indexing, TextIndexingNoneConfig):
                raise self._error("text_indexing", "the keyword index lives in a store table; "
                                                   "DestinationColumnConfig has none")
        chunk_column = self.chunking.chunk_column
        if self.loading is None:
            if isinstance(self.chunking, ChunkingNoneConfig):
                raise self._error("loading", "ChunkingNoneConfig needs "
                                             "loading=LoadingColumnConfig(column_name=...)")
            if chunk_column is None:
                raise self._error("chunking", "no column to embed: set chunking.chunk_column "
                                              "or loading=LoadingColumnConfig(column_name=...)")
        elif chunk_column is not None and chunk_column != self.loading.column_name:
            raise self._error("chunking", f"chunk_column {chunk_column!r} differs from "
                                          f"loading.column_name {self.loading.column_name!r}")
        if isinstance(self.parsing, ParsingPymupdfConfig) and self.loading is None:
            raise self._error("parsing", "ParsingPymupdfConfig parses documents: set loading="
                                         "LoadingUriConfig(...) or LoadingColumnConfig(...) on a "
                                         "bytea column")

    @property
    def source_column(self) -> str:
        """The column that gets chunked: ``loading.column_name``, else ``chunk_column``."""
        if self.loading is not None:
            return self.loading.column_name
        column = self.chunking.chunk_column
        if column is None:  # _validate refuses this; a bypassed constructor must not pass silently
            raise InvariantError("VectorizerConfig has neither loading nor chunking.chunk_column")
        return column

    def to_dict(self) -> dict[str, Any]:
        """Each part's ``to_dict()``; ``loading`` is ``None`` when not set, ``destination`` is
        left out for a store table (so configs stored before destinations read the same)."""
        return {name: None if value is None else value.to_dict()
                for name, value in self._field_values()
                if not (name == "destination" and value is None)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VectorizerConfig:
        """Rebuild every part with :func:`config_from_dict`; missing parts take defaults."""
        kwargs = cls._check_keys(data)
        parts: dict[str, Any] = {kind: None if value is None else config_from_dict(value, kind)
                                 for kind, value in kwargs.items()}
        return cls(**parts)

"""The mapped class of an embedding store table, generated from its parent's mapping.

``op.create_vectorizer`` creates ``<source>_embedding_store`` with ``embedding_uuid``, copies of
the source's primary key, ``chunk_seq``, ``chunk`` and ``embedding vector(N)``. The class built
here maps exactly those columns (nothing inherited from the parent's mixins or abstract bases)
and a ``parent`` relationship back. The foreign key to the parent exists in the ORM metadata
only, so that ``join()`` finds the ON clause; the real store table is the pipeline's, and its
table name is listed in ``metadata.info["pgai_managed_tables"]`` so autogenerate leaves it alone.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    ColumnElement,
    ForeignKeyConstraint,
    Integer,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    func,
)
from sqlalchemy.orm import Mapper, mapped_column, relationship

from pgai_orm.sqlalchemy import search as _search
from pgai_orm.sqlalchemy.binding import VectorizerBinding
from pgai_orm.sqlalchemy.errors import VectorizerBindingError
from pgai_orm.sqlalchemy.results import SearchResult
from pgai_orm.sqlalchemy.search_options import Distance, IterativeScan, KeywordMatch, Mode

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Mapped, Session

class EmbeddingModel:
    """Behaviour shared by every generated embedding class; contributes no columns.

    ``search``/``search_async`` and ``check_dimensions``/``check_dimensions_async`` are sync and
    async twins: SQLAlchemy's ``AsyncSession`` cannot run a sync call, so the caller picks.
    """

    __vectorizer__: ClassVar[VectorizerBinding]

    if TYPE_CHECKING:
        embedding_uuid: Mapped[uuid.UUID]
        chunk_seq: Mapped[int]
        chunk: Mapped[str]
        embedding: Mapped[Any]
        parent: Any

    @classmethod
    def check_dimensions(cls, session: Session, *, refresh: bool = True) -> None:
        """Compare the model's dimensions with the catalog; raise ``VectorizerDimensionsError``.

        ``search`` runs the same check on its first call per engine; call this at start-up to
        fail before the first query.
        """
        _search.vectorizer_info(cls, session, refresh=refresh)

    @classmethod
    async def check_dimensions_async(cls, session: AsyncSession, *, refresh: bool = True) -> None:
        """Async twin of :meth:`check_dimensions`."""
        await _search.vectorizer_info_async(cls, session, refresh=refresh)

    @classmethod
    def embed_query(cls, session: Session, text: str) -> list[float]:
        """Embed ``text`` with the vectorizer's configured embedder (read from the catalog).

        This replaces pgai's in-database ``ai.openai_embed(...)`` in hand-written queries:
        ``order_by(Model.embedding.cosine_distance(Model.embed_query(session, "text")))``.
        """
        return _search.embed_query(cls, session, text)

    @classmethod
    async def embed_query_async(cls, session: AsyncSession, text: str) -> list[float]:
        """Async twin of :meth:`embed_query`."""
        return await _search.embed_query_async(cls, session, text)

    @classmethod
    def search(
        cls,
        session: Session,
        query: str | Sequence[float],
        *,
        mode: Mode = "vector",
        limit: int = 5,
        offset: int = 0,
        filter: ColumnElement[bool] | Sequence[ColumnElement[bool]] | None = None,  # noqa: A002
        distance: Distance | None = None,
        group_by_parent: bool = False,
        chunks_per_parent: int = 1,
        max_distance: float | None = None,
        min_score: float | None = None,
        rrf_k: int = 60,
        vector_weight: float = 1.0,
        keyword_weight: float = 1.0,
        candidates: int | None = None,
        keyword_match: KeywordMatch | None = None,
        ef_search: int | None = None,
        iterative_scan: IterativeScan | None = None,
    ) -> list[SearchResult]:
        """The best ``limit`` hits for ``query``, each with its parent row, in one SELECT.

        ``mode``: ``"vector"`` ranks chunks by distance to the query embedded with the
        vectorizer's own model; ``"keyword"`` by full-text match (needs
        ``text_indexing=TextIndexingFullTextConfig()`` on the vectorizer; nothing is embedded);
        ``"hybrid"`` fuses both rankings by reciprocal rank fusion,
        ``vector_weight / (rrf_k + rank) + keyword_weight / (rrf_k + rank)``, each ranking
        reading its ``candidates`` best chunks. ``filter`` is any WHERE criteria on the
        embedding class or the parent (``BlogPost.title.ilike("%x%")``), applied inside every
        ranking. ``group_by_parent=True`` returns at most ``limit`` parent rows, each with its
        ``chunks_per_parent`` best chunks. ``distance`` takes pgvector's comparator names
        (``cosine_distance``, ``l2_distance``, ``max_inner_product``, ``l1_distance``) or the
        short ones; by default the vectorizer's HNSW opclass, else cosine. ``max_distance`` and
        ``min_score`` drop weak hits, ``offset`` pages. ``keyword_match``: ``"any"`` word
        (keyword mode's default), ``"all"`` words, or ``"websearch"`` syntax (hybrid's default;
        both measured best, see :attr:`SearchOptions.match`). ``ef_search`` and ``iterative_scan`` set
        pgvector's ``hnsw.*`` settings for this statement only; with an HNSW index and a filter,
        iterative scans (``strict_order``) are on unless ``iterative_scan="off"``, so a
        selective filter still fills ``limit``. See docs/search.md.
        """
        return _search.search(
            cls, session, query, mode=mode, limit=limit, offset=offset, filter=filter,
            distance=distance, group_by_parent=group_by_parent,
            chunks_per_parent=chunks_per_parent, max_distance=max_distance, min_score=min_score,
            rrf_k=rrf_k, vector_weight=vector_weight, keyword_weight=keyword_weight,
            candidates=candidates, keyword_match=keyword_match, ef_search=ef_search,
            iterative_scan=iterative_scan)

    @classmethod
    async def search_async(
        cls,
        session: AsyncSession,
        query: str | Sequence[float],
        *,
        mode: Mode = "vector",
        limit: int = 5,
        offset: int = 0,
        filter: ColumnElement[bool] | Sequence[ColumnElement[bool]] | None = None,  # noqa: A002
        distance: Distance | None = None,
        group_by_parent: bool = False,
        chunks_per_parent: int = 1,
        max_distance: float | None = None,
        min_score: float | None = None,
        rrf_k: int = 60,
        vector_weight: float = 1.0,
        keyword_weight: float = 1.0,
        candidates: int | None = None,
        keyword_match: KeywordMatch | None = None,
        ef_search: int | None = None,
        iterative_scan: IterativeScan | None = None,
    ) -> list[SearchResult]:
        """Async twin of :meth:`search` (embedding and query both awaited)."""
        return await _search.search_async(
            cls, session, query, mode=mode, limit=limit, offset=offset, filter=filter,
            distance=distance, group_by_parent=group_by_parent,
            chunks_per_parent=chunks_per_parent, max_distance=max_distance, min_score=min_score,
            rrf_k=rrf_k, vector_weight=vector_weight, keyword_weight=keyword_weight,
            candidates=candidates, keyword_match=keyword_match, ef_search=ef_search,
            iterative_scan=iterative_scan)

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.embedding_uuid} chunk_seq={self.chunk_seq} "
                f"chunk={(self.chunk or '')[:40]!r}>")


def _declarative_base(owner: type) -> type | None:
    """The user's ``Base`` (the class holding ``registry`` itself), with no columns of its own.

    Subclassing the owner's direct parent instead would copy an abstract base's or mixin's
    columns into the store mapping, columns the store table does not have.
    """
    for klass in owner.__mro__:
        attrs = vars(klass)
        if "registry" in attrs and "metadata" in attrs and "__mapper__" not in attrs:
            return klass
    return None


def build_embedding_class(binding: VectorizerBinding, owner_mapper: Mapper[Any]) -> type:
    """Create and map the embedding class of ``binding`` on the owner's registry."""
    local_table = owner_mapper.local_table
    if not isinstance(local_table, Table):
        raise VectorizerBindingError(
            f"{binding.describe()}: vectorizer_relationship needs a class mapped to a table,"
            f" not to {type(local_table).__name__}")
    pk_columns: list[Any] = list(local_table.primary_key.columns) or list(owner_mapper.primary_key)
    pk_names = [c.name for c in pk_columns]
    table_args: dict[str, Any] = {"info": {"pgai_managed": True}}
    if binding.schema is not None:
        table_args["schema"] = binding.schema

    namespace: dict[str, Any] = {
        "__module__": binding.owner.__module__,
        "__qualname__": binding.class_name,
        "__doc__": f"Chunks and embeddings of {binding.describe()} (store "
                   f"{binding.table_fullname}, written by the pipeline).",
        "__tablename__": binding.table_name,
        "__table_args__": (
            ForeignKeyConstraint(pk_names, pk_columns, ondelete="CASCADE"),
            UniqueConstraint(*pk_names, "chunk_seq"),
            table_args,
        ),
        "__vectorizer__": binding,
        "embedding_uuid": mapped_column(Uuid, primary_key=True,
                                        server_default=func.gen_random_uuid()),
        "chunk_seq": mapped_column(Integer, nullable=False),
        "chunk": mapped_column(Text, nullable=False),
        "embedding": mapped_column(Vector(binding.dimensions), nullable=False),
        "parent": relationship(
            binding.owner,
            back_populates=binding.relationship_key,
            viewonly=True,
            **binding.parent_kwargs,
        ),
    }
    for pk in pk_columns:
        namespace[pk.name] = mapped_column(pk.name, pk.type, nullable=False)

    base = _declarative_base(binding.owner)
    if base is not None:
        return type(binding.class_name, (EmbeddingModel, base), namespace)
    plain = type(binding.class_name, (EmbeddingModel,), namespace)
    plain.__init__ = owner_mapper.registry.constructor  # type: ignore[misc]  # the declarative constructor, as mapped classes get it
    return owner_mapper.registry.mapped(plain)

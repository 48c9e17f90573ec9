"""``vectorizer_relationship``: the attribute that ties a mapped class to its embedding store.

It is a descriptor, not a ``relationship()``, because one name serves two purposes, as in pgai:
``BlogPost.content_embeddings`` is the generated embedding *class* (for ``select``, ``join``,
``order_by(... .embedding.cosine_distance(v))`` and ``.search(...)``), and
``post.content_embeddings`` is that post's chunks (a list). The real relationship lives beside it
as ``BlogPost.content_embeddings_relationship``, for loader options such as
``selectinload(BlogPost.content_embeddings_relationship)``.

The embedding class is made in SQLAlchemy's ``after_mapper_constructed`` event, the hook meant
for creating mapped classes in response to a mapping: the owner's table, schema and primary key
are known then (whatever form ``__table_args__`` took), and both mappers join the same
``configure()`` step. The listener is attached to the class the attribute is written on, with
``propagate=True``, so a mixin carrying the attribute gives every mapped class its own store,
while an inheriting subclass shares its parent's.
"""

from __future__ import annotations

from typing import Any, overload

from sqlalchemy import Table, event
from sqlalchemy.orm import Mapper, relationship

from pgai_orm.errors import InvariantError
from pgai_orm.names import MANAGED_TABLES_KEY
from pgai_orm.sqlalchemy.binding import VectorizerBinding
from pgai_orm.sqlalchemy.embedding_model import EmbeddingModel, build_embedding_class
from pgai_orm.sqlalchemy.errors import VectorizerBindingError


class VectorizerRelationship:
    """Descriptor made by :func:`vectorizer_relationship`; see the module docstring."""

    def __init__(
        self,
        dimensions: int,
        target_schema: str | None = None,
        target_table: str | None = None,
        parent_kwargs: dict[str, Any] | None = None,
        **relationship_kwargs: Any,
    ) -> None:
        if not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions <= 0:
            raise ValueError(f"dimensions: must be a positive integer, got {dimensions!r}")
        self.dimensions = dimensions
        self.target_schema = target_schema
        self.target_table = target_table
        self.parent_kwargs = dict(parent_kwargs or {})
        self.relationship_kwargs = relationship_kwargs
        self.name: str | None = None
        self._models: dict[type, type[EmbeddingModel]] = {}

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        event.listen(owner, "after_mapper_constructed", self._on_mapped, propagate=True)

    def _on_mapped(self, mapper: Mapper[Any], class_: type) -> None:
        """Build the store mapping for the first mapped class of a hierarchy carrying us."""
        if self._model_for(class_) is not None:
            return  # an inheriting class: the parent's relationship is inherited with its mapper
        if self.name is None:
            raise InvariantError("vectorizer_relationship used before it was assigned to a class")
        local_table = mapper.local_table
        if not isinstance(local_table, Table):
            raise VectorizerBindingError(
                f"{class_.__name__}.{self.name}: vectorizer_relationship needs a class mapped to"
                f" a table, not to {type(local_table).__name__}")
        schema = self.target_schema if self.target_schema is not None else local_table.schema
        binding = VectorizerBinding(
            owner=class_,
            attribute=self.name,
            dimensions=self.dimensions,
            table_name=self.target_table or f"{local_table.name}_embedding_store",
            schema=schema,
            relationship_kwargs=dict(self.relationship_kwargs),
            parent_kwargs=self.parent_kwargs,
        )
        model: Any = build_embedding_class(binding, mapper)
        kwargs: dict[str, Any] = {"viewonly": True, "order_by": model.chunk_seq}
        kwargs.update(self.relationship_kwargs)
        mapper.add_property(
            binding.relationship_key,
            relationship(model, back_populates="parent", **kwargs),
        )
        local_table.metadata.info.setdefault(MANAGED_TABLES_KEY, set()).add(
            model.__table__.fullname
        )
        self._models[class_] = model

    def _model_for(self, cls: type) -> type[EmbeddingModel] | None:
        for klass in cls.__mro__:
            model = self._models.get(klass)
            if model is not None:
                return model
        return None

    @overload
    def __get__(self, obj: None, objtype: type) -> Any: ...

    @overload
    def __get__(self, obj: object, objtype: type | None = None) -> list[Any]: ...

    def __get__(self, obj: object | None, objtype: type | None = None) -> Any:
        if obj is None:
            if objtype is None:
                raise InvariantError("descriptor accessed with neither instance nor owner")
            # Before the class is mapped (declarative scanning its attributes) we are ourselves.
            return self._model_for(objtype) or self
        model = self._model_for(type(obj))
        if model is None:
            raise AttributeError(f"{type(obj).__name__}.{self.name}: class is not mapped")
        return getattr(obj, model.__vectorizer__.relationship_key)

    def __set__(self, obj: object, value: Any) -> None:
        raise AttributeError(
            f"{type(obj).__name__}.{self.name} is read-only: the pipeline writes the embedding "
            "store; add rows through the embedding class if you must"
        )


def vectorizer_relationship(
    dimensions: int,
    target_schema: str | None = None,
    target_table: str | None = None,
    *,
    parent_kwargs: dict[str, Any] | None = None,
    **relationship_kwargs: Any,
) -> Any:
    """Map the embedding store of a vectorizer created on this class's table.

    ``dimensions`` must equal the vectorizer's embedding dimensions (checked against the catalog
    on the first search, or by ``Model.attr.check_dimensions(session)``). ``target_schema`` and
    ``target_table`` default to the owner table's schema (from ``__table_args__`` or the
    ``MetaData``) and ``<table>_embedding_store``, as ``op.create_vectorizer`` does.
    ``relationship_kwargs`` go to the parent-to-chunks ``relationship()`` (``lazy="joined"``,
    ``order_by``...; it is ``viewonly`` and ordered by ``chunk_seq`` unless told otherwise),
    ``parent_kwargs`` to the chunk-to-parent one.
    """
    return VectorizerRelationship(
        dimensions,
        target_schema=target_schema,
        target_table=target_table,
        parent_kwargs=parent_kwargs,
        **relationship_kwargs,
    )

"""Alembic integration: ``register_operations()`` adds the vectorizer operations to ``op``.

For autogenerate: :func:`declare_vectorizer` records a vectorizer on a MetaData
(:mod:`pgai_orm.alembic.autogenerate`), and :func:`include_name` and :func:`include_object`
(combined with your own by :func:`make_include_name` / :func:`make_include_object`) keep
autogenerate away from the catalog, the stores and the views (:mod:`pgai_orm.alembic.filters`).
"""

from pgai_orm.alembic.autogenerate import declare_vectorizer
from pgai_orm.alembic.filters import (
    IncludeName,
    IncludeObject,
    include_name,
    include_object,
    make_include_name,
    make_include_object,
)
from pgai_orm.alembic.operations import (
    AlterVectorizerOp,
    CreateVectorizerOp,
    DisableVectorizerOp,
    DropVectorizerOp,
    EnableVectorizerOp,
    VectorizerOperationError,
    register_operations,
)

__all__ = [
    "AlterVectorizerOp",
    "CreateVectorizerOp",
    "DisableVectorizerOp",
    "DropVectorizerOp",
    "EnableVectorizerOp",
    "IncludeName",
    "IncludeObject",
    "VectorizerOperationError",
    "declare_vectorizer",
    "include_name",
    "include_object",
    "make_include_name",
    "make_include_object",
    "register_operations",
]

"""Alembic integration: ``register_operations()`` adds the vectorizer operations to ``op``."""

from pgai_orm.alembic.operations import (
    AlterVectorizerOp,
    CreateVectorizerOp,
    DropVectorizerOp,
    VectorizerOperationError,
    register_operations,
)

__all__ = [
    "AlterVectorizerOp",
    "CreateVectorizerOp",
    "DropVectorizerOp",
    "VectorizerOperationError",
    "declare_vectorizer",
    "register_operations",
]


def declare_vectorizer(*args, **kwargs):  # type: ignore[no-untyped-def]
    """Declare a vectorizer on a MetaData for autogenerate (see ``pgai_orm.alembic.autogenerate``)."""
    from pgai_orm.alembic.autogenerate import declare_vectorizer as declare

    return declare(*args, **kwargs)

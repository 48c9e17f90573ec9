"""Alembic environment of the demo project, as the README asks users to write theirs.

``register_operations()`` makes ``op.create_vectorizer`` available; ``include_object`` keeps
autogenerate away from the embedding stores, which the vectorizer (not the models) owns.
"""

from typing import Any

from alembic import context
from sqlalchemy import create_engine

from infra.demo_migration.models import Base
from pgai_orm.alembic import register_operations
from pgai_orm.errors import InvariantError

register_operations()

config = context.config
target_metadata = Base.metadata


def include_object(obj: Any, name: str | None, type_: str, reflected: bool,
                   compare_to: Any) -> bool:
    if type_ == "table":
        qualified = f"{obj.schema}.{name}" if obj.schema else name
        if qualified in target_metadata.info.get("pgai_managed_tables", set()):
            return False
    return True


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True,
                      target_metadata=target_metadata, include_object=include_object,
                      dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise InvariantError("the demo migration runs with sqlalchemy.url set (infra.demo sets it)")
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            context.configure(connection=connection, target_metadata=target_metadata,
                              include_object=include_object)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

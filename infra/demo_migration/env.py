"""Alembic environment of the demo project, as the README asks users to write theirs.

``register_operations()`` makes ``op.create_vectorizer`` available; ``include_object`` keeps
autogenerate away from the embedding stores, which the vectorizer (not the models) owns.
"""

from alembic import context
from sqlalchemy import create_engine

from infra.demo_migration.models import Base
from pgai_orm.alembic import register_operations

register_operations()

config = context.config
target_metadata = Base.metadata


def include_object(obj, name, type_, reflected, compare_to):  # type: ignore[no-untyped-def]
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
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
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

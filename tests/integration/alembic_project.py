"""A scratch Alembic project in a temp dir, set up as the README tells users to set theirs up."""

from __future__ import annotations

import io
import textwrap
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config

from infra.urls import sqlalchemy_url

ENV_PY = '''
from alembic import context
from sqlalchemy import create_engine

from pgai_orm.alembic import register_operations

register_operations()

config = context.config
target_metadata = None
models_file = config.get_main_option("models_module")
if models_file:
    import importlib.util
    spec = importlib.util.spec_from_file_location("scratch_models", models_file)
    models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(models)
    target_metadata = models.metadata


def include_object(obj, name, type_, reflected, compare_to):
    # Keep autogenerate away from the embedding stores the vectorizers manage.
    managed = target_metadata.info.get("pgai_managed_tables", set()) if target_metadata else set()
    if type_ == "table":
        qualified = f"{obj.schema}.{name}" if obj.schema else name
        if qualified in managed:
            return False
    return True


def run_migrations_offline():
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True,
                      target_metadata=target_metadata, include_object=include_object,
                      dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata,
                          include_object=include_object)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
'''

SCRIPT_MAKO = '''"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
"""
from alembic import op
import sqlalchemy as sa
${imports if imports else ""}

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = None
depends_on = None


def upgrade():
    ${upgrades if upgrades else "pass"}


def downgrade():
    ${downgrades if downgrades else "pass"}
'''


@dataclass
class AlembicProject:
    """An Alembic project directory bound to one database."""

    root: Path
    database_url: str

    @classmethod
    def create(cls, root: Path, database_url: str) -> AlembicProject:
        (root / "versions").mkdir(parents=True)
        (root / "env.py").write_text(ENV_PY)
        (root / "script.py.mako").write_text(SCRIPT_MAKO)
        return cls(root, database_url)

    def config(self, output: io.StringIO | None = None) -> Config:
        cfg = Config(stdout=output) if output is not None else Config()
        cfg.set_main_option("script_location", str(self.root))
        cfg.set_main_option("sqlalchemy.url",
                            sqlalchemy_url(self.database_url).replace("%", "%%"))
        return cfg

    def add_migration(self, revision: str, down_revision: str | None, upgrade: str,
                      downgrade: str, imports: str = "") -> Path:
        """Write a migration whose bodies are the given Python source (indented for you)."""
        def block(source: str) -> str:
            return textwrap.indent(textwrap.dedent(source).strip() or "pass", "    ")

        body = "\n".join([
            "from alembic import op",
            imports,
            f"revision = {revision!r}",
            f"down_revision = {down_revision!r}",
            "branch_labels = None",
            "depends_on = None",
            "",
            "",
            "def upgrade():",
            block(upgrade),
            "",
            "",
            "def downgrade():",
            block(downgrade),
            "",
        ])
        path = self.root / "versions" / f"{revision}.py"
        path.write_text(body)
        return path

    def upgrade(self, target: str = "head") -> None:
        command.upgrade(self.config(), target)

    def downgrade(self, target: str = "base") -> None:
        command.downgrade(self.config(), target)

    def upgrade_sql(self, target: str = "head") -> str:
        """The offline script ``alembic upgrade --sql`` prints."""
        output = io.StringIO()
        cfg = self.config(output)
        cfg.output_buffer = output
        command.upgrade(cfg, target, sql=True)
        return output.getvalue()

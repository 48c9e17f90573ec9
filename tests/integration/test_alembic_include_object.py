"""Autogenerate with ``include_schemas=True`` leaves the catalog, the stores and the views alone.

The README's ``env.py`` and its ``declare_vectorizer`` block run as written, in a scratch Alembic
project, with the README's models as ``myapp.models``. After a vectorizer exists (and a replay
is building a second store), autogenerate proposes nothing; the same comparison without the
filter proposes to drop every catalog table and both stores, so the filter is what holds.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, Table, Text, create_engine
from sqlalchemy.exc import SAWarning

from infra.urls import sqlalchemy_url
from pgai_orm.alembic import include_name, include_object, make_include_name, make_include_object
from pgai_orm.catalog.schema import CATALOG_SCHEMA
from pgai_orm.catalog.versions import create_replay_version
from tests.integration.alembic_project import AlembicProject
from tests.integration.test_readme_seed import readme_block

VECTORIZER = "public_blog_posts_embedding"  # the default name: <view schema>_<view table>


@pytest.fixture
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``myapp.models``: the README's models with the README's vectorizer declaration."""
    package = tmp_path / "pkg" / "myapp"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(readme_block("models") + "\n" + readme_block("declare"))
    monkeypatch.syspath_prepend(str(package.parent))
    import myapp.models  # type: ignore[import-not-found]  # written just above

    yield myapp.models
    for name in [n for n in sys.modules if n == "myapp" or n.startswith("myapp.")]:
        del sys.modules[name]


def autogenerate(project: AlembicProject, rev_id: str) -> tuple[str, str]:
    """``alembic revision --autogenerate``; the new script's upgrade and downgrade bodies."""
    script = command.revision(project.config(), message=rev_id, autogenerate=True, rev_id=rev_id)
    text = Path(script.path).read_text()  # type: ignore[union-attr]  # one script, not a list
    upgrade, downgrade = text.split("def downgrade")
    return upgrade.split("def upgrade")[1], downgrade


def statements(body: str) -> list[str]:
    """The code lines of a generated function body (``():`` and Alembic's comments left out)."""
    lines = [line.strip() for line in body.split(":", 1)[1].splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def diffs(url: str, metadata: Any, **opts: Any) -> list[Any]:
    """What autogenerate would do (``compare_metadata``), with ``include_schemas=True``.

    Without ``include_name`` Alembic reflects the catalog, and SQLAlchemy warns about its
    ``pg_lsn`` columns (the suite turns SAWarnings into errors): only then is that one ignored.
    """
    engine = create_engine(sqlalchemy_url(url))
    try:
        with engine.connect() as conn, warnings.catch_warnings():
            if "include_name" not in opts:
                warnings.filterwarnings("ignore", "Did not recognize type 'pg_lsn'", SAWarning)
            context = MigrationContext.configure(conn, opts={"include_schemas": True, **opts})
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def dropped(found: list[Any]) -> set[str]:
    tables = {d[1] for d in found if isinstance(d, tuple) and d[0] == "remove_table"}
    return {f"{t.schema}.{t.name}" if t.schema else t.name for t in tables}


def test_autogenerate_leaves_the_catalog_stores_and_views_alone(
        tmp_path: Path, fresh_database_url: str, models: Any) -> None:
    url = fresh_database_url
    project = AlembicProject.create(tmp_path / "alembic", url)
    (project.root / "env.py").write_text(readme_block("env"))

    # the first revision creates the table, then its vectorizer, and drops nothing
    upgrade, downgrade = autogenerate(project, "a1")
    assert "op.create_table('blog_posts'" in upgrade and "op.create_vectorizer(" in upgrade
    assert upgrade.index("op.create_table('blog_posts'") < upgrade.index("op.create_vectorizer(")
    assert "drop" not in upgrade and "embedding_store" not in upgrade.replace(
        "target_table='blog_posts_embedding_store'", "")
    command.upgrade(project.config(), "head")
    with psycopg.connect(url, autocommit=True) as conn:
        create_replay_version(conn, VECTORIZER)  # a second store, blog_posts_embedding_store_v2
        stores = {r[0] for r in conn.execute(
            "SELECT target_table FROM vectorizer.config_versions").fetchall()}
    assert stores == {"blog_posts_embedding_store", "blog_posts_embedding_store_v2"}

    # with the README's env.py (include_schemas=True and include_object), nothing to do
    upgrade, downgrade = autogenerate(project, "a2")
    assert statements(upgrade) == ["pass"], upgrade
    assert statements(downgrade) == ["pass"], downgrade

    # the same comparison without the filter: every catalog table and both stores would go
    metadata = models.Base.metadata
    unfiltered = dropped(diffs(url, metadata))
    with psycopg.connect(url, autocommit=True) as conn:
        catalog = {f"{CATALOG_SCHEMA}.{r[0]}" for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s", (CATALOG_SCHEMA,))}
        conn.execute("CREATE TABLE legacy_notes (id int PRIMARY KEY)")
    assert catalog and catalog <= unfiltered
    assert "blog_posts_embedding_store_v2" in unfiltered
    # either hook alone keeps them out too (include_name: they are not even reflected)
    assert dropped(diffs(url, metadata, include_object=include_object)) == {"legacy_notes"}
    assert dropped(diffs(url, metadata, include_name=include_name)) == {"legacy_notes"}
    hooks = {"include_name": include_name, "include_object": include_object}
    assert dropped(diffs(url, metadata, **hooks)) == {"legacy_notes"}

    # a user's own filters compose with them
    def keep_legacy(obj: Any, name: str | None, type_: str, reflected: bool,
                    compare_to: Any) -> bool:
        return not (type_ == "table" and name == "legacy_notes")

    def skip_legacy(name: str | None, type_: str, parent_names: Any) -> bool:
        return name != "legacy_notes"

    assert diffs(url, metadata, include_object=make_include_object(keep_legacy)) == []
    assert diffs(url, metadata, include_name=make_include_name(skip_legacy),
                 include_object=include_object) == []
    assert "legacy_notes" not in dropped(diffs(url, metadata, include_object=keep_legacy))
    assert catalog <= dropped(diffs(url, metadata, include_object=keep_legacy))

    # a model mapped over a vectorizer's view: autogenerate sees no view, so it would create it
    views = MetaData()
    Table("blog_posts_embedding", views, Column("embedding_uuid", Text, primary_key=True),
          Column("id", Integer), Column("chunk", Text))
    both = [metadata, views]
    added = [d for d in diffs(url, both, include_object=keep_legacy) if d[0] == "add_table"]
    assert [d[1].name for d in added] == ["blog_posts_embedding"]
    assert diffs(url, both, include_name=include_name,
                 include_object=make_include_object(keep_legacy)) == []

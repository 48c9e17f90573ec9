"""create_vectorizer / alter_vectorizer / drop_vectorizer through a real Alembic project."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import create_engine, exc

from infra.urls import sqlalchemy_url
from pgai_orm.alembic import register_operations
from pgai_orm.configuration import (
    ChunkingRecursiveCharacterTextSplitterConfig,
    ConfigurationError,
    EmbeddingLocalConfig,
    EmbeddingOpenaiConfig,
    FormattingPythonTemplateConfig,
)
from tests.integration.alembic_project import AlembicProject

IMPORTS = (
    "from pgai_orm.configuration import (EmbeddingOpenaiConfig, EmbeddingLocalConfig,\n"
    "    ChunkingRecursiveCharacterTextSplitterConfig, FormattingPythonTemplateConfig,\n"
    "    IndexingHnswConfig)"
)

BLOG_POSTS = """
op.execute("CREATE TABLE blog_posts (id serial PRIMARY KEY, title text NOT NULL, content text NOT NULL)")
"""

SEED_VECTORIZER = """
op.create_vectorizer(
    source="blog_posts",
    target_table="blog_posts_embedding_store",
    view_table="blog_posts_embedding",
    embedding=EmbeddingOpenaiConfig(model="text-embedding-3-small", dimensions=1536),
    chunking=ChunkingRecursiveCharacterTextSplitterConfig(
        chunk_column="content", chunk_size=800, chunk_overlap=400, separators=[".", " "]),
    formatting=FormattingPythonTemplateConfig(template="$title - $chunk"),
    indexing=IndexingHnswConfig(),
)
"""


def query(url: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


def relation_exists(url: str, qualified: str) -> bool:
    return query(url, "SELECT to_regclass(%s) IS NOT NULL", (qualified,))[0][0]


@pytest.fixture
def project(tmp_path: Path, fresh_database_url: str) -> AlembicProject:
    return AlembicProject.create(tmp_path / "alembic", fresh_database_url)


@pytest.fixture
def op(fresh_database_url: str) -> Iterator[Operations]:
    """Alembic's Operations on a live connection, for validation cases that need no project."""
    register_operations()
    engine = create_engine(sqlalchemy_url(fresh_database_url))
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE blog_posts (id serial PRIMARY KEY, title text, content text)")
    with engine.connect() as conn:
        yield Operations(MigrationContext.configure(conn))
    engine.dispose()


def local_vectorizer(**overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(
        source="blog_posts",
        embedding=EmbeddingLocalConfig(),
        chunking=ChunkingRecursiveCharacterTextSplitterConfig(chunk_column="content"),
        formatting=FormattingPythonTemplateConfig(template="$title - $chunk"),
    )
    kwargs.update(overrides)
    return kwargs


def test_seed_migration_upgrade_and_downgrade(project: AlembicProject) -> None:
    url = project.database_url
    project.add_migration("0001", None, BLOG_POSTS, 'op.execute("DROP TABLE blog_posts")')
    project.add_migration(
        "0002", "0001", SEED_VECTORIZER,
        'op.drop_vectorizer(target_table="blog_posts_embedding_store", drop_all=True)', IMPORTS)
    project.upgrade()

    (row,) = query(url, "SELECT id, name, source_schema, source_table, source_pk, target_table, "
                        "view_table, config, config_version, publication_name "
                        "FROM vectorizer.vectorizers")
    vid, name, s_schema, s_table, pk, target, view, config, version, publication = row
    assert (name, s_schema, s_table, target, view) == (
        "public_blog_posts_embedding", "public", "blog_posts", "blog_posts_embedding_store",
        "blog_posts_embedding")
    assert pk == [{"attname": "id", "typname": "integer", "attnum": 1}]
    assert config["embedding"]["implementation"] == "openai"
    assert config["embedding"]["dimensions"] == 1536
    assert config["formatting"]["template"] == "$title - $chunk"
    assert version == 1 and publication == f"vectorizer_{vid}"

    columns = query(url, "SELECT column_name, data_type, udt_name FROM information_schema.columns "
                         "WHERE table_name = 'blog_posts_embedding_store' ORDER BY ordinal_position")
    assert [c[0] for c in columns] == ["embedding_uuid", "id", "chunk_seq", "chunk", "embedding"]
    assert query(url, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                      "WHERE attrelid = 'blog_posts_embedding_store'::regclass "
                      "AND attname = 'embedding'") == [("vector(1536)",)]
    view_columns = query(url, "SELECT column_name FROM information_schema.columns "
                              "WHERE table_name = 'blog_posts_embedding' ORDER BY ordinal_position")
    assert [c[0] for c in view_columns] == [
        "embedding_uuid", "chunk_seq", "chunk", "embedding", "id", "title", "content"]
    indexes = query(url, "SELECT indexdef FROM pg_indexes WHERE tablename = "
                         "'blog_posts_embedding_store'")
    assert any("hnsw" in d and "vector_cosine_ops" in d for (d,) in indexes)
    assert any("UNIQUE" in d and "(id, chunk_seq)" in d for (d,) in indexes)
    assert query(url, "SELECT schemaname, tablename FROM pg_publication_tables "
                      "WHERE pubname = %s", (publication,)) == [("public", "blog_posts")]
    # The store accepts a real row and the view joins it to its post.
    query(url, "INSERT INTO blog_posts (title, content) VALUES ('t', 'c')")
    query(url, "INSERT INTO blog_posts_embedding_store (id, chunk_seq, chunk, embedding) "
               "VALUES (1, 0, 'c', array_fill(0.5, ARRAY[1536])::vector)")
    assert query(url, "SELECT title, chunk FROM blog_posts_embedding") == [("t", "c")]

    project.downgrade("0001")
    assert query(url, "SELECT count(*) FROM vectorizer.vectorizers") == [(0,)]
    assert not relation_exists(url, "blog_posts_embedding_store")
    assert not relation_exists(url, "blog_posts_embedding")
    assert query(url, "SELECT count(*) FROM pg_publication") == [(0,)]
    assert query(url, "SELECT count(*) FROM pg_indexes WHERE indexdef LIKE '%hnsw%'") == [(0,)]
    project.downgrade("base")
    assert not relation_exists(url, "blog_posts")


def test_composite_key_and_schemas(project: AlembicProject) -> None:
    url = project.database_url
    project.add_migration("0001", None, """
        op.execute("CREATE SCHEMA content")
        op.execute("CREATE TABLE content.docs (tenant text, doc_id bigint, body text, "
                   "PRIMARY KEY (tenant, doc_id))")
        op.create_vectorizer(source="content.docs", target_schema="vectors",
                             view_schema="search",
                             embedding=EmbeddingLocalConfig(dimensions=128),
                             chunking=ChunkingRecursiveCharacterTextSplitterConfig(chunk_column="body"))
    """, """
        op.drop_vectorizer(target_table="vectors.docs_embedding_store", drop_all=True)
        op.execute("DROP SCHEMA content CASCADE")
    """, IMPORTS)
    project.upgrade()
    columns = query(url, "SELECT column_name, data_type FROM information_schema.columns "
                         "WHERE table_schema = 'vectors' AND table_name = 'docs_embedding_store' "
                         "ORDER BY ordinal_position")
    assert columns[:3] == [("embedding_uuid", "uuid"), ("tenant", "text"), ("doc_id", "bigint")]
    assert relation_exists(url, "search.docs_embedding")
    assert query(url, "SELECT name FROM vectorizer.vectorizers") == [("search_docs_embedding",)]
    project.downgrade()
    assert not relation_exists(url, "vectors.docs_embedding_store")
    assert not relation_exists(url, "search.docs_embedding")


def test_offline_sql_is_valid(project: AlembicProject) -> None:
    project.add_migration("0001", None, BLOG_POSTS, 'op.execute("DROP TABLE blog_posts")')
    project.add_migration("0002", "0001", SEED_VECTORIZER,
                          'op.drop_vectorizer(target_table="blog_posts_embedding_store", '
                          'drop_all=True)', IMPORTS)
    script = project.upgrade_sql()
    assert "vectorizer.create_vectorizer(" in script
    assert "CREATE TABLE IF NOT EXISTS vectorizer.vectorizers" in script
    # The script runs as it is against the database, and builds the same objects.
    with psycopg.connect(project.database_url, autocommit=True) as conn:
        conn.execute(script.encode())
    url = project.database_url
    assert query(url, "SELECT target_table FROM vectorizer.vectorizers") == [
        ("blog_posts_embedding_store",)]
    assert relation_exists(url, "blog_posts_embedding")
    assert query(url, "SELECT version_num FROM alembic_version") == [("0002",)]


def test_offline_script_holds_the_catalog_once(project: AlembicProject) -> None:
    """``alembic upgrade --sql`` over several migrations and operations: the ~400-line catalog
    script is emitted once, before the first operation, not once per operation."""
    project.add_migration("0001", None, BLOG_POSTS + """
op.create_vectorizer(source="blog_posts", name="posts", embedding=EmbeddingLocalConfig(),
    chunking=ChunkingRecursiveCharacterTextSplitterConfig(chunk_column="content"))
op.alter_vectorizer("posts", embedding=EmbeddingLocalConfig(dimensions=128))
""", 'op.drop_vectorizer(name="posts", drop_all=True)', IMPORTS)
    project.add_migration("0002", "0001", """
op.alter_vectorizer("posts", embedding=EmbeddingLocalConfig(dimensions=64))
op.drop_vectorizer(name="posts", drop_all=True)
""", "pass", IMPORTS)
    script = project.upgrade_sql()
    assert script.count("CREATE TABLE IF NOT EXISTS vectorizer.vectorizers") == 1
    assert script.count("vectorizer.alter_vectorizer(") >= 2
    assert script.index("CREATE TABLE IF NOT EXISTS vectorizer.vectorizers") < script.index(
        "vectorizer.create_vectorizer(")


def mark_built(url: str) -> None:
    """As if a worker had written a row of every serving version (``applied_state``)."""
    query(url, "INSERT INTO vectorizer.applied_state (vectorizer_id, version, pk, lsn)"
               " SELECT id, config_version, '{\"id\": 1}', '0/1' FROM vectorizer.vectorizers"
               " RETURNING 1")


def test_a_version_superseded_before_it_was_built_is_never_built(project: AlembicProject) -> None:
    """create_vectorizer and alter_vectorizer in one upgrade, before any worker ran: the new
    version serves at once and the first is retired unbuilt, so no row is embedded twice."""
    url = project.database_url
    project.add_migration("0001", None, BLOG_POSTS + """
op.create_vectorizer(source="blog_posts", name="posts", embedding=EmbeddingLocalConfig(),
    chunking=ChunkingRecursiveCharacterTextSplitterConfig(chunk_column="content"))
op.alter_vectorizer("posts", embedding=EmbeddingLocalConfig(dimensions=128))
""", 'op.drop_vectorizer(name="posts", drop_all=True)\nop.execute("DROP TABLE blog_posts")', IMPORTS)
    project.upgrade()
    assert query(url, "SELECT version, status, target_table FROM vectorizer.config_versions"
                      " ORDER BY version") == [(1, "retired", "blog_posts_embedding_store_v1"),
                                               (2, "active", "blog_posts_embedding_store")]
    assert query(url, "SELECT config_version, config->'embedding'->>'dimensions'"
                      " FROM vectorizer.vectorizers") == [(2, "128")]
    assert query(url, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = "
                      "'blog_posts_embedding_store'::regclass AND attname = 'embedding'") == [
        ("vector(128)",)]
    assert relation_exists(url, "blog_posts_embedding")  # the view follows the serving store
    # the workers are asked for the serving version only
    from pgai_orm.catalog.versions import served_versions

    with psycopg.connect(url, autocommit=True) as conn:
        assert {version for _, version in served_versions(conn)} == {2}


def test_alter_vectorizer_makes_a_new_version(project: AlembicProject) -> None:
    url = project.database_url
    project.add_migration("0001", None, BLOG_POSTS + """
op.create_vectorizer(source="blog_posts", name="posts", embedding=EmbeddingLocalConfig(),
    chunking=ChunkingRecursiveCharacterTextSplitterConfig(chunk_column="content"))
""", 'op.drop_vectorizer(name="posts", drop_all=True)\nop.execute("DROP TABLE blog_posts")',
        IMPORTS + "\nfrom pgai_orm.configuration import ProcessingConfig")
    project.add_migration("0002", "0001", """
op.alter_vectorizer("posts", embedding=EmbeddingLocalConfig(dimensions=128))
op.alter_vectorizer("posts", processing=ProcessingConfig(batch_size=10))
""", 'op.alter_vectorizer("posts", embedding=EmbeddingLocalConfig())',
        IMPORTS + "\nfrom pgai_orm.configuration import ProcessingConfig")
    project.upgrade("0001")
    mark_built(url)  # a worker wrote version 1: the alteration builds beside it
    project.upgrade()
    versions = query(url, "SELECT version, status, target_table, config->'embedding'->>'dimensions',"
                          " config->'processing'->>'batch_size' "
                          "FROM vectorizer.config_versions ORDER BY version")
    assert versions == [(1, "active", "blog_posts_embedding_store", "256", "10"),
                        (2, "building", "blog_posts_embedding_store_v2", "128", "10")]
    assert query(url, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = "
                      "'blog_posts_embedding_store_v2'::regclass AND attname = 'embedding'") == [
        ("vector(128)",)]
    # Processors switch when the new store caught up: one catalog call, table names kept.
    query(url, "SELECT vectorizer.activate_version(id, 2) FROM vectorizer.vectorizers")
    assert query(url, "SELECT config_version, config->'embedding'->>'dimensions' "
                      "FROM vectorizer.vectorizers") == [(2, "128")]
    assert query(url, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = "
                      "'blog_posts_embedding_store'::regclass AND attname = 'embedding'") == [
        ("vector(128)",)]
    assert relation_exists(url, "blog_posts_embedding_store_v1")
    assert relation_exists(url, "blog_posts_embedding")
    project.downgrade()
    assert query(url, "SELECT count(*) FROM vectorizer.vectorizers") == [(0,)]
    assert query(url, "SELECT count(*) FROM pg_class WHERE relname LIKE 'blog_posts_embedding%'") == [
        (0,)]


def test_last_drop_removes_inactive_replication_slot(op: Operations, fresh_database_url: str) -> None:
    op.create_vectorizer(**local_vectorizer())
    op.get_bind().commit()  # a logical slot waits for every open transaction to end
    slot = "vectorizer_test_slot"
    query(fresh_database_url,
          "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    op.drop_vectorizer(target_table="blog_posts_embedding_store", drop_all=True)
    op.get_bind().commit()
    assert query(fresh_database_url,
                 "SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (slot,)) == [(0,)]


@pytest.mark.parametrize(
    ("setup_sql", "kwargs", "message"),
    [
        ("", {"source": "no_such_table"}, "source table <search_path>.no_such_table does not exist"),
        ("", {"chunking": ChunkingRecursiveCharacterTextSplitterConfig(chunk_column="body")},
         'column "body" does not exist in source table public.blog_posts'),
        ("CREATE TABLE no_key (content text, title text)", {"source": "no_key"},
         "source table public.no_key has no primary key"),
        ("", {"formatting": FormattingPythonTemplateConfig(template="$author: $chunk")},
         "formatting template placeholder $author is not a column of public.blog_posts"),
        ("CREATE TABLE has_chunk (id int PRIMARY KEY, content text, chunk text)",
         {"source": "has_chunk"},
         'source table public.has_chunk has a column named "chunk"'),
        ("", {"target_table": "x" * 70}, "is longer than 63 bytes"),
    ],
)
def test_validation_errors_name_the_problem(op: Operations, setup_sql: str,
                                             kwargs: dict[str, Any], message: str) -> None:
    if setup_sql:
        op.execute(setup_sql)
    with pytest.raises((exc.DBAPIError, ValueError)) as raised:
        op.create_vectorizer(**local_vectorizer(**kwargs))
    assert message in str(raised.value)


def test_dimensions_must_be_positive() -> None:
    with pytest.raises(ConfigurationError, match="dimensions"):
        EmbeddingOpenaiConfig(model="text-embedding-3-small", dimensions=0)


def test_duplicate_vectorizer_and_if_not_exists(op: Operations, fresh_database_url: str) -> None:
    op.create_vectorizer(**local_vectorizer(name="posts"))
    op.get_bind().commit()
    with pytest.raises(exc.DBAPIError, match='vectorizer "posts" .*already exists'):
        op.create_vectorizer(**local_vectorizer(name="posts"))
    op.get_bind().rollback()
    op.create_vectorizer(**local_vectorizer(name="posts"), if_not_exists=True)
    op.get_bind().commit()
    assert query(fresh_database_url, "SELECT name FROM vectorizer.vectorizers") == [("posts",)]


def test_hostile_names_are_quoted(op: Operations, fresh_database_url: str) -> None:
    source = 'Blog "Posts"; DROP TABLE x; --'
    op.execute('CREATE TABLE x (id int PRIMARY KEY)')
    op.execute('CREATE SCHEMA "My Schema"')
    op.execute('CREATE TABLE "My Schema"."Blog ""Posts""; DROP TABLE x; --" '
               '("Id" int PRIMARY KEY, "Title; --" text, content text)')
    op.create_vectorizer(
        source=source, source_schema="My Schema", name="it's; a name",
        target_table='Store "1"; --', view_schema="View's Schema",
        embedding=EmbeddingLocalConfig(dimensions=64),
        chunking=ChunkingRecursiveCharacterTextSplitterConfig(chunk_column="content"),
        grant_to=["pg_read_all_data"])
    op.get_bind().commit()
    url = fresh_database_url
    assert relation_exists(url, '"My Schema"."Store ""1""; --"')
    assert relation_exists(url, '"View\'s Schema"."Blog ""Posts""; DROP TABLE x; --_embedding"')
    assert relation_exists(url, "x")
    assert query(url, "SELECT name FROM vectorizer.vectorizers") == [("it's; a name",)]
    op.drop_vectorizer(name="it's; a name", drop_all=True)
    op.get_bind().commit()
    assert not relation_exists(url, '"My Schema"."Store ""1""; --"')
    assert relation_exists(url, "x")


def test_names_with_nul_bytes_are_refused() -> None:
    from pgai_orm.alembic import CreateVectorizerOp, VectorizerOperationError

    with pytest.raises(VectorizerOperationError, match="NUL"):
        CreateVectorizerOp("blog\x00posts",
                           chunking=ChunkingRecursiveCharacterTextSplitterConfig(chunk_column="c"))


MODELS = '''
from sqlalchemy import Integer, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from pgai_orm.alembic import declare_vectorizer
from pgai_orm.configuration import (ChunkingRecursiveCharacterTextSplitterConfig,
    EmbeddingLocalConfig, FormattingPythonTemplateConfig)
from pgai_orm.sqlalchemy import vectorizer_relationship


class Base(DeclarativeBase):
    pass


class BlogPost(Base):
    __tablename__ = "blog_posts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(Text)
    content: Mapped[str] = mapped_column(Text)
    content_embeddings = vectorizer_relationship(dimensions=DIMENSIONS)


metadata = Base.metadata
declare_vectorizer(
    metadata, "blog_posts", name="posts",
    embedding=EmbeddingLocalConfig(dimensions=DIMENSIONS),
    chunking=ChunkingRecursiveCharacterTextSplitterConfig(chunk_column="content", chunk_size=CHUNK),
    formatting=FormattingPythonTemplateConfig(template="$title - $chunk"))
'''


def _autogenerate(project: AlembicProject, tmp_path: Path, message: str, dimensions: int,
                  chunk: int) -> str:
    from alembic import command

    models = tmp_path / f"models_{message}.py"
    models.write_text(MODELS.replace("DIMENSIONS", str(dimensions)).replace("CHUNK", str(chunk)))
    cfg = project.config()
    cfg.set_main_option("models_module", str(models))
    script = command.revision(cfg, message=message, autogenerate=True, rev_id=message)
    path = Path(script.path)  # type: ignore[union-attr]
    command.upgrade(cfg, "head")
    return path.read_text()


def test_autogenerate_renders_vectorizer_ops(project: AlembicProject, tmp_path: Path) -> None:
    url = project.database_url
    first = _autogenerate(project, tmp_path, "a1", 256, 800)
    mark_built(url)  # a worker wrote version 1: alterations build beside it
    # The table itself is a normal model; its embedding store is not (include_object filter).
    assert "op.create_table('blog_posts'" in first
    assert "op.create_vectorizer(" in first and "embedding_store" not in first.split("def downgrade")[0].replace("op.create_vectorizer", "")
    assert "from pgai_orm.configuration import" in first
    assert "op.drop_vectorizer(" in first.split("def downgrade")[1]
    # create_table sorts before create_vectorizer, so the generated migration runs as generated.
    assert first.index("op.create_table('blog_posts'") < first.index("op.create_vectorizer(")
    assert query(url, "SELECT name FROM vectorizer.vectorizers") == [("posts",)]

    unchanged = _autogenerate(project, tmp_path, "a2", 256, 800)
    assert "vectorizer(" not in unchanged

    altered = _autogenerate(project, tmp_path, "a3", 128, 500)
    # its upgrade and downgrade render config classes: one import line names each class once
    imports = [line for line in altered.splitlines()
               if line.startswith("from pgai_orm.configuration import")]
    assert len(imports) == 1, imports
    names = [n.strip() for n in imports[0].split(" import ", 1)[1].split(",")]
    assert len(names) == len(set(names)) and "EmbeddingLocalConfig" in names, names
    upgrade, downgrade = altered.split("def downgrade")
    assert "op.alter_vectorizer(name='posts'" in upgrade and "dimensions=128" in upgrade
    assert "chunk_size=500" in upgrade
    assert "op.alter_vectorizer(name='posts'" in downgrade and "chunk_size=500" not in downgrade
    assert query(url, "SELECT version, status FROM vectorizer.config_versions ORDER BY version") == [
        (1, "active"), (2, "building")]
    project.downgrade("a2")
    assert query(url, "SELECT version, status FROM vectorizer.config_versions ORDER BY version") == [
        (1, "active"), (2, "retired"), (3, "building")]

"""The README's migration, models and queries run as written (the seed's form, OpenAI 1536 dims).

The OpenAI calls go through the real ``openai`` SDK to the tests' own server speaking OpenAI's
wire format; the store rows are written here the way a processor writes them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import create_engine

from infra.urls import sqlalchemy_url
from pgai_orm.configuration import VectorizerConfig
from pgai_orm.embedders import create_embedder
from processors.chunking import chunker_for
from processors.formatting import formatter_for
from tests.fake_providers.openai_server import FakeOpenAIServer
from tests.integration.alembic_project import AlembicProject

README = Path(__file__).resolve().parents[2] / "README.md"

POSTS = [
    ("Learning Python", "Python is a programming language that is easy to learn. Start with "
     "the tutorial, write small scripts, and read other people's code."),
    ("Baking bread", "Mix flour, water and salt with a starter, let the dough rise overnight "
     "and bake it in a hot oven."),
    ("Python packaging", "Packaging a Python project means writing a pyproject.toml and "
     "building a wheel that pip can install."),
]


def readme_block(name: str) -> str:
    match = re.search(rf"<!-- test: {name} -->\n```python\n(.*?)```", README.read_text(), re.S)
    assert match, f"README has no block marked {name}"
    return match.group(1)


@pytest.fixture
def openai_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        monkeypatch.setenv("OPENAI_API_KEY", server.api_key)
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        yield server  # type: ignore[misc]


def write_store(url: str) -> None:
    """Chunk, format, embed and store every post with the catalog's config."""
    with psycopg.connect(url, autocommit=True) as conn:
        (config,) = conn.execute("SELECT config FROM vectorizer.vectorizers").fetchone()
        cfg = VectorizerConfig.from_dict(config)
        chunk, fmt = chunker_for(cfg.chunking), formatter_for(cfg.formatting)
        embedder = create_embedder(cfg.embedding)
        for post_id, title, content in conn.execute(
                "SELECT id, title, content FROM blog_posts").fetchall():
            chunks = chunk(content)
            vectors = embedder.embed_sync(
                [fmt(c, {"id": post_id, "title": title, "content": content}) for c in chunks])
            for seq, (text, vector) in enumerate(zip(chunks, vectors, strict=True)):
                conn.execute("INSERT INTO blog_posts_embedding_store (id, chunk_seq, chunk, "
                             "embedding) VALUES (%s, %s, %s, %s::vector)",
                             (post_id, seq, text, str(vector)))


def test_readme_seed_runs_as_written(tmp_path: Path, fresh_database_url: str,
                                     openai_server: FakeOpenAIServer,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    project = AlembicProject.create(tmp_path / "alembic", fresh_database_url)
    project.add_migration("0001", None, """
        op.execute("CREATE TABLE blog_posts (id serial PRIMARY KEY, title text, content text)")
    """, 'op.execute("DROP TABLE blog_posts")')
    migration = readme_block("migration")
    (project.root / "versions" / "0002.py").write_text(
        "revision = '0002'\ndown_revision = '0001'\n" + migration)
    project.upgrade()
    with psycopg.connect(fresh_database_url, autocommit=True) as conn:
        conn.cursor().executemany("INSERT INTO blog_posts (title, content) VALUES (%s, %s)", POSTS)
    write_store(fresh_database_url)

    engine = create_engine(sqlalchemy_url(fresh_database_url))
    namespace: dict[str, Any] = {"engine": engine}
    for block in ("models", "queries"):
        # dont_inherit: this module's ``from __future__ import annotations`` must not apply.
        exec(compile(readme_block(block), f"README.md:{block}", "exec", dont_inherit=True),
             namespace)
    engine.dispose()

    printed = capsys.readouterr().out
    assert "Learning Python: chunk 0" in printed and "Baking bread:" not in printed
    assert len(namespace["similar"]) == 3
    assert namespace["BlogPost"].content_embeddings.__name__ == "BlogPostContentEmbeddings"
    assert "blog_posts_embedding_store" in namespace["Base"].metadata.info["pgai_managed_tables"]
    requests = openai_server.embedding_requests()
    assert requests and all(r["model"] == "text-embedding-3-small" for r in requests)
    assert all(r.get("dimensions") == 1536 for r in requests)

    project.downgrade("0001")
    with psycopg.connect(fresh_database_url) as conn:
        assert conn.execute("SELECT to_regclass('blog_posts_embedding_store')").fetchone() == (None,)

"""blog_posts and its vectorizer (offline model, recursive splitter, HNSW and keyword index).

Revision ID: 0001_blog_posts
Revises:
"""

import sqlalchemy as sa
from alembic import op

from pgai_orm.configuration import (
    ChunkingRecursiveCharacterTextSplitterConfig,
    EmbeddingLocalConfig,
    FormattingPythonTemplateConfig,
    IndexingHnswConfig,
    TextIndexingFullTextConfig,
)

revision = "0001_blog_posts"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "blog_posts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=False), nullable=False,
                  server_default=sa.func.now()),
    )
    op.create_vectorizer(  # type: ignore[attr-defined]  # added to op at run time (register_operations)
        source="blog_posts",
        target_table="blog_posts_embedding_store",
        view_table="blog_posts_embedding",
        embedding=EmbeddingLocalConfig(),  # wordllama, 256 dimensions, inside its PyPI wheel
        chunking=ChunkingRecursiveCharacterTextSplitterConfig(
            chunk_column="content", chunk_size=800, chunk_overlap=100,
            separators=("\n\n", "\n", ". ", " ")),
        formatting=FormattingPythonTemplateConfig(template="$title - $chunk"),
        indexing=IndexingHnswConfig(),
        text_indexing=TextIndexingFullTextConfig(),  # keyword index: search(mode="hybrid")
    )


def downgrade() -> None:
    op.drop_vectorizer(target_table="blog_posts_embedding_store", drop_all=True)  # type: ignore[attr-defined]  # as above
    op.drop_table("blog_posts")

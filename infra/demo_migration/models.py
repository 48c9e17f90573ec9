"""The demo's ORM model: a blog post whose ``content`` the vectorizer embeds.

``content_embeddings`` maps the store the migration's ``op.create_vectorizer`` creates
(``blog_posts_embedding_store``), so ``BlogPost.content_embeddings.search(session, "...")`` ranks
chunks with the vectorizer's own model.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from pgai_orm.sqlalchemy import vectorizer_relationship

#: Must equal the migration's embedding dimensions (the offline wordllama model's native size).
DIMENSIONS = 256


class Base(DeclarativeBase):
    pass


class BlogPost(Base):
    __tablename__ = "blog_posts"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    content: Mapped[str]
    published_at: Mapped[datetime]
    content_embeddings = vectorizer_relationship(dimensions=DIMENSIONS)

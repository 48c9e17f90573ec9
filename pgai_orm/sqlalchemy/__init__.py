"""SQLAlchemy integration, following pgai's: ``vectorizer_relationship`` and semantic search.

``BlogPost.content_embeddings`` is the mapped class of the vectorizer's embedding store
(``BlogPostContentEmbeddings``), ``post.content_embeddings`` the post's chunks, and
``BlogPost.content_embeddings.search(session, "text")`` (``search_async`` for an
``AsyncSession``) ranks chunks by distance to the text embedded with the vectorizer's own model,
by keywords (``mode="keyword"``) or both fused (``mode="hybrid"``), per chunk or per parent row.
With ``DestinationColumnConfig`` the embedding is the model's own column instead
(``vectorizer_column(dimensions)``), searched with ``search_column(Model.attr, session, "text")``.
"""

from pgai_orm.names import MANAGED_TABLES_KEY
from pgai_orm.sqlalchemy.binding import VectorizerBinding
from pgai_orm.sqlalchemy.column import (
    ColumnSearchResult,
    search_column,
    search_column_async,
    vectorizer_column,
)
from pgai_orm.sqlalchemy.embedding_model import EmbeddingModel
from pgai_orm.sqlalchemy.errors import (
    VectorizerDimensionsError,
    VectorizerNotFoundError,
    VectorizerTextIndexError,
)
from pgai_orm.sqlalchemy.relationship import VectorizerRelationship, vectorizer_relationship
from pgai_orm.sqlalchemy.results import SearchResult
from pgai_orm.sqlalchemy.search import search_statement
from pgai_orm.sqlalchemy.search_options import DISTANCES, SearchOptions

__all__ = [
    "DISTANCES",
    "ColumnSearchResult",
    "MANAGED_TABLES_KEY",
    "EmbeddingModel",
    "SearchOptions",
    "SearchResult",
    "VectorizerBinding",
    "VectorizerDimensionsError",
    "VectorizerNotFoundError",
    "VectorizerRelationship",
    "VectorizerTextIndexError",
    "search_column",
    "search_column_async",
    "search_statement",
    "vectorizer_column",
    "vectorizer_relationship",
]

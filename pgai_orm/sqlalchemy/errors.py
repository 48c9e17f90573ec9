"""Errors raised by the ORM side, named after what went wrong.

They are raised before any search SQL runs, so a misconfigured model fails with a sentence
naming the model and the catalog row instead of a pgvector error about vector sizes.
"""

from __future__ import annotations

from pgai_orm.errors import VectorizerError


class VectorizerNotFoundError(VectorizerError, LookupError):
    """No catalog row of ``vectorizer.vectorizers`` has the model's store table as its target."""


class VectorizerBindingError(VectorizerError, TypeError):
    """``vectorizer_relationship`` is on a class it cannot serve (mapped to no plain table)."""


class VectorizerDimensionsError(VectorizerError, ValueError):
    """The model's ``dimensions`` differ from those the vectorizer embeds with.

    Stored vectors and query vectors would have different sizes; pgvector would reject every
    distance, so the mismatch is reported once, up front, with both numbers.
    """


class VectorizerTextIndexError(VectorizerError, LookupError):
    """``mode="keyword"`` or ``"hybrid"`` on a vectorizer without a keyword index.

    Raised before any SQL runs (a query of the missing ``chunk_tsv`` column would abort the
    caller's transaction); the message names the option that adds the index.
    """

"""The root of every error the pipeline raises on purpose.

Each package defines its errors next to the code that raises them, named for what went wrong
(``ConfigurationError``, ``SlotLostError``, ``TransientEmbeddingError``, ...), and every one of
them derives from :class:`VectorizerError`, so an application can catch "anything the
vectorizer refused" in one ``except`` without catching programming errors. Where a class also
means a builtin category (a bad value, a missing thing) it derives from that builtin too, so
``except ValueError`` keeps working for callers who wrote it before.

:class:`InvariantError` replaces ``assert`` for conditions the code relies on: asserts vanish
under ``python -O``, and a broken invariant must stop the operation with a message, not go on.
"""

from __future__ import annotations

__all__ = ["InvariantError", "VectorizerError"]


class VectorizerError(Exception):
    """Base class of every error raised by ``pgai_orm``, ``connector``, ``processors`` and
    ``infra``."""


class InvariantError(VectorizerError, RuntimeError):
    """Something the code relies on does not hold (a bug or a server that broke its protocol)."""

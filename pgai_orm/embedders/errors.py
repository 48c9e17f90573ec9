"""What can go wrong when embedding, split by what the pipeline should do about it.

The processors retry a :class:`TransientEmbeddingError` with backoff and record a
:class:`PermanentEmbeddingError` in the errors table and the dead-letter topic. Providers raise
only these classes, so that decision never depends on which SDK made the call. Messages never
contain an API key: providers build them from status codes and the server's own error text,
with any occurrence of the key scrubbed (:func:`redact`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pgai_orm.errors import VectorizerError

if TYPE_CHECKING:
    from pgai_orm.embedders.ratelimit import RateLimitInfo


class EmbeddingError(VectorizerError):
    """Base class of every error an embedder raises."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TransientEmbeddingError(EmbeddingError):
    """Worth retrying: timeout, connection failure, 408/409/429 or 5xx.

    ``retry_after`` is the delay in seconds the server asked for (``Retry-After`` or
    ``retry-after-ms``), or ``None`` when it sent none; ``rate_limit`` is what its
    ``x-ratelimit-*`` headers said (a 429 carries them too), for the pacing bucket.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        rate_limit: RateLimitInfo | None = None,
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after
        self.rate_limit = rate_limit


class PermanentEmbeddingError(EmbeddingError):
    """Retrying cannot help: bad request, bad credentials, unknown model, wrong output."""


class DimensionMismatchError(PermanentEmbeddingError):
    """The provider returned vectors of another size than the store's column."""


class InputTooLongError(PermanentEmbeddingError):
    """An input exceeds the model's context window even after truncation."""


class MissingApiKeyError(PermanentEmbeddingError):
    """The environment variable that should hold the API key is unset or empty."""

    def __init__(self, variable: str) -> None:
        super().__init__(f"API key not found: set the environment variable {variable}")
        self.variable = variable


class MissingExtraError(PermanentEmbeddingError, ImportError):
    """A provider needs an optional dependency that is not installed."""


def redact(message: str, *secrets: str | None) -> str:
    """Replace every occurrence of each (non-trivial) secret in ``message`` with ``***``."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            message = message.replace(secret, "***")
    return message

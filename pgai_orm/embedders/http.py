"""HTTP details shared by providers: reading ``Retry-After`` and classifying status codes."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping

from pgai_orm.embedders.errors import (
    EmbeddingError,
    InputTooLongError,
    PermanentEmbeddingError,
    TransientEmbeddingError,
)
from pgai_orm.embedders.ratelimit import parse_rate_limit_headers

#: statuses worth retrying, as the OpenAI SDK's own retry logic has them
TRANSIENT_STATUSES = frozenset({408, 409, 429})


def is_transient_status(status: int) -> bool:
    return status in TRANSIENT_STATUSES or status >= 500


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """The delay a server asked for: ``retry-after-ms`` (OpenAI), else ``Retry-After``.

    ``Retry-After`` may be seconds or an HTTP date; unparsable or negative values are ignored.
    """
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    millis = lowered.get("retry-after-ms")
    if millis is not None:
        try:
            value = float(millis) / 1000.0
            return value if value >= 0 else None
        except ValueError:
            pass
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        value = when.timestamp() - time.time()
    return max(value, 0.0)


def error_for_status(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> EmbeddingError:
    """An error of the right class for an HTTP failure (``message`` must already be redacted)."""
    text = f"HTTP {status}: {message}"
    if is_transient_status(status):
        return TransientEmbeddingError(
            text,
            status=status,
            retry_after=retry_after_seconds(headers),
            rate_limit=parse_rate_limit_headers(headers),
        )
    lowered = message.lower()
    if status in (400, 413) and ("context length" in lowered or "too long" in lowered):
        return InputTooLongError(text, status=status)
    return PermanentEmbeddingError(text, status=status)

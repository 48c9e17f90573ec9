"""What an embedder spent at its provider: tokens billed, requests answered, 429s provoked.

Why: a backfill's cost is tokens, and a user should see it per vectorizer without reading the
provider's invoice. Tokens come from the provider's ``usage.total_tokens`` when the response
has one (what is billed), else from the estimate the request was paced with. ``requests``
counts answered requests only; a 429 is counted apart (``rate_limited``), since it is not
billed but says the pacing or the limits need a look.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

__all__ = ["Usage", "UsageCounter"]


@dataclass
class Usage:
    """Tokens, requests and 429s of some embedding work (a batch, a process's lifetime)."""

    tokens: int = 0
    requests: int = 0
    rate_limited: int = 0

    def add(self, other: Usage) -> None:
        self.tokens += other.tokens
        self.requests += other.requests
        self.rate_limited += other.rate_limited

    def __bool__(self) -> bool:
        return bool(self.tokens or self.requests or self.rate_limited)


class UsageCounter:
    """A running :class:`Usage`, safe to add to from any thread (``embed_sync`` runs elsewhere)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._usage = Usage()

    def add(self, usage: Usage) -> None:
        with self._lock:
            self._usage.add(usage)

    def snapshot(self) -> Usage:
        """The totals so far (a copy)."""
        with self._lock:
            return Usage(self._usage.tokens, self._usage.requests, self._usage.rate_limited)

    def drain(self) -> Usage:
        """The totals since the last drain, and start again from zero."""
        with self._lock:
            out, self._usage = self._usage, Usage()
            return out

"""Retry transient provider failures with capped exponential backoff and full jitter.

Full jitter (a uniform delay between 0 and the exponential cap) spreads the retries of many
workers hit by the same 429 instead of having them return in lock step. A server's
``Retry-After`` is a floor: we never come back sooner than asked. Both the number of attempts
and the total time are bounded, so a provider outage turns into a recorded error rather than a
processor stuck forever on one batch (DESIGN: nothing is retried forever).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from pgai_orm.embedders.errors import TransientEmbeddingError

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try. ``max_attempts`` counts the first call; times are seconds."""

    max_attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_total: float = 120.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts: must be >= 1, got {self.max_attempts}")
        if self.base_delay < 0 or self.max_delay < 0 or self.max_total < 0:
            raise ValueError("base_delay, max_delay and max_total must be >= 0")

    def backoff(self, retry: int, rand: Callable[[], float] = random.random) -> float:
        """Delay before retry number ``retry`` (1-based), without any server hint."""
        cap = min(self.max_delay, self.base_delay * 2.0 ** (retry - 1))
        return rand() * cap


async def retry_async(
    operation: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    rand: Callable[[], float] = random.random,
) -> T:
    """Await ``operation()`` until it succeeds, retrying only :class:`TransientEmbeddingError`.

    Gives up, re-raising the last transient error, after ``max_attempts`` calls or when the next
    wait would end past ``max_total`` seconds from the first call. Any other exception
    (permanent errors included) propagates at once.
    """
    started = clock()
    attempt = 1
    while True:
        try:
            return await operation()
        except TransientEmbeddingError as exc:
            if attempt >= policy.max_attempts:
                raise
            delay = policy.backoff(attempt, rand)
            if exc.retry_after is not None:
                delay = max(delay, exc.retry_after)
            if clock() - started + delay > policy.max_total:
                raise
            logger.warning(
                "transient embedding error (status %s), retry %d/%d in %.2fs",
                exc.status,
                attempt,
                policy.max_attempts - 1,
                delay,
            )
            await sleep(delay)
            attempt += 1

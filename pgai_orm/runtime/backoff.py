"""Exponential backoff with a cap, for every process that waits for a service to come back.

Why one helper: the connector (database, broker), the worker (catalog, broker) and the operator
commands all retry the same way, so an outage produces one log line per attempt at growing
intervals (1, 2, 4, ... seconds, at most ``cap``) instead of a tight loop of tracebacks. A
little jitter keeps many processes that lost the same service from retrying in lockstep.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Backoff"]


@dataclass
class Backoff:
    """The delays between attempts: ``initial * factor**n``, at most ``cap``, ± ``jitter``."""

    initial: float = 1.0
    cap: float = 30.0
    factor: float = 2.0
    jitter: float = 0.1  # a fraction of the delay
    failures: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.cap < self.initial or self.factor < 1 or not 0 <= self.jitter < 1:
            raise ValueError(f"Backoff: need 0 < initial <= cap, factor >= 1, 0 <= jitter < 1;"
                             f" got {self.initial}, {self.cap}, {self.factor}, {self.jitter}")

    def next_delay(self) -> float:
        """Count one more failure and return how long to wait before the next attempt."""
        delay = min(self.cap, self.initial * self.factor ** min(self.failures, 64))
        self.failures += 1
        if self.jitter:
            delay *= 1 + random.uniform(-self.jitter, self.jitter)
        return min(delay, self.cap)

    def reset(self) -> None:
        """The service answered: the next failure starts again at ``initial``."""
        self.failures = 0

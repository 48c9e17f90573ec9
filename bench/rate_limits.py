"""The server side of OpenAI's rate limits, for the local endpoints the benchmarks and tests run.

Why a module: the remote-provider benchmark (``bench/remote_provider.py``, through
``bench/openai_compat_server.py``) and the embedder tests (``tests/fake_providers``) must enforce
limits the way OpenAI does, and the same way, or the client's pacing would be tuned against a
model of the server nobody checked. OpenAI documents requests-per-minute and tokens-per-minute
limits, refilled continuously, answered with 429 and ``Retry-After`` when exceeded, and reported
on every response (429s included) as ``x-ratelimit-limit-requests``/``-tokens``,
``x-ratelimit-remaining-*`` and ``x-ratelimit-reset-*`` (time until the bucket is full again, in
Go's duration format: ``6m0s``, ``1s``, ``20ms``). It also says limits "may be enforced over
shorter periods" than a minute; ``burst_s`` is that period: the bucket holds ``burst_s`` seconds
of the limit (60: a whole minute's worth, OpenAI's stated model).

A request is admitted while both buckets hold at least its cost (or are full, for a request
larger than the bucket), then both are charged; levels may go below zero only by such a large
request. Each client (a path prefix of the endpoint) has buckets of its own, like separate
organisations.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Decision", "RateLimiter", "format_duration", "retry_after_headers"]


def format_duration(seconds: float) -> str:
    """Seconds in OpenAI's reset format: ``20ms``, ``1s``, ``1.5s``, ``6m0s``, ``1h0m0s``.

    Milliseconds are rounded down, so a client inferring the bucket size from it never
    overestimates the bucket.
    """
    millis = max(0, math.floor(seconds * 1000))
    if millis < 1000:
        return f"{millis}ms"
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


@dataclass(frozen=True)
class Decision:
    """Whether a request is admitted, the headers to send either way, and the wait if not."""

    admitted: bool
    headers: dict[str, str]
    retry_after: float = 0.0


class _Bucket:
    def __init__(self, per_minute: float, burst_s: float, now: float) -> None:
        self.limit = per_minute
        self.rate = per_minute / 60.0
        self.capacity = self.rate * burst_s
        self.level = self.capacity
        self.updated = now

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + self.rate * max(0.0, now - self.updated))
        self.updated = now

    def wait_for(self, cost: float) -> float:
        """Seconds until ``cost`` (or a full bucket, if bigger) is available; 0 if it is now."""
        need = min(cost, self.capacity) - self.level
        return max(0.0, need / self.rate) if need > 1e-9 else 0.0

    def reset_s(self) -> float:
        return max(0.0, (self.capacity - self.level) / self.rate)


class RateLimiter:
    """Requests-per-minute and tokens-per-minute buckets per client (``None``: unlimited)."""

    def __init__(self, rpm: float | None, tpm: float | None, burst_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if burst_s <= 0:
            raise ValueError("burst_s must be > 0")
        self.rpm, self.tpm, self.burst_s = rpm, tpm, burst_s
        self._clock = clock
        self._lock = threading.Lock()
        self._clients: dict[str, tuple[_Bucket | None, _Bucket | None]] = {}

    @property
    def enabled(self) -> bool:
        return self.rpm is not None or self.tpm is not None

    def admit(self, client: str, tokens: int) -> Decision:
        """Charge one request of ``tokens`` to ``client`` if its buckets allow it."""
        if not self.enabled:
            return Decision(True, {})
        with self._lock:
            now = self._clock()
            requests, token_bucket = self._buckets(client, now)
            waits = [b.wait_for(cost) for b, cost in ((requests, 1), (token_bucket, tokens))
                     if b is not None]
            wait = max(waits, default=0.0)
            if wait <= 0:
                for bucket, cost in ((requests, 1), (token_bucket, tokens)):
                    if bucket is not None:
                        bucket.level -= cost
            return Decision(wait <= 0, self._headers(requests, token_bucket), wait)

    def reset(self) -> None:
        """Full buckets for everyone (between benchmark phases)."""
        with self._lock:
            self._clients.clear()

    def _buckets(self, client: str, now: float) -> tuple[_Bucket | None, _Bucket | None]:
        pair = self._clients.get(client)
        if pair is None:
            pair = (_Bucket(self.rpm, self.burst_s, now) if self.rpm else None,
                    _Bucket(self.tpm, self.burst_s, now) if self.tpm else None)
            self._clients[client] = pair
        for bucket in pair:
            if bucket is not None:
                bucket.refill(now)
        return pair

    @staticmethod
    def _headers(requests: _Bucket | None, tokens: _Bucket | None) -> dict[str, str]:
        headers: dict[str, str] = {}
        for name, bucket in (("requests", requests), ("tokens", tokens)):
            if bucket is None:
                continue
            headers[f"x-ratelimit-limit-{name}"] = str(int(bucket.limit))
            headers[f"x-ratelimit-remaining-{name}"] = str(max(0, math.floor(bucket.level)))
            headers[f"x-ratelimit-reset-{name}"] = format_duration(bucket.reset_s())
        return headers


def retry_after_headers(seconds: float) -> dict[str, str]:
    """``Retry-After`` (whole seconds, at least 1, as HTTP has it) and OpenAI's ``retry-after-ms``."""
    return {"retry-after": str(max(1, math.ceil(seconds))),
            "retry-after-ms": str(max(1, math.ceil(seconds * 1000)))}

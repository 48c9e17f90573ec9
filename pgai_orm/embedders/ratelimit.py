"""Pace requests to a provider from the rate limits it announces, instead of finding them by 429s.

Why: a backfill sends as fast as it can. Against a provider with requests-per-minute and
tokens-per-minute limits, sending blindly means bursts of 429s, each costing a ``Retry-After``
wait during which nothing is sent, and after enough of them a batch gives up and its rows are
recorded as failed. OpenAI (and the servers copying its wire format) tells every response how
much is left: ``x-ratelimit-limit-requests``/``-tokens``, ``x-ratelimit-remaining-*`` and
``x-ratelimit-reset-*`` (a duration such as ``6m0s``, ``1s``, ``20ms``: time until the bucket
is full again). This module turns those into a local token bucket per (provider, endpoint, API
key fingerprint, model), shared by every embedder of the process (the limits are per key and
model, not per vectorizer), and each request first awaits capacity for its tokens and one
request.

The model is OpenAI's: a bucket refilled continuously at ``limit / 60 s`` and holding at most
``capacity`` (the limit, or less when ``reset`` says the server enforces a shorter window:
``remaining + rate * reset``). Reservations are made in arrival order and may drive the level
below zero (a queue of debts), so waiters are served first come, first served without a lock
held across an ``await`` (a ``threading.Lock`` guards the arithmetic only, so buckets work from
any event loop or thread). A request larger than the whole bucket is let through once the
bucket is full, as the server does.

The server's numbers correct the local model only downwards, and only by what a response
says beyond what the local model expected right after that request was sent (so the
latency of a response is not mistaken for consumption); a correction counts once (``epoch``).
Until a provider has sent limits it is not paced at all: a provider without headers is never
slowed down. A 429 hands back the rejected reservation, clamps the level to what the server
reports and blocks every sender of the bucket for its ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

__all__ = [
    "BucketKey",
    "PacingBucket",
    "RateLimitInfo",
    "Reservation",
    "acquire",
    "bucket_for",
    "key_fingerprint",
    "parse_duration",
    "parse_rate_limit_headers",
    "reset_buckets",
]

#: the window OpenAI's limits are stated over (requests/tokens *per minute*)
WINDOW_S = 60.0

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(text: str | None) -> float | None:
    """Seconds in an OpenAI reset value (``6m0s``, ``1s``, ``20ms``, ``1h2m3.5s``, ``0.5``)."""
    if text is None:
        return None
    text = text.strip()
    try:
        return max(float(text), 0.0)  # a bare number: seconds
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
        return None
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(number) * scale[unit] for number, unit in parts)


def _number(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if value >= 0 else None


@dataclass(frozen=True)
class RateLimitInfo:
    """What one response said about the limits; any field may be missing (``None``)."""

    limit_requests: float | None = None
    limit_tokens: float | None = None
    remaining_requests: float | None = None
    remaining_tokens: float | None = None
    reset_requests: float | None = None
    reset_tokens: float | None = None


def parse_rate_limit_headers(headers: Mapping[str, str] | None) -> RateLimitInfo | None:
    """The ``x-ratelimit-*`` headers of a response (case-insensitive); ``None`` when absent.

    LiteLLM hands headers back prefixed with ``llm_provider-``; both spellings are read.
    """
    if not headers:
        return None
    lowered: dict[str, str] = {}
    for key, value in headers.items():
        name = str(key).lower().removeprefix("llm_provider-")
        lowered.setdefault(name, str(value))

    def get(name: str) -> str | None:
        return lowered.get(f"x-ratelimit-{name}")

    info = RateLimitInfo(
        limit_requests=_number(get("limit-requests")),
        limit_tokens=_number(get("limit-tokens")),
        remaining_requests=_number(get("remaining-requests")),
        remaining_tokens=_number(get("remaining-tokens")),
        reset_requests=parse_duration(get("reset-requests")),
        reset_tokens=parse_duration(get("reset-tokens")),
    )
    return None if info == RateLimitInfo() else info


class _Dimension:
    """One bucket (tokens or requests); unknown (``rate == 0``) until the server states a limit."""

    __slots__ = ("capacity", "epoch", "level", "lost", "open", "rate", "updated")

    def __init__(self) -> None:
        self.rate = 0.0
        self.capacity = 0.0
        self.level = 0.0
        self.updated = 0.0
        self.epoch = 0
        #: reservations not answered yet: the server may not have counted them
        self.open = 0.0
        #: refill lost to the ceiling so far: a queue of reservations waits that much longer
        self.lost = 0.0

    @property
    def known(self) -> bool:
        return self.rate > 0

    @property
    def ceiling(self) -> float:
        """The most the level can be: the server's full bucket, less what may not have reached
        it yet (its bucket stays capped while those are on the way, ours must too)."""
        return self.capacity - self.open

    def refill(self, now: float) -> None:
        if self.known and now > self.updated:
            gained = self.level + self.rate * (now - self.updated)
            level = max(self.level, min(self.ceiling, gained))
            self.lost += gained - level
            self.level = level
        self.updated = max(self.updated, now)

    def reserve(self, cost: float, now: float) -> tuple[float, float, float]:
        """Take ``cost``; return (seconds to wait, level expected right after sending, refill
        it waits for)."""
        self.open += cost
        if not self.known:
            return 0.0, 0.0, 0.0
        self.refill(now)
        self.level -= cost
        allowed_debt = max(0.0, cost - self.capacity)  # bigger than the bucket: send when full
        shortfall = max(0.0, -self.level - allowed_debt)
        delay = shortfall / self.rate
        return delay, self.level + self.rate * delay, shortfall

    def configure(self, limit: float | None, remaining: float | None, reset: float | None,
                  now: float) -> bool:
        """Take the limit from a response; return True when this made the bucket known."""
        if limit is None or limit <= 0:
            return False
        was_known = self.known
        self.refill(now)
        self.rate = limit / WINDOW_S
        capacity = limit
        if remaining is not None and reset is not None:
            capacity = min(limit, remaining + self.rate * reset)
        self.capacity = max(capacity, 1.0)
        if not was_known:  # less what was sent unpaced and is not answered yet
            start = remaining if remaining is not None else self.capacity
            self.level = min(self.capacity, start) - self.open
            self.updated = now
        else:
            self.level = min(self.level, self.ceiling)
        return not was_known

    def correct(self, paced: bool, expected: float, epoch: int, remaining: float | None) -> None:
        """Lower the level by what the server counted beyond the local model, once.

        A request sent before the limits were known has no expectation: what the server says
        after it is an upper bound of what is left (it was sent alongside others not yet
        counted locally).
        """
        if remaining is None or not self.known:
            return
        if not paced:
            self.level = min(self.level, remaining - self.open)
            return
        if epoch != self.epoch:
            return
        excess = max(expected, 0.0) - remaining
        if excess > 0:
            self.level -= excess
            self.epoch += 1

    def clamp(self, remaining: float | None) -> None:
        """After a 429: the server is the truth, less what is reserved but perhaps not counted."""
        if not self.known:
            return
        self.level = min(self.level, (remaining if remaining is not None else 0.0) - self.open)
        self.epoch += 1

    def close(self, cost: float) -> None:
        """A reservation was answered (or given up): no longer open."""
        self.open = max(0.0, self.open - cost)


@dataclass
class Reservation:
    """Capacity taken for one request; ``delay`` is how long to wait before sending it."""

    tokens: int
    requests: int
    delay: float
    expected_tokens: float = 0.0
    expected_requests: float = 0.0
    token_epoch: int = 0
    request_epoch: int = 0
    tokens_paced: bool = False
    requests_paced: bool = False
    closed: bool = False
    #: refill lost to the ceiling when the delay was last computed, and the refill still
    #: waited for (see :meth:`PacingBucket.extra_wait`)
    token_lost: float = 0.0
    request_lost: float = 0.0
    token_need: float = 0.0
    request_need: float = 0.0


class PacingBucket:
    """The request and token buckets of one provider key and model (thread- and loop-safe)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = _Dimension()
        self._requests = _Dimension()
        self._blocked_until = 0.0
        #: 429s seen by this bucket (for tests and logs; usage counts them per embedder)
        self.rate_limited = 0

    @property
    def paced(self) -> bool:
        """Whether the provider has announced any limit yet."""
        with self._lock:
            return self._tokens.known or self._requests.known

    def reserve(self, tokens: int, requests: int = 1) -> Reservation:
        """Take capacity for one request now; the caller waits ``delay`` seconds, then sends."""
        with self._lock:
            now = self._clock()
            token_delay, token_level, token_need = self._tokens.reserve(tokens, now)
            request_delay, request_level, request_need = self._requests.reserve(requests, now)
            return Reservation(
                tokens, requests, max(token_delay, request_delay),
                token_level, request_level, self._tokens.epoch, self._requests.epoch,
                self._tokens.known, self._requests.known, False,
                self._tokens.lost, self._requests.lost, token_need, request_need)

    def extra_wait(self, reservation: Reservation) -> float:
        """Seconds a waiting reservation must add: the refill the server could not bank while
        requests were on their way (its bucket was full) pushes back the whole queue."""
        with self._lock:
            now = self._clock()
            self._tokens.refill(now)
            self._requests.refill(now)
            token_lost = min(self._tokens.lost - reservation.token_lost, reservation.token_need)
            request_lost = min(self._requests.lost - reservation.request_lost,
                               reservation.request_need)
            reservation.token_lost, reservation.request_lost = self._tokens.lost, self._requests.lost
            reservation.token_need -= token_lost  # at most what it waited for, once
            reservation.request_need -= request_lost
            extra = 0.0
            for dim, lost in ((self._tokens, token_lost), (self._requests, request_lost)):
                if dim.known and lost > 0:
                    extra = max(extra, lost / dim.rate)
            return extra

    def blocked_for(self) -> float:
        """Seconds left of the last ``Retry-After``; 0 when senders may go."""
        with self._lock:
            return max(0.0, self._blocked_until - self._clock())

    def cancel(self, reservation: Reservation) -> None:
        """Give back a reservation that was never sent (cancelled while waiting its turn)."""
        with self._lock:
            self._close(reservation)
            self._give_back(reservation, reservation.tokens)

    def release(self, reservation: Reservation) -> None:
        """A request failed without an answer to learn from (timeout, 5xx): the server may have
        counted it, so its capacity stays spent."""
        with self._lock:
            self._close(reservation)

    def settle(self, reservation: Reservation, info: RateLimitInfo | None,
               actual_tokens: int | None = None) -> None:
        """A response came: refund an over-estimate, learn the limits, correct from ``remaining``."""
        with self._lock:
            now = self._clock()
            self._close(reservation)
            refund = 0.0
            if actual_tokens is not None and reservation.tokens_paced:
                refund = reservation.tokens - actual_tokens
                self._tokens.refill(now)
                self._tokens.level = min(self._tokens.ceiling, self._tokens.level + refund)
            if info is None:
                return
            self._tokens.correct(reservation.tokens_paced, reservation.expected_tokens + refund,
                                 reservation.token_epoch, info.remaining_tokens)
            self._requests.correct(reservation.requests_paced, reservation.expected_requests,
                                   reservation.request_epoch, info.remaining_requests)
            self._tokens.configure(info.limit_tokens, info.remaining_tokens, info.reset_tokens, now)
            self._requests.configure(info.limit_requests, info.remaining_requests,
                                     info.reset_requests, now)

    def rejected(self, reservation: Reservation | None, info: RateLimitInfo | None,
                 retry_after: float | None) -> None:
        """A 429: the request was not counted; wait out ``Retry-After``, trust the server's level."""
        with self._lock:
            now = self._clock()
            self.rate_limited += 1
            if reservation is not None:
                self._close(reservation)
                self._give_back(reservation, reservation.tokens)
            if info is not None:
                self._tokens.configure(info.limit_tokens, info.remaining_tokens,
                                       info.reset_tokens, now)
                self._requests.configure(info.limit_requests, info.remaining_requests,
                                         info.reset_requests, now)
                self._tokens.clamp(info.remaining_tokens)
                self._requests.clamp(info.remaining_requests)
            if retry_after is not None and retry_after > 0:
                self._blocked_until = max(self._blocked_until, now + retry_after)

    def levels(self) -> tuple[float | None, float | None]:
        """(tokens, requests) available now; ``None`` for a dimension without a known limit."""
        with self._lock:
            now = self._clock()
            out: list[float | None] = []
            for dim in (self._tokens, self._requests):
                dim.refill(now)
                out.append(dim.level if dim.known else None)
            return out[0], out[1]

    def _close(self, reservation: Reservation) -> None:
        if not reservation.closed:
            reservation.closed = True
            self._tokens.close(reservation.tokens)
            self._requests.close(reservation.requests)

    def _give_back(self, reservation: Reservation, tokens: float) -> None:
        now = self._clock()
        for dim, amount, paced in ((self._tokens, tokens, reservation.tokens_paced),
                                   (self._requests, reservation.requests, reservation.requests_paced)):
            if paced and dim.known:
                dim.refill(now)
                dim.level = min(dim.ceiling, dim.level + amount)


async def acquire(
    bucket: PacingBucket,
    tokens: int,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> tuple[Reservation, float]:
    """Wait until ``bucket`` has room for a request of ``tokens``; return it and the seconds waited.

    A ``Retry-After`` that arrives while waiting (another request's 429) is waited out too.
    Cancelled while waiting, the reservation is given back.
    """
    waited = 0.0
    while (blocked := bucket.blocked_for()) > 0:
        await sleep(blocked)
        waited += blocked
    reservation = bucket.reserve(tokens)
    try:
        delay = reservation.delay
        while delay > 1e-4:
            await sleep(delay)
            waited += delay
            delay = bucket.extra_wait(reservation)
        while (blocked := bucket.blocked_for()) > 0:
            await sleep(blocked)
            waited += blocked
    except BaseException:
        bucket.cancel(reservation)
        raise
    return reservation, waited


# -- one bucket per provider key and model, for the whole process ---------------------------------


class BucketKey(NamedTuple):
    """What a provider's limits apply to; holds a fingerprint of the key, never the key."""

    provider: str
    endpoint: str
    key_fingerprint: str
    model: str


def key_fingerprint(api_key: str | None) -> str:
    """A short, non-reversible name for an API key (SHA-256 prefix); ``-`` without a key."""
    if not api_key:
        return "-"
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()[:16]


_registry: dict[BucketKey, PacingBucket] = {}
_registry_lock = threading.Lock()


def bucket_for(provider: str, endpoint: str | None, api_key: str | None, model: str) -> PacingBucket:
    """The process-wide bucket of a provider endpoint, key and model (created on first use)."""
    key = BucketKey(provider, endpoint or "default", key_fingerprint(api_key), model)
    with _registry_lock:
        bucket = _registry.get(key)
        if bucket is None:
            bucket = _registry[key] = PacingBucket()
        return bucket


def reset_buckets() -> None:
    """Forget every bucket (tests start from a provider nobody has talked to yet)."""
    with _registry_lock:
        _registry.clear()

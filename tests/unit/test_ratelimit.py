"""The pacing bucket (``pgai_orm.embedders.ratelimit``), on an injected clock: no sleeping, no timing.

The last tests run the client bucket against the server-side limiter the benchmarks use
(``bench.rate_limits``) in a discrete-event simulation, so "no 429 and the limit is used" is
checked on simulated time.
"""

from __future__ import annotations

import asyncio
import heapq

import pytest

from bench.rate_limits import RateLimiter, format_duration
from pgai_orm.embedders.ratelimit import (
    PacingBucket,
    RateLimitInfo,
    acquire,
    bucket_for,
    key_fingerprint,
    parse_duration,
    parse_rate_limit_headers,
    reset_buckets,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def headers(limit_tokens: int, remaining_tokens: int, reset_tokens: str,
            limit_requests: int = 10_000, remaining_requests: int = 10_000,
            reset_requests: str = "0s") -> dict[str, str]:
    return {
        "x-ratelimit-limit-tokens": str(limit_tokens),
        "x-ratelimit-remaining-tokens": str(remaining_tokens),
        "x-ratelimit-reset-tokens": reset_tokens,
        "x-ratelimit-limit-requests": str(limit_requests),
        "x-ratelimit-remaining-requests": str(remaining_requests),
        "x-ratelimit-reset-requests": reset_requests,
    }


def learned(clock: Clock, limit: int = 6000, remaining: int = 6000, reset: str = "0s") -> PacingBucket:
    """A bucket that has seen one response: ``limit`` tokens/min (``limit/60`` per second)."""
    bucket = PacingBucket(clock)
    first = bucket.reserve(0)
    bucket.settle(first, parse_rate_limit_headers(headers(limit, remaining, reset)))
    return bucket


# -- parsing ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "seconds"), [
    ("6m0s", 360.0), ("1s", 1.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("0.5", 0.5),
    ("2m59.56s", 179.56), ("0s", 0.0),
])
def test_openai_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "5 minutes", "1x", None])
def test_unreadable_durations_are_none(text: str | None) -> None:
    assert parse_duration(text) is None


def test_headers_any_case_and_litellm_prefix() -> None:
    info = parse_rate_limit_headers({"X-RateLimit-Limit-Tokens": "1000000",
                                     "llm_provider-x-ratelimit-remaining-tokens": "999",
                                     "x-ratelimit-reset-tokens": "20ms"})
    assert info == RateLimitInfo(limit_tokens=1_000_000, remaining_tokens=999, reset_tokens=0.02)
    assert parse_rate_limit_headers({"content-type": "application/json"}) is None
    assert parse_rate_limit_headers(None) is None


# -- pacing ---------------------------------------------------------------------------------------

def test_a_provider_without_headers_is_never_paced() -> None:
    clock = Clock()
    bucket = PacingBucket(clock)
    for _ in range(100):
        reservation = bucket.reserve(1_000_000)
        assert reservation.delay == 0
        bucket.settle(reservation, None, 1_000_000)
    assert not bucket.paced
    assert bucket.levels() == (None, None)


def test_first_come_first_served_at_the_refill_rate() -> None:
    clock = Clock()
    bucket = learned(clock, limit=6000, remaining=300, reset="1m0s")  # 100 tokens/s, 300 left
    first = bucket.reserve(300)
    assert first.delay == 0
    assert bucket.reserve(200).delay == pytest.approx(2.0)
    assert bucket.reserve(100).delay == pytest.approx(3.0)  # behind the one before it
    bucket.settle(first, None, 300)
    clock.now += 3.0
    assert bucket.reserve(100).delay == pytest.approx(1.0)


def test_refill_the_server_could_not_bank_pushes_the_queue_back() -> None:
    clock = Clock()
    bucket = learned(clock, limit=6000, remaining=300, reset="0s")  # a full bucket of 300
    head = bucket.reserve(300)  # sent, not answered: the server may still be full
    queued = bucket.reserve(100)
    assert (head.delay, queued.delay) == (0, pytest.approx(1.0))
    clock.now += 1.0  # no answer yet: nothing could refill
    assert bucket.extra_wait(queued) == pytest.approx(1.0)
    bucket.settle(head, None, 300)
    clock.now += 1.0
    assert bucket.extra_wait(queued) == 0
    clock.now += 5.0
    assert bucket.extra_wait(queued) == 0  # never more than the refill it waited for


def test_bucket_size_follows_the_reset_header() -> None:
    clock = Clock()
    # 100 tokens/s; 200 left and full again in 3 s: the server holds 500, not a minute's 6000
    bucket = learned(clock, limit=6000, remaining=200, reset="3s")
    clock.now += 3600
    assert bucket.levels()[0] == pytest.approx(500)
    openai_style = learned(Clock(), limit=6000, remaining=5984, reset="6m0s")
    assert openai_style.levels()[0] == pytest.approx(5984)


def test_a_request_bigger_than_the_bucket_goes_once_it_is_full() -> None:
    clock = Clock()
    bucket = learned(clock, limit=6000, remaining=500, reset="0s")  # full at 500
    assert bucket.reserve(2000).delay == 0  # full: let through, as the server does
    assert bucket.reserve(100).delay == pytest.approx(16.0)  # 1500 of debt + 100 at 100/s


def test_the_server_corrects_the_level_down_once() -> None:
    clock = Clock()
    bucket = learned(clock, limit=6000, remaining=1000, reset="50s")
    first, second = bucket.reserve(100), bucket.reserve(100)  # both in flight: expected 900, 800
    info = parse_rate_limit_headers(headers(6000, 600, "54s"))  # someone else spent 300
    bucket.settle(first, info, 100)
    assert bucket.levels()[0] == pytest.approx(500)
    # the second answer says the same thing again (400 = 500 - 100): not counted twice
    bucket.settle(second, parse_rate_limit_headers(headers(6000, 400, "56s")), 100)
    assert bucket.levels()[0] == pytest.approx(500)


def test_latency_of_an_answer_is_not_taken_for_consumption() -> None:
    clock = Clock()
    bucket = learned(clock, limit=6000, remaining=1000, reset="50s")
    reservation = bucket.reserve(400)  # the server will say 600 left as it admits it
    clock.now += 2.0  # the answer takes 2 s; the local bucket refilled 200 meanwhile
    bucket.settle(reservation, parse_rate_limit_headers(headers(6000, 600, "54s")), 400)
    assert bucket.levels()[0] == pytest.approx(800)


def test_an_over_estimate_is_refunded() -> None:
    clock = Clock()
    bucket = learned(clock, limit=6000, remaining=1000, reset="50s")
    reservation = bucket.reserve(500)
    bucket.settle(reservation, None, actual_tokens=200)
    assert bucket.levels()[0] == pytest.approx(800)


def test_a_429_blocks_everyone_for_retry_after_and_trusts_the_server() -> None:
    clock = Clock()
    bucket = learned(clock, limit=6000, remaining=1000, reset="50s")
    reservation = bucket.reserve(400)
    bucket.rejected(reservation, parse_rate_limit_headers(headers(6000, 50, "59s")), 2.5)
    assert bucket.blocked_for() == pytest.approx(2.5)
    assert bucket.levels()[0] == pytest.approx(50)
    assert bucket.rate_limited == 1
    clock.now += 2.5
    assert bucket.blocked_for() == 0


def test_acquire_waits_its_turn_and_gives_back_when_cancelled() -> None:
    clock = Clock()
    bucket = learned(clock, limit=6000, remaining=100, reset="59s")
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.now += seconds

    async def scenario() -> None:
        reservation, waited = await acquire(bucket, 300, sleep=fake_sleep)
        assert waited == pytest.approx(2.0) and reservation.tokens == 300

        async def never(seconds: float) -> None:
            raise asyncio.CancelledError

        before = bucket.levels()[0]
        with pytest.raises(asyncio.CancelledError):
            await acquire(bucket, 1000, sleep=never)
        assert bucket.levels()[0] == pytest.approx(before)

    asyncio.run(scenario())
    assert slept == [pytest.approx(2.0)]


def test_acquire_waits_out_a_retry_after_first() -> None:
    clock = Clock()
    bucket = learned(clock)
    bucket.rejected(None, None, 4.0)
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.now += seconds

    asyncio.run(acquire(bucket, 1, sleep=fake_sleep))
    assert slept == [pytest.approx(4.0)]


def test_one_bucket_per_provider_endpoint_key_and_model() -> None:
    reset_buckets()
    a = bucket_for("openai", None, "sk-one", "text-embedding-3-small")
    assert bucket_for("openai", None, "sk-one", "text-embedding-3-small") is a
    assert bucket_for("openai", None, "sk-two", "text-embedding-3-small") is not a
    assert bucket_for("openai", None, "sk-one", "text-embedding-3-large") is not a
    assert bucket_for("openai", "http://other/v1", "sk-one", "text-embedding-3-small") is not a
    assert "sk-one" not in key_fingerprint("sk-one") and key_fingerprint(None) == "-"
    reset_buckets()


# -- against the server's limiter, on simulated time ----------------------------------------------

def test_format_duration_is_openais() -> None:
    assert [format_duration(s) for s in (0.02, 1.0, 1.5, 360.0, 3600.0)] == [
        "20ms", "1s", "1.5s", "6m0s", "1h0m0s"]


def simulate(workers: int, cost: int, latency: float, requests: int, tpm: int, rpm: int,
             burst_s: float) -> tuple[int, float]:
    """``workers`` senders sharing one client bucket against the server limiter.

    Returns (429s, tokens admitted per minute over the run as a fraction of ``tpm``).
    """
    clock = Clock()
    server = RateLimiter(rpm, tpm, burst_s, clock=clock)
    bucket = PacingBucket(clock)
    events: list[tuple[float, int, int, str]] = []  # (time, seq, worker, what)
    seq = 0
    for worker in range(workers):
        heapq.heappush(events, (clock.now, seq, worker, "reserve"))
        seq += 1
    pending: dict[int, object] = {}
    started, sent, rejected, admitted, last = clock.now, 0, 0, 0, clock.now
    while events:
        at, _, worker, what = heapq.heappop(events)
        clock.now = at
        if what == "reserve":
            if sent >= requests:
                continue
            sent += 1
            reservation = bucket.reserve(cost)
            pending[worker] = reservation
            wait = max(reservation.delay, bucket.blocked_for())
            heapq.heappush(events, (at + wait, seq, worker, "send"))
        else:
            decision = server.admit("c", cost)
            info = parse_rate_limit_headers(decision.headers)
            reservation = pending.pop(worker)
            clock.now = at + latency if decision.admitted else at
            if decision.admitted:
                admitted += cost
                last = clock.now
                bucket.settle(reservation, info, cost)  # type: ignore[arg-type]
            else:
                rejected += 1
                sent -= 1
                bucket.rejected(reservation, info, decision.retry_after)  # type: ignore[arg-type]
            heapq.heappush(events, (clock.now, seq, worker, "reserve"))
        seq += 1
    return rejected, admitted / ((last - started) / 60) / tpm


@pytest.mark.parametrize(("workers", "cost", "latency"), [(1, 40_000, 0.6), (8, 8_000, 0.3),
                                                          (32, 2_000, 0.2)])
def test_paced_senders_get_no_429_and_use_the_limit(workers: int, cost: int, latency: float) -> None:
    rejected, fraction = simulate(workers, cost, latency, requests=400, tpm=1_000_000, rpm=3000,
                                  burst_s=6)
    assert rejected == 0
    assert fraction >= 0.95


def test_a_first_wave_over_the_limit_costs_one_round_of_429s_only() -> None:
    # 16 requests of 20k tokens go out before any header is known; the bucket holds 100k
    rejected, fraction = simulate(16, 20_000, 0.3, requests=400, tpm=1_000_000, rpm=3000,
                                  burst_s=6)
    assert 0 < rejected <= 16
    assert fraction >= 0.95

"""Backoff, Retry-After and bounds of :func:`pgai_orm.embedders.retry.retry_async`, on a virtual clock."""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils

import pytest

from pgai_orm.embedders.errors import PermanentEmbeddingError, TransientEmbeddingError
from pgai_orm.embedders.http import error_for_status, retry_after_seconds
from pgai_orm.embedders.retry import RetryPolicy, retry_async


class VirtualTime:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _failing(errors: list[Exception], result: str = "ok") -> tuple[list[int], object]:
    calls = [0]

    async def operation() -> str:
        calls[0] += 1
        if errors:
            raise errors.pop(0)
        return result

    return calls, operation


def _run(operation: object, policy: RetryPolicy, vt: VirtualTime, rand: float = 1.0) -> object:
    return asyncio.run(
        retry_async(operation, policy, sleep=vt.sleep, clock=vt.clock, rand=lambda: rand)  # type: ignore[arg-type]
    )


def test_exponential_backoff_capped() -> None:
    vt = VirtualTime()
    calls, op = _failing([TransientEmbeddingError("x") for _ in range(5)])
    policy = RetryPolicy(max_attempts=6, base_delay=1, max_delay=5, max_total=1000)
    assert _run(op, policy, vt) == "ok"
    assert vt.sleeps == [1, 2, 4, 5, 5]
    assert calls[0] == 6


def test_full_jitter_scales_the_cap() -> None:
    vt = VirtualTime()
    _, op = _failing([TransientEmbeddingError("x"), TransientEmbeddingError("x")])
    _run(op, RetryPolicy(base_delay=1, max_delay=10), vt, rand=0.25)
    assert vt.sleeps == [0.25, 0.5]


def test_retry_after_is_a_floor() -> None:
    vt = VirtualTime()
    _, op = _failing([TransientEmbeddingError("429", status=429, retry_after=7.0)])
    _run(op, RetryPolicy(base_delay=0.1), vt)
    assert vt.sleeps == [7.0]


def test_attempts_are_bounded() -> None:
    vt = VirtualTime()
    calls, op = _failing([TransientEmbeddingError(str(i)) for i in range(10)])
    with pytest.raises(TransientEmbeddingError, match="2"):
        _run(op, RetryPolicy(max_attempts=3, base_delay=0.01), vt)
    assert calls[0] == 3


def test_total_time_is_bounded() -> None:
    vt = VirtualTime()
    calls, op = _failing([TransientEmbeddingError("x", retry_after=40) for _ in range(10)])
    with pytest.raises(TransientEmbeddingError):
        _run(op, RetryPolicy(max_attempts=10, max_total=100), vt)
    assert vt.sleeps == [40, 40]  # a third wait would end past 100 s
    assert calls[0] == 3


def test_permanent_and_foreign_errors_are_not_retried() -> None:
    vt = VirtualTime()
    calls, op = _failing([PermanentEmbeddingError("400")])
    with pytest.raises(PermanentEmbeddingError):
        _run(op, RetryPolicy(), vt)
    calls2, op2 = _failing([KeyError("bug")])
    with pytest.raises(KeyError):
        _run(op2, RetryPolicy(), vt)
    assert calls[0] == calls2[0] == 1 and vt.sleeps == []


def test_retry_after_header_forms() -> None:
    assert retry_after_seconds({"Retry-After": "3"}) == 3.0
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    future = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)
    assert 25 < retry_after_seconds({"Retry-After": email.utils.format_datetime(future)}) <= 30  # type: ignore[operator]
    assert retry_after_seconds({"Retry-After": "soon"}) is None
    assert retry_after_seconds({}) is None


@pytest.mark.parametrize(
    "status,transient",
    [
        (408, True),
        (409, True),
        (429, True),
        (500, True),
        (503, True),
        (400, False),
        (401, False),
        (404, False),
        (422, False),
    ],
)
def test_status_classification(status: int, transient: bool) -> None:
    error = error_for_status(status, "m", {"Retry-After": "2"})
    assert isinstance(error, TransientEmbeddingError) is transient
    assert isinstance(error, PermanentEmbeddingError) is not transient
    if transient:
        assert error.retry_after == 2.0

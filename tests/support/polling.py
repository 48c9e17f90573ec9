"""Waiting for a condition in tests: poll with a deadline, never sleep a fixed time and hope.

The loop is :func:`pgai_orm.runtime.waiting.wait_for`; a test that waited in vain fails with an
``AssertionError`` naming what it waited for and the last value seen.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from pgai_orm.runtime import waiting

T = TypeVar("T")


def wait_for(condition: Callable[[], T], what: str, timeout: float = 60.0,
             interval: float = 0.05) -> T:
    """Return the first truthy value of ``condition()``; fail the test naming ``what`` at the deadline."""
    try:
        return waiting.wait_for(condition, timeout, what, interval)
    except waiting.WaitTimeoutError as exc:
        raise AssertionError(str(exc)) from None

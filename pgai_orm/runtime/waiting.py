"""Waiting for a condition with a deadline: poll it, never sleep a fixed time and hope.

One loop serves every waiter of the project (the dev stack waiting for a port to answer, the
demo for the store to follow a commit, ``vectorizer replay --wait`` for the switch, the stop of
a process, the tests' ``tests.support.polling.wait_for``). The condition is checked at once, then every
``interval`` seconds, and a last time when the deadline is reached, so a condition that holds
in time is never reported late.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from pgai_orm.errors import VectorizerError

__all__ = ["WaitTimeoutError", "wait_for", "wait_until"]

T = TypeVar("T")


class WaitTimeoutError(VectorizerError, TimeoutError):
    """A condition did not hold before its deadline; the message names it and its last value."""

    def __init__(self, what: str, timeout: float, last: object) -> None:
        super().__init__(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
        self.what = what
        self.timeout = timeout
        self.last = last


def wait_until(condition: Callable[[], object], timeout: float, interval: float = 0.05,
               abort: Callable[[], bool] | None = None) -> bool:
    """Poll ``condition`` until it returns something truthy or ``timeout`` seconds pass.

    ``abort`` is checked before every check, so a crashed child process ends the wait at once
    instead of burning the whole timeout. Returns whether the condition held.
    """
    deadline = time.monotonic() + timeout
    while True:
        if abort is not None and abort():
            return False
        if condition():
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(interval, remaining))


def wait_for(condition: Callable[[], T], timeout: float, what: str = "a condition",
             interval: float = 0.05) -> T:
    """Return the first truthy value of ``condition()``, polled as :func:`wait_until` does.

    At the deadline raise :class:`WaitTimeoutError` naming ``what`` and the last value seen.
    """
    seen: list[T] = []

    def holds() -> bool:
        seen[:] = [condition()]
        return bool(seen[0])

    if not wait_until(holds, timeout, interval):
        raise WaitTimeoutError(what, timeout, seen[0] if seen else None)
    return seen[0]

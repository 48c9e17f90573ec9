"""Interpreter settings for a worker process: the GIL switch interval.

A worker runs a CPU-bound embedding model in a thread beside the asyncio event loop (faust,
psycopg, parsing). A local model such as wordllama releases the GIL many times per batch, each
time for a short numpy or tokenizer call. When the call returns, the model thread must take the
GIL back from the loop thread, and a thread that is busy running Python only yields it when the
interpreter's switch interval runs out (5 ms by default). The model thus waits up to one interval
per release, and a batch with hundreds of releases loses most of its time queueing for the GIL
(a convoy). A short interval bounds each wait; the price is more frequent switches of the loop
thread, which are cheap next to a model call. ``bench/README.md`` has the measurements.
"""

from __future__ import annotations

import math
import os
import sys

SWITCH_INTERVAL_ENV = "VECTORIZER_GIL_SWITCH_INTERVAL_MS"
DEFAULT_SWITCH_INTERVAL_MS = 1.0


def set_worker_switch_interval() -> float:
    """Set ``sys.setswitchinterval`` for a worker process and return the interval in seconds.

    The interval is ``DEFAULT_SWITCH_INTERVAL_MS`` (1 ms) unless ``VECTORIZER_GIL_SWITCH_INTERVAL_MS``
    gives another number of milliseconds (a positive, finite number; an empty value counts as
    unset). Call it once, early in the process, before the model thread starts.

    Raises ``ValueError`` naming the variable when its value is not such a number.
    """
    raw = os.environ.get(SWITCH_INTERVAL_ENV, "").strip()
    milliseconds = DEFAULT_SWITCH_INTERVAL_MS
    if raw:
        try:
            milliseconds = float(raw)
        except ValueError:
            raise ValueError(f"{SWITCH_INTERVAL_ENV}={raw!r} is not a number of milliseconds"
                             f" (for example 1 or 0.5)") from None
        if not math.isfinite(milliseconds) or milliseconds <= 0:
            raise ValueError(f"{SWITCH_INTERVAL_ENV}={raw!r}: the GIL switch interval must be a positive,"
                             f" finite number of milliseconds (for example 1 or 0.5)")
    sys.setswitchinterval(milliseconds / 1000)
    return sys.getswitchinterval()

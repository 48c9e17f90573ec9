"""Batches of a faust stream that are cut when the stream goes quiet, not on a fixed timer.

faust's ``Stream.noack_take(max_, within)`` waits ``within`` seconds from the start of each wait
(whether an event came or not), so at a low event rate every event sat up to ``within`` in the
buffer (half of it on average) before its batch was processed: that was most of the
commit-to-searchable time at 20 rows/s. This variant waits without a timer for the first event
(an idle stream costs nothing), then cuts the batch as soon as no event arrived for
:data:`QUIET_S`, when it holds ``max_`` events, or ``within`` seconds after its first event,
whichever comes first. A fetch response from Kafka lands in the stream within a millisecond or
two, so under load batches still fill up to ``max_``; a lone change goes out at once.

Like ``noack_take`` it acks nothing: the caller acks each event after its batch is committed.
It uses faust's own processor hook and passive drain (as ``noack_take`` does); the buffer is
handed over only when the caller asks for the next batch, so a batch never exceeds ``max_``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

#: Seconds without a new event after which a partial batch is cut.
QUIET_S = 0.005


async def quiet_batches(stream: Any, max_: int, within: float) -> AsyncIterator[list[Any]]:
    """Yield lists of at most ``max_`` events of ``stream`` (faust ``EventT``), unacked."""
    buffer: list[Any] = []
    arrived = asyncio.Event()  # set by every event added
    room = asyncio.Event()  # set while the buffer may take more events
    room.set()

    async def add_to_buffer(value: Any) -> Any:
        await room.wait()
        event = stream.current_event
        if event is None:  # faust sets it before running processors
            raise RuntimeError("stream processor ran without a current event")
        buffer.append(event)
        arrived.set()
        if len(buffer) >= max_:
            room.clear()  # strict: never more than max_ per batch
        return value

    enable_acks = stream.enable_acks
    stream.enable_acks = False  # the caller acks after the store commit
    stream.add_processor(add_to_buffer)
    stream._enable_passive(stream.channel)  # faust's drain, as noack_take starts it
    try:
        while not stream.should_stop:
            await stream.wait_for_stopped(arrived)  # the first event: no timer while idle
            deadline = time.monotonic() + within
            while len(buffer) < max_:
                arrived.clear()
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                await stream.wait_for_stopped(arrived, timeout=min(QUIET_S, left))
                if not arrived.is_set():  # quiet for QUIET_S: cut the batch
                    break
            if stream.should_stop:
                break
            room.clear()
            batch = list(buffer)
            buffer.clear()
            arrived.clear()
            try:
                yield batch
            finally:
                room.set()
    finally:
        stream.enable_acks = enable_acks
        stream._processors.remove(add_to_buffer)

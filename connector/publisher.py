"""Kafka producer with ack tracking: which LSN is safe to confirm to Postgres.

At-least-once means: confirm a transaction's end LSN to the slot only after Kafka acknowledged
every event of it *and of every earlier transaction*. Acks arrive out of order (partitions are
independent), so each transaction gets a counter of unacknowledged events; the producer's loop
thread decrements it when Kafka answers a batch, and :meth:`CommitTracker.safe_lsn` (the
publisher's ``tracker``) pops fully acknowledged transactions off the front of the queue, in
commit order. An open (uncommitted) transaction at the front stops the walk.

Bounded memory: nothing else bounds the records waiting for Kafka in bytes, so
:meth:`Publisher.send_tracked` and :meth:`Publisher.send_grouped` block while more than
``max_in_flight_bytes`` (or ``max_in_flight_events``) are unacknowledged. A transaction of
millions of rows therefore streams through with bounded memory: the replication reader simply
stops reading (TCP pushes back on the walsender) until Kafka catches up.

A failed send (after aiokafka's own retries) is kept and re-raised by :meth:`Publisher.check`
in the main loop; the connector then restarts from the slot's confirmed LSN, which resends
everything not confirmed. Producer settings: ``acks=all``. aiokafka retries a failed batch
before later batches of the same partition are sent (one request in flight per partition), so
per-key order holds across retries without idempotence (which the embedded broker refuses to
aiokafka).

A truncate goes to every partition of its topic (:meth:`Publisher.send_truncate`, the one
fan-out for the stream and the snapshot; see :mod:`pgai_orm.events`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from connector.topics import MAX_MESSAGE_BYTES
from pgai_orm.errors import VectorizerError
from pgai_orm.events import Truncate

__all__ = ["AckGroup", "CommitTracker", "PublishError", "Publisher"]


class PublishError(VectorizerError, RuntimeError):
    """Kafka did not accept an event; nothing after it may be confirmed."""


class _Txn:
    __slots__ = ("end_lsn", "pending")

    def __init__(self) -> None:
        self.pending = 0
        self.end_lsn: int | None = None  # set at Commit


class CommitTracker:
    """Outstanding events per transaction, in commit order. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._txns: deque[_Txn] = deque()
        self._open: _Txn | None = None
        self._safe = 0

    def open(self) -> _Txn:
        with self._lock:
            if self._open is None:
                self._open = _Txn()
                self._txns.append(self._open)
            return self._open

    def add(self, txn: _Txn) -> None:
        with self._lock:
            txn.pending += 1

    def acked(self, txn: _Txn, count: int = 1) -> None:
        with self._lock:
            txn.pending -= count

    def close(self, end_lsn: int) -> None:
        """The current transaction committed at ``end_lsn`` (opened implicitly if empty)."""
        with self._lock:
            txn = self._open
            if txn is None:
                txn = _Txn()
                self._txns.append(txn)
            txn.end_lsn = end_lsn
            self._open = None

    def discard_open(self) -> None:
        """Forget an open transaction (the stream restarts; it will be sent again in full)."""
        with self._lock:
            if self._open is not None:
                self._txns.remove(self._open)
                self._open = None

    def safe_lsn(self) -> int:
        """The highest end LSN whose transaction and all earlier ones are fully acknowledged."""
        with self._lock:
            txns = self._txns
            while txns and txns[0].end_lsn is not None and txns[0].pending == 0:
                self._safe = max(self._safe, txns.popleft().end_lsn or 0)
            return self._safe

    def idle(self) -> bool:
        """No open transaction and nothing unacknowledged."""
        self.safe_lsn()
        with self._lock:
            return self._open is None and not self._txns

    def reset(self) -> None:
        with self._lock:
            self._txns.clear()
            self._open = None


class AckGroup:
    """Records sent outside the stream (a snapshot chunk): :meth:`Publisher.wait` returns
    once Kafka acknowledged all of them. One counter per chunk, not one future per record: the
    producer's loop thread is the bottleneck, and creating and resolving a future per record is
    what it would spend its time on."""

    __slots__ = ("pending",)

    def __init__(self) -> None:
        self.pending = 0


class _Ack:
    """What the sender does when Kafka answers one record."""

    __slots__ = ("group", "size", "txn")

    def __init__(self, size: int, txn: _Txn | None, group: AckGroup | None) -> None:
        self.size = size
        self.txn = txn
        self.group = group


class Publisher:
    """One aiokafka producer, driven from an event loop in a thread of its own, shared by the
    stream (acks tracked per commit) and snapshots (acks counted per chunk).

    Why aiokafka behind a thread: the replication reader is blocking code, and aiokafka produced
    about twice kafka-python's rate against the embedded broker (``bench/connector.py``).
    Records are handed to the loop in batches (:meth:`drain`, called after each replication
    batch and snapshot chunk, and before blocking on the in-flight bound), and one sender task
    sends them in order, so per-partition order is the commit order.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        max_in_flight_bytes: int = 32 * 1024 * 1024,
        max_in_flight_events: int = 50_000,
        linger_ms: int = 0,
        max_batch_size: int = 256 * 1024,
        request_timeout_ms: int = 10_000,
    ) -> None:
        self.tracker = CommitTracker()
        self._max_bytes = max_in_flight_bytes
        self._max_events = max_in_flight_events
        self._cond = threading.Condition()
        self._in_flight_bytes = 0
        self._in_flight_events = 0
        self._error: BaseException | None = None
        self._partitions: dict[str, list[int]] = {}  # filled by the loop thread only
        self._partitioner = DefaultPartitioner()  # murmur2 of the key, as Kafka's Java client
        self._pending: list[tuple[str, bytes, bytes | None, int | None, _Ack]] = []
        self._pending_lock = threading.Lock()
        self.sent = 0  # events acknowledged, for metrics
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kafka", daemon=True)
        self._thread.start()
        self._queue: asyncio.Queue[list[tuple[str, bytes, bytes | None, int | None, _Ack]]]
        self._producer: AIOKafkaProducer
        try:
            self._call(self._start(bootstrap_servers, linger_ms, max_batch_size, request_timeout_ms), 30)
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            raise

    # --- the loop thread --------------------------------------------------------------------

    def _call(self, coro: Any, timeout: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _start(self, servers: str, linger_ms: int, max_batch_size: int, timeout_ms: int) -> None:
        self._queue = asyncio.Queue()
        self._producer = AIOKafkaProducer(
            bootstrap_servers=servers, acks="all", linger_ms=linger_ms,
            max_batch_size=max_batch_size, max_request_size=MAX_MESSAGE_BYTES,
            request_timeout_ms=timeout_ms, client_id="vectorizer-connector",
        )
        await self._producer.start()
        self._sender = asyncio.ensure_future(self._send_loop())

    async def _send_loop(self) -> None:
        """Pack the records handed over so far into one batch per partition (in order) and
        submit the batches: one future and one ack callback per batch, not per record, which
        is what the loop thread spends most of its time on otherwise. While a partition's
        previous batch is still in flight, the records that arrive meanwhile are packed
        together in the next round (as the producer's own accumulator does for ``send()``)."""
        while True:
            records = await self._queue.get()
            while not self._queue.empty():  # behind: everything handed over meanwhile, at once
                records.extend(self._queue.get_nowait())
            if self._error is not None:
                self._done_all([record[4] for record in records], self._error)
                continue
            try:  # an error here must fail these records, not end the sender task
                parts_of = {topic: await self._topic_partitions(topic)
                            for topic in {record[0] for record in records if record[3] is None}}
            except Exception as exc:  # noqa: BLE001 (reported through check())
                self._done_all([record[4] for record in records], exc)
                continue
            batches: dict[tuple[str, int], tuple[Any, list[_Ack]]] = {}
            for topic, key, value, partition, ack in records:
                if partition is None:
                    partition = self._partitioner(key, parts_of[topic], parts_of[topic])
                tp = (topic, partition)
                entry = batches.get(tp)
                if entry is None:
                    entry = batches[tp] = (self._producer.create_batch(), [])
                if entry[0].append(key=key, value=value, timestamp=None) is None:  # full
                    await self._submit(tp, *entry)
                    entry = batches[tp] = (self._producer.create_batch(), [])
                    entry[0].append(key=key, value=value, timestamp=None)  # a first one fits
                entry[1].append(ack)
            for tp, (builder, acks) in batches.items():
                await self._submit(tp, builder, acks)

    async def _topic_partitions(self, topic: str) -> list[int]:
        """All partitions of ``topic`` (sorted, as the producer's own partitioner sees them)."""
        parts = self._partitions.get(topic)
        if parts is None:
            found = await self._producer.partitions_for(topic)
            if not found:
                raise PublishError(f"topic {topic!r} has no partitions")
            parts = self._partitions[topic] = sorted(found)
        return parts

    async def _submit(self, tp: tuple[str, int], builder: Any, acks: list[_Ack]) -> None:
        """Queue one batch; aiokafka sends a partition's batches one at a time, in order."""
        try:
            future = await self._producer.send_batch(builder, tp[0], partition=tp[1])
        except Exception as exc:  # noqa: BLE001 (reported through check())
            self._done_all(acks, exc)
            return
        future.add_done_callback(lambda f: self._done_all(
            acks, asyncio.CancelledError() if f.cancelled() else f.exception()))

    def _done_all(self, acks: list[_Ack], exc: BaseException | None) -> None:
        """Kafka answered a batch: release its records' flow-control share and count the acks."""
        with self._cond:
            self._in_flight_events -= len(acks)
            self._in_flight_bytes -= sum(ack.size for ack in acks)
            if exc is None:
                self.sent += len(acks)
                per_txn: dict[_Txn, int] = {}
                for ack in acks:
                    if ack.txn is not None:
                        per_txn[ack.txn] = per_txn.get(ack.txn, 0) + 1
                    if ack.group is not None:
                        ack.group.pending -= 1
                for txn, count in per_txn.items():
                    self.tracker.acked(txn, count)
            else:
                self._error = self._error or exc
            self._cond.notify_all()

    # --- flow control -------------------------------------------------------------------------

    def _reserve(self, size: int) -> None:
        with self._cond:
            if not (self._in_flight_events >= self._max_events
                    or (self._in_flight_bytes + size > self._max_bytes and self._in_flight_events > 0)):
                self._in_flight_events += 1
                self._in_flight_bytes += size
                return
        self.drain()  # what waits in our hands must go before we wait for acks
        with self._cond:
            while (
                self._in_flight_events >= self._max_events
                or (self._in_flight_bytes + size > self._max_bytes and self._in_flight_events > 0)
            ) and self._error is None:
                self._cond.wait(1.0)
            self._in_flight_events += 1
            self._in_flight_bytes += size

    @property
    def in_flight_events(self) -> int:
        return self._in_flight_events

    # --- sending ----------------------------------------------------------------------------

    def partitions_for(self, topic: str) -> list[int]:
        return self._partitions.get(topic) or self._call(self._topic_partitions(topic), 30)

    def send_truncate(self, topic: str, truncate: Truncate, group: AckGroup | None = None) -> int:
        """Send ``truncate`` once to every partition of ``topic``: as an event of the stream's
        current transaction, or, with ``group``, of a snapshot. Returns the records sent."""
        records = truncate.records(self.partitions_for(topic))
        for partition, key, value in records:
            if group is None:
                self.send_tracked(topic, key, value, partition)
            else:
                self.send_grouped(topic, key, value, group, partition)
        return len(records)

    def forget_topics(self) -> None:
        self._partitions.clear()

    def _enqueue(self, topic: str, key: bytes, value: bytes | None, partition: int | None,
                 txn: _Txn | None, group: AckGroup | None) -> None:
        self.check()
        size = len(key) + (len(value) if value else 0) + 64
        self._reserve(size)
        if group is not None:
            with self._cond:
                group.pending += 1
        with self._pending_lock:
            self._pending.append((topic, key, value, partition, _Ack(size, txn, group)))

    def drain(self) -> None:
        """Hand the records collected so far to the sender task."""
        with self._pending_lock:
            batch, self._pending = self._pending, []
        if batch:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, batch)

    def send_tracked(self, topic: str, key: bytes, value: bytes | None, partition: int | None = None) -> None:
        """Send an event of the stream's current transaction (its ack gates the commit LSN)."""
        txn = self.tracker.open()
        self.tracker.add(txn)
        self._enqueue(topic, key, value, partition, txn, None)

    def send_grouped(self, topic: str, key: bytes, value: bytes | None, group: AckGroup,
                     partition: int | None = None) -> None:
        """Send a snapshot event; :meth:`wait` on ``group`` tells when Kafka has them all."""
        self._enqueue(topic, key, value, partition, None, group)

    def wait(self, group: AckGroup, timeout: float = 120.0) -> None:
        """Block until every record of ``group`` is acknowledged; raise if a send failed."""
        self.drain()
        deadline = time.monotonic() + timeout
        with self._cond:
            while group.pending > 0 and self._error is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise PublishError(f"{group.pending} events unacknowledged after {timeout}s")
                self._cond.wait(remaining)
        self.check()

    def commit(self, end_lsn: int) -> None:
        self.tracker.close(end_lsn)

    def check(self) -> None:
        """Raise :class:`PublishError` if any send failed (the session then restarts)."""
        if self._error is not None:
            raise PublishError(f"Kafka refused an event: {self._error!r}") from self._error

    def flush(self, timeout: float | None = 60.0) -> None:
        """Wait until Kafka answered every record handed over so far."""
        self.drain()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._in_flight_events > 0 and self._error is None:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise PublishError(f"{self._in_flight_events} events unacknowledged after {timeout}s")
                self._cond.wait(remaining if remaining is not None else 1.0)
        self.check()

    def close(self, timeout: float = 10.0) -> None:
        async def stop() -> None:
            self._sender.cancel()
            await self._producer.stop()

        try:
            self._call(stop(), timeout)
        except Exception:  # noqa: BLE001 (closing after a broker loss must not mask the cause)
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._loop.close()

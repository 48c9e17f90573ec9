"""Where a consumer group stands on a topic: committed offsets against high-water marks.

Kept apart from :mod:`processors.app` so that ``vectorizer status`` can measure consumer lag
without importing faust: only aiokafka, imported when a function runs.
"""

from __future__ import annotations

import asyncio

__all__ = ["committed_offsets", "fetch_high_watermarks"]


async def fetch_high_watermarks(bootstrap_servers: str, topic: str,
                                timeout: float = 10.0) -> dict[int, int] | None:
    """Per-partition high-water marks from fetch responses; ``None`` if the topic is unknown."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=None,
                                enable_auto_commit=False, max_partition_fetch_bytes=1024)
    try:  # start() inside: a broker that cannot be reached must still close the consumer
        await consumer.start()
        if topic not in await consumer.topics():
            return None
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            return None
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            await consumer.getmany(*tps, timeout_ms=200, max_records=1)
            marks = {tp.partition: consumer.highwater(tp) for tp in tps}
            if all(m is not None for m in marks.values()):
                return {p: int(m) for p, m in marks.items() if m is not None}
            if asyncio.get_running_loop().time() > deadline:
                return None
    finally:
        await consumer.stop()


async def committed_offsets(bootstrap_servers: str, group: str, topic: str) -> dict[int, int]:
    """The consumer group's committed offsets on ``topic`` by partition.

    A consumer that names the group but never subscribes only reads its offsets (OffsetFetch)
    and does not join it, so asking causes no rebalance. (aiokafka's admin client fails to
    decode the embedded broker's OffsetFetch answer; the consumer's request version works.)
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=group,
                                enable_auto_commit=False)
    try:  # start() inside: a broker that cannot be reached must still close the consumer
        await consumer.start()
        await consumer.topics()
        offsets: dict[int, int] = {}
        for partition in sorted(consumer.partitions_for_topic(topic) or ()):
            committed = await consumer.committed(TopicPartition(topic, partition))
            if committed is not None and committed >= 0:
                offsets[partition] = committed
        return offsets
    finally:
        await consumer.stop()

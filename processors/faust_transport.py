"""The faust pieces this project replaces: the aiokafka transport (a configurable fetch wait) and
the table manager (no start-up sleep).

faust hard-codes ``fetch_max_wait_ms=1500`` for its worker consumer. Apache Kafka answers a fetch
as soon as one byte is there, so the wait only matters on idle partitions; the embedded Tansu
broker holds every fetch for the full wait, which put ~700 ms into the commit-to-searchable p50 at
200 rows/s. This transport is faust's own, registered under the URL scheme ``vectorizer-kafka``
through faust's ``faust.transports`` entry point (see pyproject.toml), and only changes that one
setting before the consumer starts.

faust's table manager sleeps one second when it starts, to let tables register before the
consumer subscribes. The apps here have no tables, so that second was pure start-up latency of
every app: :class:`TableManager` starts its recovery service at once.
"""

from __future__ import annotations

import os
from typing import Any

from faust.tables import TableManager as FaustTableManager
from faust.transport.drivers import aiokafka as faust_aiokafka

from processors.cli import FETCH_MAX_WAIT_ENV  # set there from --fetch-max-wait

SCHEME = "vectorizer-kafka"
DEFAULT_FETCH_MAX_WAIT_MS = 100


def fetch_max_wait_ms() -> int:
    """The fetch wait for worker consumers: ``$VECTORIZER_FETCH_MAX_WAIT_MS`` or 100 ms."""
    value = os.environ.get(FETCH_MAX_WAIT_ENV, "")
    if not value:
        return DEFAULT_FETCH_MAX_WAIT_MS
    try:
        wait = int(value)
    except ValueError:
        raise ValueError(
            f"{FETCH_MAX_WAIT_ENV} must be an integer of milliseconds, got {value!r}") from None
    if not 0 <= wait <= 60_000:
        raise ValueError(f"{FETCH_MAX_WAIT_ENV} must be between 0 and 60000, got {wait}")
    return wait


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """faust's consumer thread; the worker consumer gets our fetch wait."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads this when start() builds its Fetcher; the consumer is not started yet.
        consumer._fetch_max_wait_ms = fetch_max_wait_ms()
        return consumer


class Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    """Registered as ``vectorizer-kafka://``; everything but the consumer is faust's."""

    Consumer = Consumer
    driver_version = faust_aiokafka.Transport.driver_version


def broker_urls(bootstrap_servers: str) -> list[str]:
    """faust broker URLs for a ``host:port[,host:port]`` bootstrap list, on this transport."""
    return [f"{SCHEME}://{server.strip()}" for server in bootstrap_servers.split(",")
            if server.strip()]


class TableManager(FaustTableManager):
    """faust's table manager without its one-second start-up sleep (no app here has tables)."""

    async def on_start(self) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()

"""``vectorizer connector``: run the connector of one database until SIGTERM/SIGINT.

Registered on the ``vectorizer`` group by ``infra.cli`` (``connector.cli:connector_command``);
``python -m connector.cli`` runs the same command alone (the tests start it that way).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any

import click

from connector.service import Connector, ConnectorSettings
from pgai_orm.names import DEFAULT_TOPIC_PREFIX, SLOT_PREFIX
from pgai_orm.runtime.logs import setup_logging
from pgai_orm.runtime.options import (
    database_url_option,
    kafka_option,
    log_format_option,
    log_level_option,
    metrics_port_option,
    option,
)

__all__ = ["SnapshotProgress", "connector_command"]

logger = logging.getLogger("connector.progress")


class SnapshotProgress:
    """Shows the initial snapshot of each table, fed by the connector's progress reports.

    On a terminal (stderr is a TTY, text logs) one tqdm bar per table; otherwise a log line
    ``snapshot progress <table>: <done>/<total> rows`` when a table starts, at most every
    ``interval`` seconds while it runs, and when it is done (fields ``table``, ``rows``,
    ``rows_total`` in JSON logs). ``total`` is Postgres's estimate (``reltuples``), so it can be
    off, and is unknown (``?``) for a table that was never analyzed.
    """

    def __init__(self, bars: bool, interval: float = 10.0) -> None:
        self.bars = bars
        self.interval = interval
        self._lock = threading.Lock()
        self._tables: dict[str, Any] = {}  # table -> tqdm bar, or time of its last log line

    def __call__(self, table: str, done: int, total: int | None, finished: bool) -> None:
        estimate = total if total else None  # 0 is what an unanalyzed table reports
        with self._lock:
            if self.bars:
                self._bar(table, done, estimate, finished)
            else:
                self._log(table, done, estimate, finished)

    def _bar(self, table: str, done: int, total: int | None, finished: bool) -> None:
        from tqdm import tqdm

        bar = self._tables.get(table)
        if bar is None:
            bar = self._tables[table] = tqdm(total=total, desc=f"snapshot {table}", unit="row",
                                             file=sys.stderr, dynamic_ncols=True)
        if finished:
            bar.total = done  # the estimate was only an estimate
        elif total is not None:
            bar.total = max(total, done)
        bar.update(done - bar.n)
        if finished:
            bar.close()
            del self._tables[table]

    def _log(self, table: str, done: int, total: int | None, finished: bool) -> None:
        now = time.monotonic()
        last = self._tables.get(table)
        if finished:
            self._tables.pop(table, None)
        elif last is not None and now - last < self.interval:
            return
        else:
            self._tables[table] = now
        percent = f" ({100 * done / total:.0f}%)" if total and not finished else ""
        logger.info("snapshot progress %s: %d/%s rows%s%s", table, done,
                    done if finished else (total if total is not None else "?"), percent,
                    ", done" if finished else "",
                    extra={"table": table, "rows": done, "rows_total": done if finished else total,
                           "finished": finished})

    def close(self) -> None:
        with self._lock:
            for entry in self._tables.values():
                if not isinstance(entry, float):
                    entry.close()
            self._tables.clear()

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """While the connector runs: log lines go through tqdm so they do not break the bars."""
        try:
            if self.bars:
                from tqdm.contrib.logging import logging_redirect_tqdm

                with logging_redirect_tqdm():
                    yield
            else:
                yield
        finally:
            self.close()


@click.command(name="connector")
@database_url_option(help="PostgreSQL URL of the database whose vectorizers are streamed:"
                     " postgresql://... (SQLAlchemy's postgresql+psycopg://... works too).")
@kafka_option(hidden_aliases=("--bootstrap-servers",))
@option("--slot", envvar="VECTORIZER_SLOT", default=None,
        help=f"Replication slot name (must start with '{SLOT_PREFIX}'; default {SLOT_PREFIX}_<database>).")
@option("--topic-prefix", envvar="VECTORIZER_TOPIC_PREFIX", default=DEFAULT_TOPIC_PREFIX,
        show_default=True, help="First part of the topic names; the workers must use the same.")
@option("--partitions", envvar="VECTORIZER_PARTITIONS", type=click.IntRange(min=1), default=6,
        show_default=True, help="Partitions of each new topic: the most workers that share one"
        " vectorizer's topic (the one partition setting; existing topics keep theirs).")
@option("--replication-factor", envvar="VECTORIZER_REPLICATION_FACTOR", type=click.IntRange(min=1),
        default=1, show_default=True, help="Replication factor of each new topic (3 in production).")
@metrics_port_option("connector")
@option("--poll-interval", "--catalog-poll", "poll_interval", hidden_aliases=("--catalog-poll",),
        type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
        help="Seconds between catalog reads (new and dropped vectorizers).")
@option("--broker-check-interval", "--broker-check", "broker_check_interval",
        hidden_aliases=("--broker-check",), type=click.FloatRange(min=0, min_open=True),
        default=5.0, show_default=True,
        help="Seconds between checks that the broker still has the topics.")
@option("--snapshot-chunk", type=click.IntRange(min=1), default=5000, show_default=True,
        help="Rows per snapshot chunk (progress is recorded per chunk).")
@option("--max-retry-delay", envvar="VECTORIZER_MAX_RETRY_DELAY",
        type=click.FloatRange(min=1.0), default=30.0, show_default=True,
        help="Seconds: the cap of the exponential backoff (1, 2, 4, ... s) while the database or"
        " the broker cannot be reached.")
@log_level_option()
@log_format_option()
def connector_command(
    database_url: str, bootstrap_servers: str, slot: str | None, topic_prefix: str,
    partitions: int, replication_factor: int, metrics_port: int | None, poll_interval: float,
    broker_check_interval: float, snapshot_chunk: int, max_retry_delay: float, log_level: str,
    log_format: str,
) -> None:
    """Stream source-table changes of one database from a replication slot into Kafka."""
    if slot is not None and not slot.startswith(SLOT_PREFIX):
        raise click.BadParameter(f"must start with {SLOT_PREFIX!r} (drop_vectorizer cleans those up)",
                                 param_hint="--slot")
    setup_logging(log_format, log_level)
    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # their failures: one line of ours
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    connector = Connector(ConnectorSettings(
        database_url=database_url, bootstrap_servers=bootstrap_servers, slot=slot,
        topic_prefix=topic_prefix, partitions=partitions, replication_factor=replication_factor,
        metrics_port=metrics_port or None, catalog_poll_s=poll_interval,
        broker_check_s=broker_check_interval, snapshot_chunk_rows=snapshot_chunk,
        retry_max_s=max_retry_delay,
    ), stop=stop)
    if stop.is_set():  # stopped while waiting for the database
        return
    progress = SnapshotProgress(bars=log_format == "text" and sys.stderr.isatty())
    connector.metrics.on_snapshot(progress)
    with progress.active():
        connector.run()


if __name__ == "__main__":
    connector_command()

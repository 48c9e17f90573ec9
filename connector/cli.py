"""``vectorizer connector``: run the connector of one database until SIGTERM/SIGINT.

Registered on the ``vectorizer`` group by ``infra.cli`` (``connector.cli:connector_command``);
``python -m connector.cli`` runs the same command alone (the tests start it that way).
"""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType

import click

from connector.service import Connector, ConnectorSettings

__all__ = ["connector_command"]


@click.command(name="connector")
@click.option("--database-url", envvar="DATABASE_URL", required=True,
              help="postgresql:// URL of the database whose vectorizers are streamed ($DATABASE_URL).")
@click.option("--bootstrap-servers", envvar="KAFKA_BOOTSTRAP_SERVERS", required=True,
              help="Kafka bootstrap servers, host:port[,...] ($KAFKA_BOOTSTRAP_SERVERS).")
@click.option("--slot", envvar="VECTORIZER_SLOT", default=None,
              help="Replication slot name (must start with 'vectorizer'; default vectorizer_<database>).")
@click.option("--topic-prefix", envvar="VECTORIZER_TOPIC_PREFIX", default="vectorizer", show_default=True)
@click.option("--partitions", envvar="VECTORIZER_PARTITIONS", type=click.IntRange(min=1), default=6,
              show_default=True, help="Partitions of each new topic.")
@click.option("--replication-factor", envvar="VECTORIZER_REPLICATION_FACTOR", type=click.IntRange(min=1),
              default=1, show_default=True, help="Replication factor of each new topic (3 in production).")
@click.option("--metrics-port", envvar="VECTORIZER_CONNECTOR_METRICS_PORT", type=int, default=None,
              help="Serve Prometheus metrics on this port.")
@click.option("--catalog-poll", type=float, default=1.0, show_default=True,
              help="Seconds between catalog reads (new and dropped vectorizers).")
@click.option("--broker-check", type=float, default=5.0, show_default=True,
              help="Seconds between checks that the broker still has the topics.")
@click.option("--snapshot-chunk", type=click.IntRange(min=1), default=5000, show_default=True,
              help="Rows per snapshot chunk (progress is recorded per chunk).")
@click.option("--log-level", default="INFO", show_default=True)
def connector_command(
    database_url: str, bootstrap_servers: str, slot: str | None, topic_prefix: str,
    partitions: int, replication_factor: int, metrics_port: int | None, catalog_poll: float,
    broker_check: float, snapshot_chunk: int, log_level: str,
) -> None:
    """Stream source-table changes of one database from a replication slot into Kafka."""
    if slot is not None and not slot.startswith("vectorizer"):
        raise click.BadParameter("must start with 'vectorizer' (drop_vectorizer cleans those up)",
                                 param_hint="--slot")
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    connector = Connector(ConnectorSettings(
        database_url=database_url, bootstrap_servers=bootstrap_servers, slot=slot,
        topic_prefix=topic_prefix, partitions=partitions, replication_factor=replication_factor,
        metrics_port=metrics_port, catalog_poll_s=catalog_poll, broker_check_s=broker_check,
        snapshot_chunk_rows=snapshot_chunk,
    ))

    def _stop(signum: int, frame: FrameType | None) -> None:
        connector.stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    connector.run()


if __name__ == "__main__":
    connector_command()

"""The connector's runtime settings (from ``vectorizer connector``'s flags and environment)."""

from __future__ import annotations

from dataclasses import dataclass

from pgai_orm.names import DEFAULT_TOPIC_PREFIX

__all__ = ["ConnectorSettings"]


@dataclass(frozen=True, slots=True)
class ConnectorSettings:
    """Runtime settings. The defaults suit production; tests shorten the intervals."""

    database_url: str
    bootstrap_servers: str
    slot: str | None = None  # default: pgai_orm.names.default_slot_name(database)
    topic_prefix: str = DEFAULT_TOPIC_PREFIX
    partitions: int = 6
    replication_factor: int = 1
    metrics_port: int | None = None
    catalog_poll_s: float = 1.0
    broker_check_s: float = 5.0
    status_interval_s: float = 10.0
    batch_messages: int = 5000
    snapshot_chunk_rows: int = 5000
    lock_retry_s: float = 1.0
    retry_max_s: float = 30.0  # cap of the backoff while the database or the broker is away

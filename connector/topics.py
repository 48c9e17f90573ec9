"""Topic administration: one log-compacted topic per source table.

Topic names are made by :func:`pgai_orm.names.topic_name` (the workers must compute the same).

Why the connector creates topics itself instead of relying on broker auto-creation: an
auto-created topic gets the broker's default partition count and no ``cleanup.policy=compact``,
and a compacted topic is what lets a new config version rebuild its store by replaying from
offset 0. Creation asks for both; a broker that ignores the config (the embedded Tansu build
does not compact) still works, it only keeps more history.

Each topic's *topic id* (a UUID the broker assigns at creation) is remembered in the
connector's state. A memory-only broker that restarted, or an operator who deleted a topic,
shows up as a missing topic or a different id; the connector then re-snapshots that table.
The cluster id alone cannot tell: Tansu reports the same ``tansu_cluster`` after a restart.
"""

from __future__ import annotations

from collections.abc import Iterable

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from pgai_orm.errors import VectorizerError

__all__ = ["MAX_MESSAGE_BYTES", "TopicAdmin", "TopicCreationError", "TopicSettingsError"]

_UNKNOWN_TOPIC = 3  # UNKNOWN_TOPIC_OR_PARTITION
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""Largest event a topic accepts (and the producer sends): a row of up to ~16 MiB of JSON."""


class TopicSettingsError(VectorizerError, ValueError):
    """A partition count or replication factor Kafka cannot create a topic with."""


class TopicCreationError(VectorizerError, RuntimeError):
    """The broker accepted a topic's creation but does not report the topic."""


class TopicAdmin:
    """Creates and inspects the connector's topics through kafka-python's admin client."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        partitions: int = 6,
        replication_factor: int = 1,
        request_timeout_ms: int = 10_000,
    ) -> None:
        if partitions < 1:
            raise TopicSettingsError(f"partitions: must be >= 1, got {partitions}")
        if replication_factor < 1:
            raise TopicSettingsError(f"replication_factor: must be >= 1, got {replication_factor}")
        self.partitions = partitions
        self.replication_factor = replication_factor
        self._admin = KafkaAdminClient(
            bootstrap_servers=bootstrap_servers,
            client_id="vectorizer-connector-admin",
            request_timeout_ms=request_timeout_ms,
            # kafka-python waits 30 s for a first answer by default: a broker that is not there
            # should be said (and retried with backoff) within seconds, not half a minute
            bootstrap_timeout_ms=request_timeout_ms // 2,
        )

    def cluster_id(self) -> str | None:
        """The broker cluster's id as it reports it (None if it reports none)."""
        return self._admin.describe_cluster().get("cluster_id")

    def topic_ids(self, names: Iterable[str]) -> dict[str, str | None]:
        """Topic id per name; ``None`` for a topic that does not exist. Never creates topics."""
        names = list(names)
        if not names:
            return {}
        out: dict[str, str | None] = {}
        for desc in self._admin.describe_topics(names):
            exists = desc.get("error_code", 0) != _UNKNOWN_TOPIC and desc.get("partitions")
            out[desc["name"]] = str(desc["topic_id"]) if exists and desc.get("topic_id") else None
        for name in names:
            out.setdefault(name, None)
        return out

    def ensure(self, name: str) -> str:
        """Create ``name`` (compacted, configured partitions) unless it exists; return its id."""
        try:
            self._admin.create_topics(
                [
                    NewTopic(
                        name,
                        self.partitions,
                        self.replication_factor,
                        topic_configs={
                            "cleanup.policy": "compact",
                            # rows with large text: Kafka's default limit is ~1 MB per record
                            "max.message.bytes": str(MAX_MESSAGE_BYTES),
                        },
                    )
                ]
            )
        except TopicAlreadyExistsError:
            pass
        topic_id = self.topic_ids([name]).get(name)
        if topic_id is None:
            raise TopicCreationError(f"topic {name!r} does not exist right after creating it")
        return topic_id

    def delete(self, names: Iterable[str]) -> None:
        """Delete topics (missing ones are fine). Used after a broker loss: a producer that kept
        sending may have auto-created them with the broker's defaults (Tansu: 4 partitions,
        no compaction), and the connector's partitioning and compaction must hold again."""
        names = [n for n, topic_id in self.topic_ids(names).items() if topic_id is not None]
        if names:
            self._admin.delete_topics(names)

    def close(self) -> None:
        self._admin.close()

"""Every name the pipeline makes for things outside Python: topics, groups, slots, locks.

The connector, the workers and the operator commands must agree on these names byte for byte
(a worker that computes another topic name than the connector reads nothing), so they are made
here and nowhere else. Rules:

* **Topics**: ``<prefix>.<database>.<schema>.<table>``. Characters Kafka does not allow
  (anything outside ``[A-Za-z0-9._-]``) become ``_`` and the name then gets
  ``-<8 hex of sha1(original)>`` so ``a b`` and ``a_b`` never share a topic; names over
  Kafka's 249 characters are cut and get the same suffix. The database is part of the name
  because several databases may share one Kafka cluster.
* **Consumer groups**: one per config version, ``<prefix>-<database>-<id>-v<version>`` (made
  safe the same way): vectorizer ids restart in every database.
* **Dead-letter topic**: ``<topic>.dlq``.
* **Replication slots**: ``<SLOT_PREFIX>_<database>``, lower-cased, other characters as
  ``_``, at most 58 characters so the temporary snapshot slot ``<slot>_snap`` fits Postgres'
  63. ``drop_vectorizer`` drops inactive slots with :data:`SLOT_PREFIX` when the last
  vectorizer goes: the Alembic operation passes the prefix to the catalog function.
* **Managed tables**: ``metadata.info["pgai_managed_tables"]`` (:data:`MANAGED_TABLES_KEY`,
  pgai's key) lists every store table, so an ``include_object`` filter keeps autogenerate away.
* **Publications** are ``vectorizer_<id>``; the id is assigned inside the catalog function, so
  that function makes the name and records it in ``vectorizer.vectorizers.publication_name``,
  where every reader takes it from.
"""

from __future__ import annotations

import hashlib
import re

__all__ = [
    "DEFAULT_TOPIC_PREFIX",
    "MANAGED_TABLES_KEY",
    "SLOT_PREFIX",
    "connector_lock_key",
    "consumer_group",
    "default_slot_name",
    "dlq_topic",
    "snapshot_slot_name",
    "topic_name",
]

DEFAULT_TOPIC_PREFIX = "vectorizer"
SLOT_PREFIX = "vectorizer"
MANAGED_TABLES_KEY = "pgai_managed_tables"

_UNSAFE_FOR_KAFKA = re.compile(r"[^A-Za-z0-9._-]")
_UNSAFE_FOR_SLOT = re.compile(r"[^a-z0-9_]")
_KAFKA_NAME_MAX = 249
_SLOT_NAME_MAX = 58  # 63 (NAMEDATALEN - 1) minus the "_snap" suffix


def _kafka_safe(original: str) -> str:
    safe = _UNSAFE_FOR_KAFKA.sub("_", original)
    if safe == original and len(safe) <= _KAFKA_NAME_MAX:
        return safe
    suffix = "-" + hashlib.sha1(original.encode("utf-8")).hexdigest()[:8]
    return safe[: _KAFKA_NAME_MAX - len(suffix)] + suffix


def topic_name(prefix: str, database: str, schema: str, table: str) -> str:
    """The topic of one source table (see the module docstring for the rule)."""
    return _kafka_safe(f"{prefix}.{database}.{schema}.{table}")


def consumer_group(prefix: str, database: str, vectorizer_id: int, version: int) -> str:
    """The consumer group of one config version: ``<prefix>-<database>-<id>-v<version>``."""
    return topic_name(prefix, database, str(vectorizer_id), f"v{version}").replace(".", "-")


def dlq_topic(topic: str) -> str:
    """The dead-letter topic of a source topic."""
    return f"{topic}.dlq"


def default_slot_name(database: str) -> str:
    """The connector's slot for ``database`` unless ``--slot`` names another."""
    return _UNSAFE_FOR_SLOT.sub("_", f"{SLOT_PREFIX}_{database}".lower())[:_SLOT_NAME_MAX]


def snapshot_slot_name(slot: str) -> str:
    """The temporary slot that exports the snapshot of a table added while ``slot`` streams."""
    return f"{slot[:_SLOT_NAME_MAX]}_snap"


def connector_lock_key(slot: str) -> str:
    """The text whose ``hashtext`` is the advisory lock one active connector per slot holds."""
    return f"vectorizer-connector:{slot}"

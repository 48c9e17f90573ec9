"""How far each served config version is: measured from Kafka, recorded in the catalog.

The engine measures, every few seconds, each version's pending events (the topic's high-water
marks minus the committed offsets of the version's consumer group, summed over the partitions:
exact, whichever process or machine committed them) and records it with the last source LSN this
process applied in ``vectorizer.worker_progress``, which ``vectorizer.vectorizer_status`` shows.
Paused versions are measured too, without an app: their changes wait in the topic, and SQL users
must see how many. ``--once`` uses the same reads to know when the versions it serves caught up.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from pgai_orm.catalog.progress import RECORD_PROGRESS_SQL, ServedVersion
from pgai_orm.names import consumer_group, topic_name
from processors.offsets import committed_offsets, fetch_high_watermarks

logger = logging.getLogger("processors.worker")

__all__ = ["Progress", "Where", "behind", "measure_pending", "record_progress", "read_marks",
           "where"]

GroupKey = tuple[int, int]
#: Seconds a high-water read may take before the version's pending is left unmeasured.
MARKS_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Where:
    """The topic a version reads and its consumer group."""

    topic: str
    group: str


def where(version: ServedVersion, prefix: str) -> Where:
    """Topic and consumer group of ``version``, named as the services name them."""
    return Where(topic_name(prefix, version.database, version.source_schema, version.source_table),
                 consumer_group(prefix, version.database, version.vectorizer_id, version.version))


async def read_marks(servers: str, topics: Iterable[str]) -> dict[str, dict[int, int]]:
    """The high-water marks of each topic (``{}`` for one that does not exist yet: nothing was
    published, so nothing is pending); a topic whose read fails is left out."""
    marks: dict[str, dict[int, int]] = {}
    for topic in sorted(set(topics)):
        try:
            read = await fetch_high_watermarks(servers, topic, timeout=MARKS_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001  # the broker is busy or away: measured next time
            logger.debug("high-water marks of %s unknown: %s", topic, exc)
            continue
        marks[topic] = read or {}
    return marks


def behind(target: Mapping[int, int], committed: Mapping[int, int]) -> int:
    """Events of ``target`` (per-partition offsets) the committed offsets have not reached."""
    return sum(max(0, offset - committed.get(partition, 0))
               for partition, offset in target.items())


async def measure_pending(servers: str, versions: Mapping[GroupKey, Where]) -> dict[GroupKey, int]:
    """Pending events per version (one high-water read per topic, one offset read per group);
    a version that could not be measured is left out."""
    marks = await read_marks(servers, (w.topic for w in versions.values()))
    pending: dict[GroupKey, int] = {}
    for key, at in versions.items():
        if at.topic not in marks:
            continue
        if not marks[at.topic]:
            pending[key] = 0
            continue
        try:
            committed = await committed_offsets(servers, at.group, at.topic)
        except Exception as exc:  # noqa: BLE001  # measured next time
            logger.debug("committed offsets of %s unknown: %s", at.group, exc)
            continue
        pending[key] = behind(marks[at.topic], committed)
    return pending


@dataclass(frozen=True, slots=True)
class Progress:
    """One row of ``vectorizer.worker_progress`` as this process saw it."""

    key: GroupKey
    pending: int | None
    lsn: int | None  # the highest source LSN this process committed (None: none yet)
    applied_at: float | None  # when (wall clock, seconds)

    def params(self) -> dict[str, Any]:
        applied = (None if self.applied_at is None
                   else datetime.fromtimestamp(self.applied_at, UTC))
        return {"id": self.key[0], "version": self.key[1], "pending": self.pending,
                "lsn": self.lsn, "applied_at": applied}


def record_progress(database_url: str, rows: Iterable[Progress]) -> None:
    """Upsert the rows (``RECORD_PROGRESS_SQL``) in one transaction; raises ``psycopg.Error``."""
    params = [row.params() for row in rows]
    if not params:
        return
    with psycopg.connect(database_url) as conn, conn.cursor() as cur:
        cur.executemany(RECORD_PROGRESS_SQL, params)

"""``vectorizer.config_versions``: which config versions the workers serve, and re-embedding.

A vectorizer has one ``active`` version (queries are served from its store) and at most one
``building`` one (``alter_vectorizer`` or ``vectorizer replay`` made it; workers fill its fresh
store by replaying the topic). The workers read the version they serve here, record the replay
target (the topic's high-water marks the first time a building version runs) and activate a
caught-up version through ``vectorizer.activate_version``. The SQL is kept as constants for
the async callers (the workers run on psycopg's async connections) next to sync helpers for
the supervisor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from pgai_orm.configuration import VectorizerConfig
from pgai_orm.errors import InvariantError

__all__ = [
    "ACTIVATE_VERSION_SQL",
    "CONTENT_KEYS",
    "SET_REPLAY_TARGET_SQL",
    "VERSION_PROGRESS_SQL",
    "ReplayVersion",
    "VersionSource",
    "create_replay_version",
    "load_version_source",
    "replay_target_json",
    "served_versions",
]

SERVED_VERSIONS_SQL = (
    "SELECT vectorizer_id, version FROM vectorizer.config_versions"
    " WHERE status IN ('active', 'building')"
)

VERSION_SOURCE_SQL = (
    "SELECT v.source_schema, v.source_table, v.source_pk, cv.config, current_database(), v.name"
    " FROM vectorizer.vectorizers v JOIN vectorizer.config_versions cv"
    " ON cv.vectorizer_id = v.id WHERE v.id = %s AND cv.version = %s"
)

VERSION_PROGRESS_SQL = (
    "SELECT status, replay_target FROM vectorizer.config_versions"
    " WHERE vectorizer_id = %s AND version = %s"
)
"""``(status, replay_target)`` of one version; params ``(vectorizer_id, version)``."""

SET_REPLAY_TARGET_SQL = (
    "UPDATE vectorizer.config_versions SET replay_target = %s::jsonb"
    " WHERE vectorizer_id = %s AND version = %s AND replay_target IS NULL"
)
"""Record the first replay target only (params ``(target_json, vectorizer_id, version)``):
every worker of the version then waits for the same offsets."""

ACTIVATE_VERSION_SQL = "SELECT vectorizer.activate_version(%s, %s)"
"""Switch queries to a caught-up version; ``NoDataFound`` when another worker was first."""


@dataclass(frozen=True, slots=True)
class VersionSource:
    """What a worker needs to serve one config version."""

    vectorizer_id: int
    version: int
    source_schema: str
    source_table: str
    pk_columns: tuple[str, ...]
    config: dict[str, Any]
    database: str
    name: str = ""


def served_versions(conn: Any) -> set[tuple[int, int]]:
    """``(vectorizer_id, version)`` of every ``active`` and ``building`` version."""
    return {(int(a), int(b)) for a, b in conn.execute(SERVED_VERSIONS_SQL).fetchall()}


def load_version_source(conn: Any, vectorizer_id: int, version: int) -> VersionSource | None:
    """One config version with its source table; None when it does not exist."""
    row = conn.execute(VERSION_SOURCE_SQL, (vectorizer_id, version)).fetchone()
    if row is None:
        return None
    schema, table, pk, config, database, name = row
    return VersionSource(vectorizer_id, version, schema, table,
                         tuple(c["attname"] for c in pk),  # stored in key order
                         config, database, name)


def replay_target_json(marks: dict[int, int]) -> str:
    """The stored form of a replay target: ``{"<partition>": <offset>}``."""
    return orjson.dumps({str(p): o for p, o in marks.items()}).decode()


#: The parts of a config whose change means "re-embed": ``vectorizer.alter_vectorizer`` makes a
#: new version (and store) when its patch names one of them (catalog.sql tests the same list).
CONTENT_KEYS = ("embedding", "chunking", "formatting", "loading")


@dataclass(frozen=True, slots=True)
class ReplayVersion:
    """The version ``replay`` created: a copy of the serving one, with a fresh store."""

    serving: int
    version: int
    store: str


def create_replay_version(conn: Any, name: str) -> ReplayVersion | None:
    """Make a new config version identical to the serving one of vectorizer ``name`` (None when
    there is no such vectorizer), inside the caller's transaction.

    ``vectorizer.alter_vectorizer`` merges the patch into the newest version's config and, when
    the patch names a content key, always creates a fresh version and store (superseding a
    version still building). The patch carries the serving version's content keys, so the new
    version embeds exactly what the serving one does; the workers replay the topic into it.
    """
    row = conn.execute(
        "SELECT v.config_version, cv.config FROM vectorizer.vectorizers v"
        "  JOIN vectorizer.config_versions cv"
        "    ON cv.vectorizer_id = v.id AND cv.version = v.config_version"
        " WHERE v.name = %s FOR UPDATE OF v",
        (name,),
    ).fetchone()
    if row is None:
        return None
    serving, config = int(row[0]), row[1]
    parsed = VectorizerConfig.from_dict(config)
    patch = {key: config.get(key) for key in CONTENT_KEYS}
    placeholders = sorted(getattr(parsed.formatting, "placeholders", ()) or ())
    created = conn.execute(
        "SELECT v, (SELECT target_schema || '.' || target_table FROM vectorizer.config_versions"
        "            WHERE vectorizer_id = (SELECT id FROM vectorizer.vectorizers WHERE name = %s)"
        "              AND version = v)"
        "  FROM vectorizer.alter_vectorizer(%s, %s::jsonb, %s, %s::text[], %s) AS v",
        (name, name, orjson.dumps(patch).decode(), parsed.source_column, placeholders,
         parsed.embedding.dimensions),
    ).fetchone()
    if created is None or created[0] is None:
        raise InvariantError(f"vectorizer.alter_vectorizer made no version for {name!r}")
    return ReplayVersion(serving, int(created[0]), str(created[1]))

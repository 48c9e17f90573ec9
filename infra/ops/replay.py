"""``vectorizer replay``: re-embed a vectorizer from its topic without touching the source table.

It makes a new config version identical to the serving one through
``vectorizer.alter_vectorizer`` (a patch that names the content-defining parts always makes a
new version), so the workers start a fresh consumer group that reads the compacted topic from
offset 0 into a fresh store, and switch queries to it once it caught up. The current store
keeps serving meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from infra.urls import libpq_url
from pgai_orm.catalog import catalog_exists
from pgai_orm.catalog.report import NoCatalogError, UnknownVectorizerError, serving_version
from pgai_orm.catalog.versions import create_replay_version
from pgai_orm.runtime.waiting import wait_until

__all__ = ["ReplayStarted", "start_replay", "wait_for_activation"]

@dataclass(frozen=True)
class ReplayStarted:
    name: str
    from_version: int
    version: int
    store: str


def start_replay(database_url: str, name: str) -> ReplayStarted:
    """Make a new config version identical to the serving one
    (:func:`pgai_orm.catalog.versions.create_replay_version`); the workers replay into it. Raises
    :class:`~pgai_orm.catalog.report.NoCatalogError` or
    :class:`~pgai_orm.catalog.report.UnknownVectorizerError`.
    """
    with psycopg.connect(libpq_url(database_url)) as conn:
        if not catalog_exists(conn):
            raise NoCatalogError()
        created = create_replay_version(conn, name)
        if created is None:
            raise UnknownVectorizerError(name)
        conn.commit()
    return ReplayStarted(name, created.serving, created.version, created.store)


def wait_for_activation(database_url: str, name: str, version: int, timeout: float) -> bool:
    """Poll the catalog until ``version`` serves queries (True) or ``timeout`` passes (False)."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        return wait_until(lambda: serving_version(conn, name) == version, timeout, interval=0.25)

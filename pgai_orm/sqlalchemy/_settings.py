"""pgvector's HNSW settings for one search statement only, in the caller's own transaction.

``hnsw.ef_search`` (candidates the index scan keeps, 40 by default) and pgvector 0.8's
``hnsw.iterative_scan`` (keep scanning the index until the filters let ``LIMIT`` rows through)
are set with ``SET LOCAL`` inside a savepoint that is rolled back right after the SELECT: the
settings hold for that statement and nothing after it, whatever the caller set before, and a
search that fails leaves the caller's transaction usable. The search is read-only, so rolling
back its savepoint undoes nothing else; pending ORM changes are flushed before the savepoint,
never inside it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import text

from pgai_orm.sqlalchemy._catalog import VectorizerInfo
from pgai_orm.sqlalchemy.search_options import SearchOptions

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

T = TypeVar("T")

SAVEPOINT = "pgai_orm_search"
#: pgvector's default ef_search: without iterative scans an HNSW scan returns at most this many
PGVECTOR_EF_SEARCH = 40


def hnsw_settings(options: SearchOptions, info: VectorizerInfo) -> dict[str, str]:
    """The settings this search needs, as validated literals (ints and fixed words only).

    Without ``iterative_scan=``, a vectorizer with an HNSW index gets ``strict_order`` whenever
    the index alone could come back short: a filter, or more rows wanted than ``ef_search``.
    """
    settings: dict[str, str] = {}
    if not options.needs_vector:
        return settings
    if options.ef_search is not None:
        settings["hnsw.ef_search"] = str(options.ef_search)
    scan = options.iterative_scan
    wanted = options.window if (options.group_by_parent or options.mode == "hybrid") \
        else options.offset + options.limit
    if scan is None and info.hnsw_distance is not None and (
            options.filter is not None or wanted > (options.ef_search or PGVECTOR_EF_SEARCH)
            or options.max_distance is not None):
        scan = "strict_order"
    if scan is not None:
        settings["hnsw.iterative_scan"] = scan
    return settings


def _statements(settings: dict[str, str]) -> list[Any]:
    return [text(f"SET LOCAL {name} = {value}") for name, value in settings.items()]


def run_with_settings(session: Session, settings: dict[str, str], run: Callable[[], T]) -> T:
    """``run()`` with ``settings`` in force for it alone (see the module docstring)."""
    if not settings:
        return run()
    if session.autoflush:
        session.flush()
    session.execute(text(f"SAVEPOINT {SAVEPOINT}"))
    try:
        for statement in _statements(settings):
            session.execute(statement)
        return run()
    finally:
        session.execute(text(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}"))
        session.execute(text(f"RELEASE SAVEPOINT {SAVEPOINT}"))


async def run_with_settings_async(session: AsyncSession, settings: dict[str, str],
                                  run: Callable[[], Awaitable[T]]) -> T:
    """Async twin of :func:`run_with_settings`."""
    if not settings:
        return await run()
    if session.sync_session.autoflush:
        await session.flush()
    await session.execute(text(f"SAVEPOINT {SAVEPOINT}"))
    try:
        for statement in _statements(settings):
            await session.execute(statement)
        return await run()
    finally:
        await session.execute(text(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}"))
        await session.execute(text(f"RELEASE SAVEPOINT {SAVEPOINT}"))

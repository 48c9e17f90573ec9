"""What embedding cost, persisted: ``vectorizer.usage`` and its place in ``vectorizer status``.

A real Postgres (the session's), a fresh database per test: the increment upsert in sync and
async form, the read model's new ``usage`` field, and the row going with its vectorizer.
"""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from pgai_orm.catalog.report import read_report
from pgai_orm.catalog.usage import arecord_usage, read_usage, record_usage
from tests.support.vectorizers import create_vectorizer, install_catalog


@pytest.fixture
def vectorizer(fresh_database_url: str) -> tuple[str, int]:
    with psycopg.connect(fresh_database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE posts (id int PRIMARY KEY, title text, content text)")
    install_catalog(fresh_database_url)
    return fresh_database_url, create_vectorizer(fresh_database_url, "posts", name="posts_vz")


def test_batches_add_up_per_version_provider_and_model(vectorizer: tuple[str, int]) -> None:
    url, vid = vectorizer
    with psycopg.connect(url, autocommit=True) as conn:
        assert read_usage(conn) == []
        with conn.transaction():  # as the worker does it: in the batch's transaction
            record_usage(conn, vid, 1, "openai", "text-embedding-3-small", tokens=1200, requests=2)
        record_usage(conn, vid, 1, "openai", "text-embedding-3-small", tokens=800, requests=1,
                     rate_limited=3)
        record_usage(conn, vid, 1, "openai", "text-embedding-3-small", tokens=0, requests=0)

    async def from_the_worker() -> None:
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
        try:
            async with conn.transaction():
                await arecord_usage(conn, vid, 2, "openai", "text-embedding-3-large",
                                    tokens=50, requests=1)
        finally:
            await conn.close()

    asyncio.run(from_the_worker())
    with psycopg.connect(url, autocommit=True) as conn:
        rows = [(u.version, u.model, u.tokens, u.requests, u.rate_limited) for u in read_usage(conn, vid)]
        assert rows == [(1, "text-embedding-3-small", 2000, 3, 3),
                        (2, "text-embedding-3-large", 50, 1, 0)]
        (status,) = read_report(conn).vectorizers
        assert status.name == "posts_vz"
        assert [(u.version, u.tokens) for u in status.usage] == [(1, 2000), (2, 50)]


def test_usage_goes_with_its_vectorizer(vectorizer: tuple[str, int]) -> None:
    url, vid = vectorizer
    with psycopg.connect(url, autocommit=True) as conn:
        record_usage(conn, vid, 1, "litellm", "openai/text-embedding-3-small", tokens=10, requests=1)
        conn.execute("DELETE FROM vectorizer.vectorizers WHERE id = %s", (vid,))
        assert read_usage(conn) == []

"""Administrative SQL used by the dev stack and the test fixtures.

Logical replication slots pin WAL forever and block ``DROP DATABASE``, so every teardown path
(``vectorizer dev down``, the ``fresh_database_url`` fixture) removes them here, in one place.
All identifiers go through ``psycopg.sql``; nothing user-supplied is formatted into SQL text.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

from infra.errors import SlotBusyError
from infra.urls import with_database
from pgai_orm.runtime.waiting import wait_until

_SLOT_RELEASE_TIMEOUT_S = 10.0


def drop_logical_slots(url: str, database: str | None = None) -> list[str]:
    """Drop the logical slots of ``database`` (all databases when ``None``); return their names.

    A slot held by a walsender cannot be dropped, so its backend is terminated first and we
    poll until the slot reads inactive.
    """
    query = sql.SQL(
        "SELECT slot_name, active_pid FROM pg_replication_slots WHERE slot_type = 'logical'"
        " AND ({cond})"
    ).format(cond=sql.SQL("TRUE") if database is None else sql.SQL("database = %(db)s"))
    dropped: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        slots = conn.execute(query, {"db": database}).fetchall()
        for slot_name, active_pid in slots:
            if active_pid is not None:
                conn.execute("SELECT pg_terminate_backend(%s)", (active_pid,))
            _wait_slot_inactive(conn, slot_name)
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot_name,))
            dropped.append(slot_name)
    return dropped


def _wait_slot_inactive(conn: psycopg.Connection, slot_name: str) -> None:
    holder: int | None = None

    def released() -> bool:
        nonlocal holder
        row = conn.execute(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot_name,)
        ).fetchone()
        holder = None if row is None else row[0]
        if holder is None:
            return True
        conn.execute("SELECT pg_terminate_backend(%s)", (holder,))
        return False

    if not wait_until(released, _SLOT_RELEASE_TIMEOUT_S):
        raise SlotBusyError(f"replication slot {slot_name!r} still held by pid {holder}")


def create_database(url: str, name: str, extensions: tuple[str, ...] = ("vector",)) -> str:
    """Create database ``name`` on the server of ``url`` with ``extensions``; return its URL."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    new_url = with_database(url, name)
    if extensions:
        with psycopg.connect(new_url, autocommit=True) as conn:
            for ext in extensions:
                conn.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(ext)))
    return new_url


def drop_database(url: str, name: str) -> None:
    """Drop database ``name``: its slots first, then the database, kicking out its sessions."""
    drop_logical_slots(url, database=name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def temporary_database(url: str, prefix: str = "test") -> Iterator[str]:
    """A uniquely named database with pgvector for the duration of the block (tests, demos)."""
    name = f"{prefix}_{uuid.uuid4().hex[:16]}"
    new_url = create_database(url, name)
    try:
        yield new_url
    finally:
        drop_database(url, name)

"""The catalog schema as one versioned install: every table and function in ``vectorizer``.

One script (``pgai_orm/sql/catalog.sql``) creates everything the pipeline keeps in the user's
database: the vectorizer catalog, the connector's state, the workers' applied state, errors,
and the functions the Alembic operations call. No other module runs DDL on ``vectorizer.*``.

Why versioned: the script is idempotent, but it is about 400 lines, and running it on every
operation (or every new worker connection) takes locks on catalog tables that the services
read and write. So the installed version is recorded in ``vectorizer.catalog_version``; the
script runs only when the database has none or an older one, under an advisory lock so two
installers never interleave. Version 1 is the catalog from before versioning (it has
``vectorizer.vectorizers`` but no version table). An upgrade re-runs the idempotent script,
which adds what is new (``ADD COLUMN IF NOT EXISTS``, ``CREATE OR REPLACE``, dropping
replaced function signatures).

Offline ``alembic upgrade --sql`` cannot ask the database for its version: the Alembic
operations emit the install statements once per migration script (see
:mod:`pgai_orm.alembic.operations`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from importlib.resources import files
from typing import Any

from pgai_orm.errors import VectorizerError

__all__ = [
    "CATALOG_SCHEMA",
    "CATALOG_VERSION",
    "CatalogPrivilegeError",
    "catalog_sql",
    "ensure_catalog",
    "install_statements",
    "installed_version",
    "read_installed_version",
]

CATALOG_SCHEMA = "vectorizer"
CATALOG_VERSION = 4
"""Bump when ``catalog.sql`` changes; the script must bring every older version up to it."""

_LOCK_KEY = "vectorizer-catalog-install"

_WHICH_TABLES_SQL = (
    "SELECT CASE WHEN to_regclass('vectorizer.catalog_version') IS NOT NULL THEN 2"
    " WHEN to_regclass('vectorizer.vectorizers') IS NOT NULL THEN 1 ELSE 0 END"
)
_MAX_VERSION_SQL = "SELECT max(version) FROM vectorizer.catalog_version"

LOCK_SQL = f"SELECT pg_advisory_xact_lock(hashtext('{_LOCK_KEY}'))"


class CatalogPrivilegeError(VectorizerError, PermissionError):
    """The catalog must be installed or upgraded and this role may not do it."""


@cache
def catalog_sql() -> str:
    """The idempotent script that installs or upgrades the catalog."""
    return files("pgai_orm").joinpath("sql/catalog.sql").read_text(encoding="utf-8")


def split_sql_script(script: str) -> list[str]:
    """Split a script into single statements.

    Drivers run parameterised statements through the extended protocol, which takes one
    statement at a time, and offline scripts read better one statement per block. Function
    bodies are dollar-quoted with ``$fn$`` and are never split.
    """
    statements: list[str] = []
    current: list[str] = []
    in_body = False
    for line in script.splitlines():
        if not in_body and not current and (not line.strip() or line.startswith("--")):
            continue  # comments and blank lines between statements
        if line.count("$fn$") % 2 == 1:
            in_body = not in_body
        current.append(line)
        if not in_body and line.rstrip().endswith(";"):
            statement = "\n".join(current).strip().rstrip(";").strip()
            if statement:
                statements.append(statement)
            current = []
    tail = "\n".join(current).strip()
    if tail:
        statements.append(tail)
    return statements


@cache
def install_statements() -> tuple[str, ...]:
    """The statements that bring any older catalog to :data:`CATALOG_VERSION`, lock first and
    the version stamp last. They hold no bind parameters (safe for every driver)."""
    stamp = (
        "INSERT INTO vectorizer.catalog_version (version) VALUES "
        f"({CATALOG_VERSION}) ON CONFLICT (version) DO NOTHING"
    )
    return (LOCK_SQL, *split_sql_script(catalog_sql()), stamp)


def read_installed_version(scalar: Callable[[str], Any]) -> int | None:
    """The installed catalog version through ``scalar(sql) -> first column of the first row``
    (any driver): None for no catalog, 1 for a catalog from before versioning.

    Two queries, because a query naming ``vectorizer.catalog_version`` fails to parse where
    that table does not exist, whatever branch would run.
    """
    which = scalar(_WHICH_TABLES_SQL)
    if not which:
        return None
    if which == 1:
        return 1
    version = scalar(_MAX_VERSION_SQL)
    return 1 if version is None else int(version)


def installed_version(conn: Any) -> int | None:
    """The catalog version in the database of ``conn`` (a psycopg connection); None if none."""

    def scalar(query: str) -> Any:
        row = conn.execute(query).fetchone()
        return None if row is None else row[0]

    return read_installed_version(scalar)


def ensure_catalog(conn: Any) -> bool:
    """Install or upgrade the catalog through ``conn`` (a sync psycopg connection) when the
    database has none or an older one; True when it ran the script.

    Runs in one transaction (a failure leaves the old catalog as it was). A role without the
    privilege to create it gets :class:`CatalogPrivilegeError` naming what to run instead.
    """
    import psycopg  # the services' driver; the ORM side installs through Alembic

    current = installed_version(conn)
    if current is not None and current >= CATALOG_VERSION:
        return False
    try:
        with conn.transaction():
            for statement in install_statements():
                conn.execute(statement)
    except psycopg.errors.InsufficientPrivilege as exc:
        have = "no catalog" if current is None else f"catalog version {current}"
        raise CatalogPrivilegeError(
            f"the database has {have} and this code needs version {CATALOG_VERSION}, but this"
            f" role may not install it ({exc.diag.message_primary}): run `alembic upgrade head`"
            " as the migration owner, or `vectorizer catalog upgrade` with its DATABASE_URL"
        ) from None
    return True

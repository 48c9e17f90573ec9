"""Connection-URL helpers shared by the code and the tests.

The project passes one ``postgresql://`` URL around (``DATABASE_URL``); SQLAlchemy wants the
driver in the scheme and tests want the same server with another database name.
"""

from __future__ import annotations

from urllib.parse import SplitResult, quote, urlsplit, urlunsplit

_POSTGRES_SCHEMES = ("postgresql", "postgres")


def _split_postgres(url: str) -> SplitResult:
    parts = urlsplit(url)
    base_scheme = parts.scheme.split("+", 1)[0]
    if base_scheme not in _POSTGRES_SCHEMES:
        raise ValueError(f"not a PostgreSQL URL: {url!r}")
    return parts


def sqlalchemy_url(url: str) -> str:
    """Turn ``postgresql://...`` (or ``postgres://``, or another driver) into ``postgresql+psycopg://...``."""
    parts = _split_postgres(url)
    return urlunsplit(parts._replace(scheme="postgresql+psycopg"))


def libpq_url(url: str) -> str:
    """Turn a SQLAlchemy-style URL back into a plain ``postgresql://`` URL psycopg accepts."""
    parts = _split_postgres(url)
    return urlunsplit(parts._replace(scheme="postgresql"))


def with_database(url: str, dbname: str) -> str:
    """Return ``url`` pointing at database ``dbname`` (same server, user and query options)."""
    parts = _split_postgres(url)
    return urlunsplit(parts._replace(path="/" + quote(dbname, safe="")))


def postgres_url(port: int, host: str = "127.0.0.1", user: str = "postgres", dbname: str = "postgres") -> str:
    """The password-less URL of a local embedded server."""
    return f"postgresql://{quote(user, safe='')}@{host}:{port}/{quote(dbname, safe='')}"

"""One database URL, whichever form the user has: the libpq form or SQLAlchemy's.

Application developers already have ``postgresql+psycopg://...`` (SQLAlchemy's form, with the
driver in the scheme) in their settings; libpq and psycopg only understand ``postgresql://``,
``postgres://`` or ``key=value`` pairs, and read anything else as a malformed key/value string
(``missing "=" after ...``). Every process of the project passes the user's ``DATABASE_URL``
through :func:`to_conninfo` once, when it reads it, so both forms work everywhere and anything
else is refused with a message that says how to write it.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict

from pgai_orm.errors import VectorizerError

__all__ = ["DatabaseUrlError", "describe_database", "to_conninfo", "to_sqlalchemy_url"]

_LIBPQ_SCHEMES = ("postgresql", "postgres")
_EXAMPLE = "postgresql://user:password@host:5432/dbname"


class DatabaseUrlError(VectorizerError, ValueError):
    """A database URL neither libpq nor SQLAlchemy's PostgreSQL dialect can mean."""


def _scheme(url: str) -> str | None:
    return urlsplit(url).scheme.lower() if "://" in url else None


def to_conninfo(url: str) -> str:
    """``url`` as libpq/psycopg accept it: ``postgresql://`` and ``key=value`` strings unchanged,
    SQLAlchemy's ``postgresql+<driver>://`` with the driver dropped.

    Raises :class:`DatabaseUrlError` naming the expected form for anything else (another
    database's scheme, an empty value, a key/value string libpq cannot parse).
    """
    text = url.strip()
    if not text:
        raise DatabaseUrlError(f"the database URL is empty; write it as {_EXAMPLE}")
    scheme = _scheme(text)
    if scheme is None:  # libpq's key=value form: let libpq itself judge it
        try:
            conninfo_to_dict(text)
        except psycopg.ProgrammingError as exc:
            raise DatabaseUrlError(
                f"the database URL is neither a URL nor libpq key=value pairs ({exc}); write it"
                f" as {_EXAMPLE}") from None
        return text
    base, _, driver = scheme.partition("+")
    if base not in _LIBPQ_SCHEMES:
        raise DatabaseUrlError(
            f"the database URL has scheme {scheme!r}, which is not PostgreSQL; write it as"
            f" {_EXAMPLE} (SQLAlchemy's postgresql+psycopg:// is accepted too)")
    if not driver and text.startswith(("postgresql://", "postgres://")):
        return text  # already libpq's form: keep it byte for byte
    return urlunsplit(urlsplit(text)._replace(scheme="postgresql"))


def to_sqlalchemy_url(url: str) -> str:
    """``url`` in SQLAlchemy's form for psycopg 3 (``postgresql+psycopg://``)."""
    conninfo = to_conninfo(url)
    if _scheme(conninfo) is None:
        raise DatabaseUrlError("a libpq key=value string has no SQLAlchemy form; write the"
                               f" database URL as {_EXAMPLE}")
    return urlunsplit(urlsplit(conninfo)._replace(scheme="postgresql+psycopg"))


def describe_database(url: str) -> str:
    """``host:port/dbname`` of ``url`` for messages: what is being reached, never the password."""
    try:
        params = conninfo_to_dict(to_conninfo(url))
    except (DatabaseUrlError, psycopg.ProgrammingError):
        return "the database"
    host = str(params.get("host") or "localhost")
    port = str(params.get("port") or "5432")
    dbname = params.get("dbname") or params.get("user") or ""
    if "/" in host:  # a Unix socket directory
        return f"{host} (socket, port {port})/{dbname}"
    return f"{host}:{port}/{dbname}"

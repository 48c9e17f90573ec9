"""``vectorizer.vectorizers``: which vectorizers exist, as typed records.

Every service learns the vectorizers of a database here (the connector to know what to read,
the workers what to embed, ``vectorizer status`` what to report).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "PrimaryKeyColumn",
    "VectorizerRecord",
    "catalog_exists",
    "instance_id",
    "load_vectorizers",
    "source_key_names",
]


@dataclass(frozen=True, slots=True)
class PrimaryKeyColumn:
    """One column of a source table's primary key, as the catalog records it."""

    attname: str
    typname: str
    attnum: int


@dataclass(frozen=True, slots=True)
class VectorizerRecord:
    """One row of ``vectorizer.vectorizers`` joined with the config version being served."""

    id: int
    name: str
    source_schema: str
    source_table: str
    source_pk: tuple[PrimaryKeyColumn, ...]
    target_schema: str
    target_table: str
    view_schema: str
    view_table: str
    config: dict[str, Any]
    config_version: int
    publication_name: str
    #: False once the source table was dropped (``DROP TABLE ... CASCADE``) under the vectorizer
    source_exists: bool = True

    @property
    def source_qualified(self) -> str:
        """``schema.table`` of the source, for messages and topic names (not for SQL)."""
        return f"{self.source_schema}.{self.source_table}"


_SELECT_VECTORIZERS = """
SELECT id, name, source_schema, source_table, source_pk, target_schema, target_table,
       view_schema, view_table, config, config_version, publication_name,
       to_regclass(quote_ident(source_schema) || '.' || quote_ident(source_table)) IS NOT NULL
  FROM vectorizer.vectorizers
"""


def _record(row: tuple[Any, ...]) -> VectorizerRecord:
    pk = tuple(PrimaryKeyColumn(c["attname"], c["typname"], int(c["attnum"])) for c in row[4])
    return VectorizerRecord(
        id=row[0], name=row[1], source_schema=row[2], source_table=row[3], source_pk=pk,
        target_schema=row[5], target_table=row[6], view_schema=row[7], view_table=row[8],
        config=row[9], config_version=row[10], publication_name=row[11],
        source_exists=bool(row[12]),
    )


def catalog_exists(conn: Any) -> bool:
    """Whether the catalog is installed in the database of ``conn`` (a psycopg connection)."""
    row = conn.execute("SELECT to_regclass('vectorizer.vectorizers') IS NOT NULL").fetchone()
    return bool(row and row[0])


def instance_id(conn: Any) -> str | None:
    """The catalog instance id of the database of ``conn`` (``vectorizer.instance``: one random
    id per database incarnation), as text; None when the table is missing."""
    row = conn.execute("SELECT to_regclass('vectorizer.instance') IS NOT NULL").fetchone()
    if not (row and row[0]):
        return None
    row = conn.execute("SELECT id::text FROM vectorizer.instance").fetchone()
    return None if row is None else str(row[0])


def load_vectorizers(conn: Any) -> list[VectorizerRecord]:
    """Every vectorizer of the database, ordered by id; empty when no catalog exists."""
    if not catalog_exists(conn):
        return []
    return [_record(r) for r in conn.execute(_SELECT_VECTORIZERS + " ORDER BY id").fetchall()]


def source_key_names(conn: Any, schema: str, table: str) -> list[tuple[str, str | None]]:
    """``(store name, current source name)`` of each key column of ``schema.table``, in key order
    (``vectorizer.source_key_columns``; the current name is None for a dropped column).

    The store and every event key keep the names the key columns had when the vectorizer was
    created; a key column renamed since is found by its attnum, so readers of the source (the
    connector's Relation messages and snapshots, the workers' re-reads) follow the rename.
    """
    rows = conn.execute("SELECT store_name, source_name FROM vectorizer.source_key_columns(%s, %s)",
                        (schema, table)).fetchall()
    return [(str(r[0]), None if r[1] is None else str(r[1])) for r in rows]

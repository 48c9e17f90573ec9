"""Renamed source columns, without a database: the connector keys rows by the catalog's (the
store's) names when a key column was renamed, and never sends a key without its column; the
workers find a column they read under the other names the catalog knows for it."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from connector.events import ChangeEncoder, KeyColumnMissingError
from connector.pgoutput import UNCHANGED_TOAST, Column, Delete, Insert, Relation, Update
from pgai_orm.events import RowChange, Transaction, decode_event
from processors.pipeline import _follow_renames, _toasted

TABLE = ("public", "docs")
TXN = Transaction(500, "2026-01-01T00:00:00+00:00", 7)


def _relation(*names: str, key: tuple[str, ...] = ("doc_id",)) -> Relation:
    columns = tuple(Column(n, 23 if n in ("doc_id", "k", "id") else 25, -1, n in key) for n in names)
    return Relation(16500, "public", "docs", "d", columns)


def _events(records: list[Any]) -> list[tuple[dict[str, Any] | None, RowChange | None]]:
    out = []
    for key, value in records:
        event = decode_event(value)
        assert event is None or isinstance(event, RowChange)
        out.append((orjson.loads(key), event))
    return out


class _Catalog:
    """``source_names`` as the catalog answers it: the key column ``id`` is called ``doc_id`` now."""

    def __init__(self, names: list[tuple[str, str | None]]) -> None:
        self.names = names
        self.calls = 0

    def __call__(self, schema: str, table: str) -> list[tuple[str, str | None]]:
        assert (schema, table) == TABLE
        self.calls += 1
        return self.names


def test_a_renamed_key_column_keeps_the_store_name_in_every_event() -> None:
    catalog = _Catalog([("id", "doc_id")])
    encoder = ChangeEncoder({TABLE: ["id"]}, source_names=catalog)
    encoder.relation(_relation("doc_id", "title", "body"))
    assert catalog.calls == 1

    [(key, change)] = _events(encoder.insert(Insert(16500, ("1", "t", "b")), 100, TXN))
    assert key == {"id": 1} and change is not None
    assert change.key == {"id": 1} and change.row == {"doc_id": 1, "title": "t", "body": "b"}

    # a key change: delete of the old key (and its tombstone), insert of the new one
    records = encoder.update(Update(16500, ("2", "t", UNCHANGED_TOAST), ("1", None, None), "K"), 110, TXN)
    (k1, delete), (k2, tomb), (k3, insert) = _events(records)
    assert (k1, k2, k3) == ({"id": 1}, {"id": 1}, {"id": 2})
    assert delete is not None and delete.is_delete and tomb is None
    assert insert is not None and insert.key == {"id": 2} and insert.unchanged_toast == {"body"}

    [(key, change), (_, tombstone)] = _events(encoder.delete(Delete(16500, ("2", None, None), "K"), 120, TXN))
    assert key == {"id": 2} and change is not None and change.is_delete and tombstone is None


def test_the_catalog_is_asked_only_when_a_key_name_is_missing() -> None:
    catalog = _Catalog([("id", "id")])
    encoder = ChangeEncoder({TABLE: ["id"]}, source_names=catalog)
    encoder.relation(_relation("id", "title", key=("id",)))
    assert catalog.calls == 0
    [(key, _)] = _events(encoder.insert(Insert(16500, ("5", "t")), 100, TXN))
    assert key == {"id": 5}


def test_one_renamed_column_of_a_composite_key() -> None:
    catalog = _Catalog([("id", "id"), ("kind", "k")])
    encoder = ChangeEncoder({TABLE: ["id", "kind"]}, source_names=catalog)
    encoder.relation(_relation("id", "k", "body", key=("id", "k")))
    [(key, change)] = _events(encoder.insert(Insert(16500, ("1", "2", "b")), 100, TXN))
    assert key == {"id": 1, "kind": 2}
    assert change is not None and change.row == {"id": 1, "k": 2, "body": "b"}


@pytest.mark.parametrize("names", [None, [("id", None)], [("id", "gone")]])
def test_a_key_column_nobody_can_name_stops_the_connector_instead_of_an_empty_key(
        names: list[tuple[str, str | None]] | None) -> None:
    encoder = ChangeEncoder({TABLE: ["id"]}, source_names=None if names is None else _Catalog(names))
    with pytest.raises(KeyColumnMissingError, match="key column 'id' is not among the streamed columns"):
        encoder.relation(_relation("doc_id", "title"))


def test_workers_find_a_read_column_under_its_other_names() -> None:
    read = frozenset({"content", "title"})
    names = {"content": ("body",), "title": ()}
    # after the rename the event carries the new name; the old name is filled from it
    row = {"id": 1, "title": "t", "body": "text"}
    assert _follow_renames(row, read, names) == {**row, "content": "text"}
    # a version reading the new name replays events from before the rename
    assert _follow_renames({"id": 1, "content": "old"}, frozenset({"body"}), {"body": ("content",)}) == \
        {"id": 1, "content": "old", "body": "old"}
    # no other name known: still missing (a load or format error, as before)
    assert _follow_renames({"id": 1, "title": "t"}, read, {}) == {"id": 1, "title": "t"}
    # unchanged TOAST under the new name counts as the read column's
    assert _toasted(read, frozenset({"body"}), names) == {"content"}
    assert _toasted(read, frozenset({"body"}), {}) == frozenset()
    assert _toasted(read, frozenset({"content"}), {}) == {"content"}

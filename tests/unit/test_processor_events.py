"""Decoding change events per the contract, and reducing a batch to the newest event per row.

Good events come from the contract's encoder (``tests.support.events``); the malformed ones,
the point of their test, are raw bytes.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pgai_orm.events import EventFormatError, RowChange, RowOp, Truncate, canonical_key, decode_event
from processors.events import reduce_newest
from tests.support.events import row_change, truncate


def change(op: RowOp, lsn: int, id_: int = 1, **row: Any) -> RowChange:
    event = decode_event(row_change(op, lsn, {"id": id_}, {"id": id_, **row})[1])
    assert isinstance(event, RowChange)
    return event


def test_canonical_key_matches_the_connector_bytes() -> None:
    assert canonical_key({"b": 2, "a": "x"}) == b'{"a":"x","b":2}'


def test_parse_insert_update_with_unchanged_toast() -> None:
    _, value = row_change("update", 42, {"id": 1}, {"id": 1, "title": "t"},
                          unchanged_toast=["content"])
    event = decode_event(value)
    assert event == RowChange("update", 42, {"id": 1}, '{"id":1}', {"id": 1, "title": "t"},
                              frozenset({"content"}))
    assert not event.is_delete


def test_parse_delete_has_no_row_and_tombstone_is_none() -> None:
    event = decode_event(row_change("delete", 9, {"id": 3})[1])
    assert isinstance(event, RowChange) and event.is_delete and event.row is None
    assert decode_event(None) is None


def test_parse_truncate() -> None:
    assert decode_event(truncate(77)[1]) == Truncate(77)


@pytest.mark.parametrize("raw", [
    b"not json",
    b"[1, 2]",
    orjson.dumps({"op": "insert", "lsn": "12", "key": {"id": 1}, "row": {}}),
    orjson.dumps({"op": "merge", "lsn": 12, "key": {"id": 1}, "row": {}}),
    orjson.dumps({"op": "insert", "lsn": 12, "key": {}, "row": {}}),
    orjson.dumps({"op": "insert", "lsn": 12, "key": {"id": 1}, "row": None}),
])
def test_malformed_events_are_rejected_with_a_reason(raw: bytes) -> None:
    with pytest.raises(EventFormatError):
        decode_event(raw)


def test_reduce_keeps_the_newest_change_per_key_whatever_the_order() -> None:
    events = [change("insert", 10, 1, content="a"), change("update", 30, 1, content="c"),
              change("update", 20, 1, content="b"), change("insert", 15, 2, content="x"), None]
    reduced = reduce_newest(events)
    assert reduced.truncate_lsn is None
    assert [(c.key["id"], c.lsn) for c in reduced.changes] == [(1, 30), (2, 15)]


def test_reduce_drops_changes_older_than_a_truncate_in_the_batch() -> None:
    events = [change("insert", 10, 1), Truncate(20), change("insert", 30, 2),
              change("insert", 12, 3), Truncate(18)]
    reduced = reduce_newest(events)
    assert reduced.truncate_lsn == 20
    assert [c.key["id"] for c in reduced.changes] == [2]


def test_a_delete_newer_than_an_insert_wins() -> None:
    reduced = reduce_newest([change("insert", 10), change("delete", 11)])
    assert [c.op for c in reduced.changes] == ["delete"]

"""The event's ``source`` (the catalog instance id of the writing database) round-trips."""

from __future__ import annotations

import orjson

from pgai_orm.events import RowChange, Transaction, Truncate, decode_event, encode_row_change

SOURCE = "6f1c2b1e-8a1d-4c5e-9f44-2d3a7b9c0e11"


def test_row_change_round_trips_with_and_without_source() -> None:
    with_source = RowChange.of("insert", 10, {"id": 1}, {"id": 1, "t": "x"}, source=SOURCE)
    _, value = with_source.encode()
    assert orjson.loads(value)["source"] == SOURCE
    decoded = decode_event(value)
    assert isinstance(decoded, RowChange) and decoded.source == SOURCE
    assert decoded == with_source

    without = RowChange.of("update", 11, {"id": 1}, {"id": 1, "t": "y"})
    _, value = without.encode()
    assert orjson.loads(value)["source"] is None
    decoded = decode_event(value)
    assert isinstance(decoded, RowChange) and decoded.source is None


def test_events_written_before_the_field_decode_without_source() -> None:
    value = encode_row_change("delete", 12, Transaction(13), "public", "t", {"id": 2}, None)
    legacy = orjson.loads(value)
    del legacy["source"]
    decoded = decode_event(orjson.dumps(legacy))
    assert isinstance(decoded, RowChange) and decoded.source is None and decoded.is_delete


def test_truncate_carries_its_source() -> None:
    records = Truncate(20, Transaction(21), "public", "t", SOURCE).records([0, 1])
    for _, _, value in records:
        decoded = decode_event(value)
        assert isinstance(decoded, Truncate) and decoded.source == SOURCE and decoded.lsn == 20
    decoded = decode_event(Truncate(20).encode()[1])
    assert isinstance(decoded, Truncate) and decoded.source is None

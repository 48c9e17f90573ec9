"""A batch of change events reduced to what it means for the store: the newest change per row.

The events themselves (their format, decoding, the canonical key) are the contract in
:mod:`pgai_orm.events`. A batch often holds several changes of one row (a burst of edits), and
only the last one decides what the store must hold, so embedding the others would be wasted work.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pgai_orm.events import Event, RowChange, Truncate

__all__ = ["ReducedBatch", "reduce_newest"]


@dataclass(frozen=True, slots=True)
class ReducedBatch:
    """What a batch means for the store.

    ``truncate_lsn`` is the highest truncate in the batch (applied first); ``changes`` holds the
    newest change per key, each newer than that truncate, in first-seen key order.
    """

    truncate_lsn: int | None
    changes: list[RowChange]


def reduce_newest(events: Iterable[Event | None]) -> ReducedBatch:
    """Keep the newest change per key (highest ``lsn``) and drop changes older than a truncate.

    A change older than a truncate in the same batch describes a row the truncate removed, so
    it must not come back. Tombstones (``None``) carry nothing and are dropped.
    """
    newest: dict[str, RowChange] = {}
    truncate_lsn: int | None = None
    for event in events:
        if event is None:
            continue
        if isinstance(event, Truncate):
            truncate_lsn = event.lsn if truncate_lsn is None else max(truncate_lsn, event.lsn)
            continue
        seen = newest.get(event.key_json)
        if seen is None or event.lsn > seen.lsn:
            newest[event.key_json] = event
    changes = [
        change for change in newest.values() if truncate_lsn is None or change.lsn > truncate_lsn
    ]
    return ReducedBatch(truncate_lsn, changes)

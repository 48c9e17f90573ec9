"""What ``vectorizer status`` says about the slot: lost, missing, recreated while resyncing, ok."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from connector.service import slot_state
from connector.slots import SlotHealth
from connector.state import SlotRecord
from infra.ops.render import slot_note
from infra.ops.render import slot_state as render_state
from pgai_orm.catalog.report import SlotStatus


def table(status: str, reason: str | None) -> dict[str, Any]:
    return {"status": status, "snapshot_reason": reason}


RECREATED = SlotRecord("s", None, "wal_removed", datetime(2026, 1, 1, tzinfo=UTC), 1)


def test_slot_state_follows_the_server_and_the_connector_record() -> None:
    healthy = SlotHealth(True, True, "reserved")
    assert slot_state(healthy, None, [table("streaming", "first")]) == "ok"
    lost = SlotHealth(True, False, "lost", "wal_removed")
    assert slot_state(lost, RECREATED, [table("streaming", "first")]) == "lost"
    # gone while tables are recorded: the connector will create it again
    assert slot_state(SlotHealth(False), None, [table("streaming", "first")]) == "missing"
    assert slot_state(SlotHealth(False), None, []) == "none"
    # created again, and a table still being resynced because of it
    assert slot_state(healthy, RECREATED, [table("snapshotting", "slot_invalidated")]) == "recreated"
    # a resync for another reason (a vectorizer created again) is not the slot's doing
    assert slot_state(healthy, RECREATED, [table("snapshotting", "vectorizer_recreated")]) == "ok"
    assert slot_state(healthy, RECREATED, [table("streaming", "slot_invalidated")]) == "ok"


def test_the_state_cell_is_short_and_a_note_says_what_the_connector_does() -> None:
    lost = SlotStatus("s", False, "0/1", 10, state="lost", wal_status="lost",
                      invalidation_reason="wal_removed")
    assert render_state(lost) == "lost (wal_removed)"
    assert (slot_note(lost) or "").startswith("the connector drops it")
    missing = SlotStatus("s", False, None, None, state="missing")
    assert render_state(missing) == "missing"
    assert (slot_note(missing) or "").startswith("the connector creates it again")
    resyncing = SlotStatus("s", True, "0/1", 0, state="recreated", recreated_reason="dropped",
                           recreations=1, resync_tables=1, resync_rows_done=50,
                           resync_rows_total=200)
    assert render_state(resyncing) == "recreated (was dropped), resyncing 1 table(s): 50/200 rows"
    assert render_state(SlotStatus("s", True, "0/1", 0)) == "ok"

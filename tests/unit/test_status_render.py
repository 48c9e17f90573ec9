"""``vectorizer status``: the connector's phase is structured in JSON and readable as text, and
the text report fits 100 columns."""

from __future__ import annotations

import json
from dataclasses import asdict

from infra.ops.render import REPORT_WIDTH, jsonable, render_report
from infra.ops.report import _phase
from pgai_orm.catalog.report import Report, SlotStatus, VectorizerStatus, VersionStatus


def report() -> Report:
    slot = SlotStatus("vectorizer_vectorizer_demo", True, "0/2154E48", 123456, state="lost",
                      invalidation_reason="wal_removed")
    table = {"schema": "public", "table": "blog_posts", "status": "snapshotting", "resync": True,
             "snapshot_reason": "slot_invalidated", "snapshot_rows": 200000,
             "snapshot_rows_total": 250000}
    vz = VectorizerStatus("blog_posts_content_embedding", "public.blog_posts", 250000, 2, 3, [
        VersionStatus(1, "retired", "public.blog_posts_embedding_store_v1", 250000, 249990,
                      1234567, "0/2154E48", 0.0, "g1", 0),
        VersionStatus(2, "active", "public.blog_posts_embedding_store", 200000, 199990,
                      987654, "16/B374D848", 1234.5, "g2", 120000),
    ], topic="vectorizer.vectorizer_demo.public.blog_posts")
    vz.connector = _phase(SlotStatus(slot.name, True, "0/1", 4096), table)
    return Report("vectorizer_demo", [slot], [vz], "ok")


def test_the_connector_phase_is_structured_in_json() -> None:
    data = json.loads(json.dumps(asdict(report()), default=jsonable))
    phase = data["vectorizers"][0]["connector"]
    assert phase == {"state": "resyncing", "slot": "vectorizer_vectorizer_demo", "lag_bytes": 4096,
                     "snapshot": {"reason": "slot_invalidated", "rows_done": 200000,
                                  "rows_total": 250000},
                     "slot_state": None}


def test_the_text_report_fits_100_columns_and_says_the_phase() -> None:
    text = render_report(report())
    too_wide = [line for line in text.splitlines() if len(line) > REPORT_WIDTH]
    assert REPORT_WIDTH == 100 and not too_wide, too_wide
    assert "connector: resyncing (slot_invalidated) 200000/250000 rows" in text
    assert "lost (wal_removed): the connector drops it" in text
    assert "/?" not in text


def test_phases_in_words() -> None:
    slot = SlotStatus("s", True, "0/1", 0)
    streaming = {"schema": "public", "table": "t", "status": "streaming", "resync": False}
    assert _phase(slot, streaming).describe() == "streaming"
    missing = SlotStatus("s", False, None, None, state="missing")
    assert _phase(missing, streaming).describe() == "waiting for a resync (slot missing)"
    first = {"schema": "public", "table": "t", "status": "snapshotting", "resync": False,
             "snapshot_reason": "first", "snapshot_rows": 10, "snapshot_rows_total": 99}
    assert _phase(slot, first).describe() == "snapshotting 10/99 rows"
    assert VectorizerStatus("v", "public.t", 0, 1, 0).connector.describe() == "not seen by a connector yet"

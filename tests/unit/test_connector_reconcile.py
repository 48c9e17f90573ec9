"""The connector's reconciliation decisions, without a database or a broker."""

from __future__ import annotations

from connector.reconcile import (
    BROKER_LOST,
    FIRST,
    SLOT_DROPPED,
    SLOT_INVALIDATED,
    TABLE_RECREATED,
    VECTORIZER_RECREATED,
    SlotAction,
    SourceTable,
    desired_tables,
    forgotten,
    incarnation_change,
    incarnations_to_record,
    lost_topics,
    needing_snapshot,
    resumes_snapshot,
    slot_action,
    slot_lost,
    snapshot_reason,
    stream_plan,
)
from connector.slots import invalidation
from connector.state import TableState
from pgai_orm.catalog import PrimaryKeyColumn, VectorizerRecord
from pgai_orm.names import topic_name


def vectorizer(vid: int, table: str, *, exists: bool = True, pk: tuple[str, ...] = ("id",)) -> VectorizerRecord:
    return VectorizerRecord(
        id=vid, name=f"v{vid}", source_schema="public", source_table=table,
        source_pk=tuple(PrimaryKeyColumn(name, "int4", i + 1) for i, name in enumerate(pk)),
        target_schema="public", target_table=f"{table}_store", view_schema="public",
        view_table=f"{table}_view", config={}, config_version=1,
        publication_name=f"vectorizer_{vid}", source_exists=exists,
    )


def state(table: str, status: str = "streaming", *, topic: str = "t", topic_id: str | None = "id-1",
          stream_from: int = 100, oid: int | None = None, ids: set[int] | None = None,
          reason: str | None = None) -> TableState:
    return TableState("public", table, topic, topic_id, status, stream_from, 90, None, 0, None,
                      oid, None if ids is None else frozenset(ids), reason, None)


def test_tables_shared_by_vectorizers_are_read_once_with_every_publication() -> None:
    desired = desired_tables([vectorizer(1, "docs", pk=("a", "b")), vectorizer(2, "docs"),
                              vectorizer(3, "gone", exists=False), vectorizer(4, "gone", exists=False)],
                             "pfx", "db")
    (docs,) = desired.tables.values()
    assert docs.id == ("public", "docs")
    assert docs.key_columns == ["a", "b"]  # the first vectorizer's key
    assert docs.topic == topic_name("pfx", "db", "public", "docs")
    assert docs.publications == {"vectorizer_1", "vectorizer_2"}
    assert list(desired.missing) == [("public", "gone")]
    assert desired.missing[("public", "gone")].id == 3  # named once, by its first vectorizer


def test_slot_action() -> None:
    assert slot_action(False, slot_exists=False, streaming=False) is SlotAction.IDLE
    assert slot_action(False, slot_exists=True, streaming=False) is SlotAction.DROP
    assert slot_action(False, slot_exists=False, streaming=True) is SlotAction.DROP
    assert slot_action(True, slot_exists=False, streaming=True) is SlotAction.CREATE
    assert slot_action(True, slot_exists=True, streaming=False) is SlotAction.STREAM
    assert slot_action(True, slot_exists=True, streaming=True, invalidated=True) is SlotAction.RECREATE
    assert slot_action(False, slot_exists=True, streaming=False, invalidated=True) is SlotAction.DROP


def test_invalidation_is_read_from_whatever_columns_the_server_has() -> None:
    assert invalidation({"wal_status": "reserved", "invalidation_reason": None}) is None
    assert invalidation({"wal_status": "unreserved"}) is None  # at risk, still usable
    assert invalidation({"wal_status": "lost"}) == "wal_removed"  # PostgreSQL 13-16
    assert invalidation({"wal_status": "lost", "invalidation_reason": "wal_removed"}) == "wal_removed"
    assert invalidation({"wal_status": "reserved", "invalidation_reason": "idle_timeout"}) == "idle_timeout"
    assert invalidation({"wal_status": "reserved", "conflicting": True}) == "conflicting"


def test_snapshot_forget_and_stream_decisions() -> None:
    tables = desired_tables([vectorizer(1, "new"), vectorizer(2, "half"), vectorizer(3, "done")],
                            "p", "db").tables
    states = {("public", "half"): state("half", "snapshotting", stream_from=50),
              ("public", "done"): state("done", stream_from=70),
              ("public", "dropped"): state("dropped")}
    assert forgotten(tables, states) == {("public", "dropped")}
    assert needing_snapshot(tables, states) == {("public", "new"): FIRST, ("public", "half"): FIRST}
    plan = stream_plan(tables, states)
    # only recorded tables stream, each from its own point; "new" waits for its snapshot
    assert plan.floors == {("public", "half"): 50, ("public", "done"): 70}
    assert plan.publications == {"vectorizer_2", "vectorizer_3"}


def test_a_snapshot_resumes_only_into_the_topic_that_has_its_first_part() -> None:
    table = SourceTable("public", "docs", ["id"], "topic-a")
    half = state("docs", "snapshotting", topic="topic-a", topic_id="id-1")
    assert resumes_snapshot(half, table, "id-1")
    assert not resumes_snapshot(half, table, "id-2")  # the broker re-created the topic
    assert not resumes_snapshot(state("docs", "snapshotting", topic="topic-b"), table, "id-1")
    assert not resumes_snapshot(state("docs", "streaming", topic="topic-a"), table, "id-1")
    assert not resumes_snapshot(None, table, "id-1")


def test_lost_topics_are_missing_or_recreated() -> None:
    states = {("public", "a"): state("a", topic="ta", topic_id="1"),
              ("public", "b"): state("b", topic="tb", topic_id="2"),
              ("public", "c"): state("c", topic="tc", topic_id="3")}
    assert lost_topics(states, {"ta": "1", "tb": None, "tc": "9"}) == {("public", "b"), ("public", "c")}


def test_a_new_incarnation_of_a_streaming_table_is_resynced() -> None:
    tables = desired_tables([vectorizer(2, "swapped"), vectorizer(3, "shared"), vectorizer(4, "shared"),
                             vectorizer(5, "recreated"), vectorizer(6, "legacy")], "p", "db").tables
    states = {
        # vectorizer 1 dropped and 2 created (maybe in one transaction): nobody streamed between
        ("public", "swapped"): state("swapped", oid=10, ids={1}),
        # 4 added beside 3, which kept streaming the table: the topic has the whole history
        ("public", "shared"): state("shared", oid=11, ids={3}),
        # same vectorizer, but the table was dropped and created again
        ("public", "recreated"): state("recreated", oid=12, ids={5}),
        # a row written before incarnations were recorded: unknown, never a reason
        ("public", "legacy"): state("legacy"),
    }
    oids = {("public", "swapped"): 10, ("public", "shared"): 11, ("public", "recreated"): 99,
            ("public", "legacy"): 13}
    assert needing_snapshot(tables, states, oids) == {
        ("public", "swapped"): VECTORIZER_RECREATED, ("public", "recreated"): TABLE_RECREATED}
    # the continuing ones get their new vectorizer set / OID recorded
    assert incarnations_to_record(tables, states, oids) == {
        ("public", "shared"): 11, ("public", "legacy"): 13}
    assert incarnation_change(tables[("public", "shared")], states[("public", "shared")], 11) is None
    # an OID not known now (the table is missing) is no reason either
    assert incarnation_change(tables[("public", "recreated")], states[("public", "recreated")], None) is None
    # a snapshot interrupted in another incarnation starts over instead of resuming
    half = state("swapped", "snapshotting", topic="topic-a", ids={1}, reason=SLOT_DROPPED)
    table = tables[("public", "swapped")]
    table.topic = "topic-a"
    assert not resumes_snapshot(half, table, "id-1", 10)
    assert snapshot_reason(table, half, 10) == VECTORIZER_RECREATED
    # ... and in the same incarnation it resumes with its first reason
    same = state("swapped", "snapshotting", topic="topic-a", ids={2}, reason=SLOT_DROPPED)
    assert resumes_snapshot(same, table, "id-1", 10)
    assert snapshot_reason(table, same, 10) == SLOT_DROPPED


def test_a_lost_slot_resyncs_what_it_streamed_and_a_slot_gone_with_the_last_vectorizer_does_not() -> None:
    tables = desired_tables([vectorizer(1, "kept"), vectorizer(7, "again")], "p", "db").tables
    kept, again = ("public", "kept"), ("public", "again")
    oids = {kept: 10, again: 11}
    # only "again" was recorded, for a vectorizer dropped since: the slot went with it
    gone_with_last = {again: state("again", oid=11, ids={2})}
    assert not slot_lost(tables, gone_with_last, oids)
    assert snapshot_reason(tables[again], gone_with_last[again], 11) == VECTORIZER_RECREATED
    assert snapshot_reason(tables[kept], None, 10) == FIRST
    # "kept" still wanted in the same incarnation: the slot was lost
    lost = {kept: state("kept", oid=10, ids={1})}
    assert slot_lost(tables, lost, oids)
    assert snapshot_reason(tables[kept], lost[kept], 10, slot_gone=SLOT_DROPPED) == SLOT_DROPPED
    assert snapshot_reason(tables[kept], lost[kept], 10, slot_gone=SLOT_INVALIDATED) == SLOT_INVALIDATED
    assert snapshot_reason(tables[again], None, 11, slot_gone=SLOT_DROPPED) == FIRST
    assert snapshot_reason(tables[again], None, 11, topic_lost=True) == BROKER_LOST
    # streaming on, nothing to do
    assert snapshot_reason(tables[kept], lost[kept], 10) is None

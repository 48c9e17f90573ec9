"""The connector's reconciliation decisions, without a database or a broker."""

from __future__ import annotations

from connector.reconcile import (
    SlotAction,
    SourceTable,
    desired_tables,
    forgotten,
    lost_topics,
    needing_snapshot,
    resumes_snapshot,
    slot_action,
    stream_plan,
)
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
          stream_from: int = 100) -> TableState:
    return TableState("public", table, topic, topic_id, status, stream_from, 90, None, 0, None)


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


def test_snapshot_forget_and_stream_decisions() -> None:
    tables = desired_tables([vectorizer(1, "new"), vectorizer(2, "half"), vectorizer(3, "done")],
                            "p", "db").tables
    states = {("public", "half"): state("half", "snapshotting", stream_from=50),
              ("public", "done"): state("done", stream_from=70),
              ("public", "dropped"): state("dropped")}
    assert forgotten(tables, states) == {("public", "dropped")}
    assert [t.table for t in needing_snapshot(tables, states)] == ["new", "half"]
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

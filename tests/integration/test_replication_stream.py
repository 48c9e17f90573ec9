"""ReplicationStream + pgoutput decoder + value renderer against a real Postgres.

Covers: slot creation with an exported snapshot (the snapshot sees exactly the rows before the
slot, the stream exactly the changes after), every column type the renderer maps, the unchanged
TOAST marker, key-only deletes under REPLICA IDENTITY DEFAULT, truncate, increasing commit LSNs,
and feedback moving ``confirmed_flush_lsn`` so a reconnect resumes after it.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from connector.pgoutput import (
    UNCHANGED_TOAST,
    Begin,
    Commit,
    Delete,
    Insert,
    PgOutputMessage,
    Relation,
    Truncate,
    Type,
    Update,
    decode_message,
)
from connector.replication import ReplicationError, ReplicationStream
from connector.values import ValueRenderer
from pgai_orm.lsn import parse_lsn
from tests.support import polling

PUBLICATION = "test_replication_pub"
DEADLINE_S = 30.0
T = TypeVar("T")

SCHEMA = """
CREATE TYPE mood AS ENUM ('happy', 'sad');
CREATE TABLE every_type (
    id bigint PRIMARY KEY,
    i2 smallint, i4 integer, f4 real, f8 double precision, num numeric, flag boolean,
    t text, vc varchar(20), ch char(5), ts timestamptz, tsn timestamp, d date, tm time,
    ttz timetz, iv interval, u uuid, j json, jb jsonb, by bytea, tags text[], grid int[],
    m mood, moods mood[], big text
);
ALTER TABLE every_type ALTER COLUMN big SET STORAGE EXTERNAL;  -- out of line, uncompressed
CREATE PUBLICATION test_replication_pub FOR TABLE every_type;
"""

FULL_ROW = """
INSERT INTO every_type VALUES (
    2, -32768, 2147483647, 1.5, 'NaN', 1234567890123456789012345678901234567890.0000000001, true,
    E'h\\u00e9llo "q" \\\\ end', 'varchar', 'ab', '2024-01-02 03:04:05.123456+02',
    '2024-01-02 03:04:05.5', '2024-01-02', '03:04:05', '03:04:05.25+02', '1 day 2 hours 3.5 seconds',
    'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"a": [1, 2.5, null]}', '{"b": {"c": true}}',
    '\\x00ff10', ARRAY['plain', 'with space', 'a,comma', 'say "hi"', 'back\\slash', NULL, 'NULL', ''],
    '{{1,2},{3,NULL}}', 'happy', '{happy,sad}', repeat('x', 10000)
)
"""

EXPECTED_FULL_ROW: dict[str, Any] = {
    "id": 2,
    "i2": -32768,
    "i4": 2147483647,
    "f4": 1.5,
    "f8": "NaN",
    "num": "1234567890123456789012345678901234567890.0000000001",
    "flag": True,
    "t": 'h\u00e9llo "q" \\ end',
    "vc": "varchar",
    "ch": "ab   ",
    "ts": "2024-01-02T01:04:05.123456+00:00",
    "tsn": "2024-01-02T03:04:05.500000",
    "d": "2024-01-02",
    "tm": "03:04:05",
    "ttz": "03:04:05.250000+02:00",
    "iv": "P1DT2H3.5S",
    "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    "j": {"a": [1, 2.5, None]},
    "jb": {"b": {"c": True}},
    "by": base64.b64encode(b"\x00\xff\x10").decode(),
    "tags": ["plain", "with space", "a,comma", 'say "hi"', "back\\slash", None, "NULL", ""],
    "grid": [[1, 2], [3, None]],
    "m": "happy",
    "moods": ["happy", "sad"],
    "big": "x" * 10000,
}


def wait_for(condition: Callable[[], Any], what: str, timeout: float = DEADLINE_S) -> Any:
    return polling.wait_for(condition, what, timeout, interval=0.05)


def read_until_commits(stream: ReplicationStream, commits: int) -> list[tuple[int, PgOutputMessage]]:
    """Read (start LSN, message) pairs until ``commits`` Commit messages arrived."""
    out: list[tuple[int, PgOutputMessage]] = []
    deadline = time.monotonic() + DEADLINE_S
    while sum(type(m) is Commit for _, m in out) < commits:
        assert time.monotonic() < deadline, f"only {out!r} arrived before the deadline"
        for data in stream.read_batch(max_messages=100, timeout=0.5):
            out.append((data.start_lsn, decode_message(data.payload)))
    return out


def slot_for(url: str) -> str:
    """Slot names are cluster-wide: derive one from the per-test database so tests never share."""
    return f"{conninfo_to_dict(url)['dbname']}_slot"


def slot_state(url: str) -> tuple[int, bool] | None:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT confirmed_flush_lsn::text, active FROM pg_replication_slots WHERE slot_name = %s",
            (slot_for(url),),
        ).fetchone()
    return None if row is None else (parse_lsn(row[0]), row[1])


def drop_slot(url: str) -> None:
    """Drop the slot once its walsender has let go of it (it exits shortly after we close)."""
    if slot_state(url) is None:
        return
    wait_for(lambda: not slot_state(url)[1], "the slot to become inactive")  # type: ignore[index]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_drop_replication_slot(%s)", (slot_for(url),))


@pytest.fixture
def source_url(fresh_database_url: str) -> Iterator[str]:
    with psycopg.connect(fresh_database_url, autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute("INSERT INTO every_type (id, t) VALUES (1, 'before the slot')")
    yield fresh_database_url
    drop_slot(fresh_database_url)


def test_stream_decodes_every_change_and_feedback_confirms(source_url: str) -> None:
    stream = ReplicationStream.open(source_url, slot_for(source_url), [PUBLICATION])
    try:
        consistent_lsn, snapshot_name = stream.create_slot(export_snapshot=True)
        assert consistent_lsn > 0 and snapshot_name

        # Import the exported snapshot before the replication connection does anything else.
        snapshot = psycopg.connect(source_url)
        snapshot.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        snapshot.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_name)))

        with psycopg.connect(source_url, autocommit=True) as writer:
            with writer.transaction():
                writer.execute(FULL_ROW)
                writer.execute("INSERT INTO every_type (id) VALUES (3)")  # all NULLs
            writer.execute("UPDATE every_type SET i4 = 5, t = 'changed' WHERE id = 2")
            writer.execute("DELETE FROM every_type WHERE id = 3")

            # The snapshot shows exactly the row written before the slot, none written after.
            # (Read before the TRUNCATE: it is not MVCC-safe and would wait for this reader.)
            rows = snapshot.execute("SELECT id FROM every_type ORDER BY id").fetchall()
            snapshot.rollback()
            snapshot.close()
            assert [r[0] for r in rows] == [1]

            writer.execute("TRUNCATE every_type")

        stream.start()
        messages = read_until_commits(stream, commits=4)
    except BaseException:
        stream.close()
        raise

    try:
        renderer = ValueRenderer()
        relations: dict[int, Relation] = {}
        changes: list[PgOutputMessage] = []
        begins: list[Begin] = []
        commits: list[Commit] = []
        for _, msg in messages:
            if isinstance(msg, Relation):
                relations[msg.relation_id] = msg
            elif isinstance(msg, Type):
                renderer.register_type(msg)
            elif isinstance(msg, Begin):
                begins.append(msg)
            elif isinstance(msg, Commit):
                commits.append(msg)
            else:
                changes.append(msg)

        (relation,) = relations.values()
        assert (relation.namespace, relation.name, relation.replica_identity) == ("public", "every_type", "d")
        assert [c.name for c in relation.columns] == list(EXPECTED_FULL_ROW)
        assert [c.name for c in relation.columns if c.is_key] == ["id"]
        columns = relation.columns

        assert [type(m) for m in changes] == [Insert, Insert, Update, Delete, Truncate]
        insert_full, insert_nulls, update, delete, truncate = changes
        assert all(m.relation_id == relation.relation_id for m in changes[:4])  # type: ignore[union-attr]

        # No change from before the slot: the snapshot owns row 1.
        assert isinstance(insert_full, Insert)
        assert renderer.render_row(columns, insert_full.new) == EXPECTED_FULL_ROW
        assert isinstance(insert_nulls, Insert)
        assert renderer.render_row(columns, insert_nulls.new) == {
            name: (3 if name == "id" else None) for name in EXPECTED_FULL_ROW
        }

        # The untouched out-of-line text is not sent: the marker, not None and not "".
        assert isinstance(update, Update)
        assert update.old is None
        row = renderer.render_row(columns, update.new)
        assert row["big"] is UNCHANGED_TOAST
        assert {k: v for k, v in row.items() if k != "big"} == {
            **{k: v for k, v in EXPECTED_FULL_ROW.items() if k != "big"}, "i4": 5, "t": "changed"
        }

        # REPLICA IDENTITY DEFAULT: a delete carries the key only.
        assert isinstance(delete, Delete)
        assert delete.old_kind == "K"
        assert renderer.render_row(columns, delete.old) == {
            name: (3 if name == "id" else None) for name in EXPECTED_FULL_ROW
        }

        assert isinstance(truncate, Truncate)
        assert truncate.relation_ids == (relation.relation_id,)
        assert (truncate.cascade, truncate.restart_identity) == (False, False)

        # Transactions: begin/commit pairs agree, LSNs increase, all after the slot's start.
        assert len(begins) == len(commits) == 4
        for begin, commit in zip(begins, commits, strict=True):
            assert begin.final_lsn == commit.commit_lsn
            assert begin.commit_time == commit.commit_time
            assert consistent_lsn <= commit.commit_lsn < commit.end_lsn
        assert [c.commit_lsn for c in commits] == sorted({c.commit_lsn for c in commits})
        data_lsns = [lsn for lsn, m in messages if isinstance(m, (Insert, Update, Delete, Truncate))]
        assert data_lsns == sorted(data_lsns) and all(lsn > 0 for lsn in data_lsns)

        # Feedback: confirming the second transaction moves confirmed_flush_lsn there.
        confirm = commits[1].end_lsn
        stream.send_feedback(confirm)
        confirmed = wait_for(
            lambda: (s := slot_state(source_url)) and s[0] >= confirm and s[0],
            "confirmed_flush_lsn to reach the feedback",
        )
        assert confirmed == confirm
        stream.send_feedback(commits[0].end_lsn)  # lower values never move it back
        assert stream.flushed_lsn == confirm
    finally:
        stream.close()

    # A new stream on the slot resumes after the confirmed LSN: transactions 3 and 4 only.
    with ReplicationStream.open(source_url, slot_for(source_url), [PUBLICATION]) as resumed:
        resumed.start()
        again = [m for _, m in read_until_commits(resumed, commits=2)]
        assert [type(m) for m in again if isinstance(m, (Insert, Update, Delete, Truncate))] == [
            Delete, Truncate
        ]
        assert [m.commit_lsn for m in again if isinstance(m, Commit)] == [
            c.commit_lsn for c in commits[2:]
        ]


def test_read_batch_is_bounded_and_returns_empty_when_idle(source_url: str) -> None:
    with ReplicationStream.open(source_url, slot_for(source_url), [PUBLICATION]) as stream:
        stream.create_slot(export_snapshot=False)
        with (
            ReplicationStream.open(source_url, slot_for(source_url), [PUBLICATION]) as other,
            pytest.raises(ReplicationError, match="already exists"),
        ):
            other.create_slot()
        with psycopg.connect(source_url, autocommit=True) as writer:
            writer.execute("INSERT INTO every_type (id) SELECT g FROM generate_series(10, 59) g")
        stream.start()
        batches: list[int] = []
        decoded: list[PgOutputMessage] = []
        deadline = time.monotonic() + DEADLINE_S
        while not decoded or type(decoded[-1]) is not Commit:
            assert time.monotonic() < deadline, "the insert transaction did not arrive"
            batch = stream.read_batch(max_messages=7, timeout=0.5, linger=0.05)
            batches.append(len(batch))
            decoded.extend(decode_message(m.payload) for m in batch)
        assert max(batches) <= 7
        assert sum(type(m) is Insert for m in decoded) == 50
        assert [type(m) for m in decoded].count(Commit) == 1
        started = time.monotonic()
        assert stream.read_batch(max_messages=10, timeout=0.3) == []
        assert time.monotonic() - started >= 0.25


def test_keepalives_are_answered_while_idle(source_url: str) -> None:
    """With a 1 s wal_sender_timeout the server drops a client that ignores its keepalives;
    a stream idling for several timeouts must survive and still deliver afterwards."""
    separator = "&" if "?" in source_url else "?"
    url = f"{source_url}{separator}options=-c%20wal_sender_timeout%3D1000"
    with ReplicationStream.open(url, slot_for(source_url), [PUBLICATION], status_interval=30.0) as stream:
        stream.create_slot(export_snapshot=False)
        stream.start()
        idle_until = time.monotonic() + 3.5
        while time.monotonic() < idle_until:
            assert stream.read_batch(timeout=idle_until - time.monotonic()) == []
        assert stream.wal_end > 0  # keepalives arrived and were read
        with psycopg.connect(source_url, autocommit=True) as writer:
            writer.execute("INSERT INTO every_type (id) VALUES (100)")
        decoded = [m for _, m in read_until_commits(stream, commits=1)]
        assert [m.new[0] for m in decoded if isinstance(m, Insert)] == ["100"]

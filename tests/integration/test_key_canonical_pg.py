"""Keys canonical by value, with Postgres as the judge of equality.

For each key type, a pair of inputs that Postgres says are equal (``a = b``) or not: both are
written by the type's output function (under ``SESSION_OPTIONS``, as pgoutput writes them) and
rendered by the real key renderer; equal pairs must give identical key bytes, unequal ones
different bytes, and every key must cast back (``jsonb_populate_record``, as the store does it, in
a session without our settings) to a value equal to the source's. Then the same pairs go through
a real pgoutput slot (insert ``a``, ``UPDATE ... SET id = b``) and the snapshot reader: an update to
an equal key is one ``update`` under the insert's key, the snapshot reads the same bytes. Last,
connector and worker as separate processes on a numeric key: ``SET id = 1.50 WHERE id = 1.5``
among updates and deletes leaves the store equal to the source, with no worker restart.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from kafka import KafkaConsumer, TopicPartition
from psycopg import sql
from psycopg.types.string import TextLoader

from connector.events import ChangeEncoder, Record
from connector.pgoutput import Insert, Relation, Type, Update, decode_message
from connector.snapshot import TableReader
from connector.values import SESSION_OPTIONS, ValueRenderer, describe_types
from infra import pgadmin
from infra.faults import TEXT, Pipeline
from pgai_orm.events import TRUNCATE_KEY, Transaction, canonical_key, decode_event
from pgai_orm.names import topic_name
from tests.support.configs import local_config
from tests.support.polling import wait_for
from tests.support.vectorizers import create_vectorizer

SETUP = """
CREATE EXTENSION IF NOT EXISTS citext;
CREATE TYPE mood AS ENUM ('happy', 'sad');
CREATE DOMAIN price AS numeric;
CREATE DOMAIN label AS char(6);
"""

# (type, a, b, whether Postgres says a = b); a and b are input texts, bound as parameters
PAIRS: list[tuple[str, str, str, bool]] = [
    ("numeric", "1.5", "1.50", True),
    ("numeric", "2", "2.000", True),
    ("numeric", "-0.0", "0", True),
    ("numeric", "1e2", "100.0", True),
    ("numeric", "NaN", "nan", True),
    ("numeric", "1.5", "1.51", False),
    ("numeric", "0.1", "0.10000000000000000000000001", False),
    ("numeric(10,3)", "1.5", "1.50", True),
    ("float8", "0", "-0", True),
    ("float8", "NaN", "nan", True),
    ("float8", "1.5", "1.50", True),
    ("float8", "0", "1e-300", False),
    ("float4", "-0", "0", True),
    ("float4", "1.1", "1.10", True),
    ("int2", "+7", "07", True),
    ("int4", "7", "8", False),
    ("int8", "-0", "0", True),
    ("oid", "012", "10", True),  # oidin reads C literals: 012 is octal
    ("bool", "t", "true", True),
    ("bool", "yes", "on", True),
    ("bool", "t", "f", False),
    ("text", "a", "A", False),
    ("text", "a", "a ", False),
    ("varchar(10)", "abc", "abc", True),
    ("bpchar", "a", "a  ", True),
    ("bpchar", "a", "a\t", False),
    ("char(4)", "a", "a  ", True),
    ("char(4)", "a", " a", False),
    ("name", "abc", "abc", True),
    ("bytea", "\\x0102", "\\001\\002", True),
    ("bytea", "\\x01", "\\x0100", False),
    ("uuid", "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", "{a0eebc999c0b4ef8bb6d6bb9bd380a11}", True),
    ("timestamptz", "2024-01-02 03:04:05+05:30", "2024-01-01 21:34:05Z", True),
    ("timestamptz", "2024-01-02 03:04:05.50+00", "2024-01-02 03:04:05.5-00:00", True),
    ("timestamptz", "infinity", "Infinity", True),
    ("timestamptz", "2024-01-02 03:04:05+01", "2024-01-02 03:04:05+00", False),
    ("timestamp", "2024-01-02 03:04:05", "2024-01-02T03:04:05.000", True),
    ("date", "2024-01-02", "20240102", True),
    ("time", "03:04:05", "03:04:05.000000", True),
    ("time", "24:00", "00:00", False),
    ("timetz", "12:00+01", "12:00:00.000+01:00", True),
    ("timetz", "12:00+01", "11:00+00", False),  # timetz equality compares the zone as well
    ("interval", "1 mon", "30 days", True),
    ("interval", "1 day", "24 hours", True),
    ("interval", "1 year", "360 days", True),
    ("interval", "-1 days +2 hours", "-22 hours", True),
    ("interval", "1 mon -1 sec", "29 days 23:59:59", True),
    ("interval", "1 mon", "31 days", False),
    ("interval", "1.5 seconds", "1500 milliseconds", True),
    ("inet", "::ffff:1.2.3.4", "::ffff:102:304", True),
    ("inet", "1.2.3.4", "1.2.3.4/32", True),
    ("inet", "2001:DB8::1", "2001:db8:0:0:0:0:0:1", True),
    ("inet", "1.2.3.4/24", "1.2.3.4", False),
    ("cidr", "10.0.0.0/8", "10/8", True),
    ("macaddr", "08:00:2b:01:02:03", "08002B010203", True),
    ("money", "12.5", "$12.50", True),
    ("bit(4)", "1010", "1010", True),
    ("jsonb", '{"a": 1.0}', '{"a":1}', True),
    ("jsonb", '{"b": 1, "a": [1.50, "x"]}', '{"a":[1.5,"x"],"b":2,"b":1.00}', True),
    ("jsonb", '{"a": 1}', '{"a": "1"}', False),
    ("jsonb", '{"a": 0.1}', '{"a": 0.10000000000000000000000001}', False),
    ("numrange", "[1.50,2.0)", "[1.5,2)", True),
    ("numrange", "[1.5,2)", "(1.5,2)", False),
    ("nummultirange", "{[1.50,2.0), [3,4)}", "{[1.5,2),[3.0,4.00)}", True),
    ("int4range", "[1,3)", "[1,2]", True),
    ("numeric[]", "{1.5,2}", "{1.50,2.0}", True),
    ("numeric[]", "[0:1]={1.5,2}", "[0:1]={1.50,2.0}", True),
    ("numeric[]", "{{1.5},{2}}", "{{1.50},{2.0}}", True),
    ("int4[]", "[0:1]={1,2}", "{1,2}", False),
    ("float8[]", "{-0,1}", "{0,1}", True),
    ("bpchar[]", '{"a  ",b}', '{a,"b "}', True),
    ("interval[]", "{1 mon,1 day}", "{30 days,24 hours}", True),
    ("bytea[]", '{"\\\\x01"}', '{"\\\\001"}', True),
    ("text[]", '{"a b",NULL}', '{"a b",NULL}', True),
    ("mood", "happy", "happy", True),
    ("mood", "happy", "sad", False),
    ("price", "1.5", "1.50", True),
    ("price[]", "{1.5,2}", "{1.50,2.0}", True),
    ("label", "ab", "ab    ", True),
    ("citext", "Hello", "hELLO", True),
    ("citext", "a", "b", False),
    ("citext[]", "{Ab,c}", "{aB,C}", True),
]

IDS = [f"{i}-{t}-{'eq' if eq else 'ne'}" for i, (t, _, _, eq) in enumerate(PAIRS)]


def options_conn(url: str) -> psycopg.Connection[Any]:
    """A session like the replication stream's and the snapshot's: our settings."""
    return psycopg.connect(url, autocommit=True, options=SESSION_OPTIONS)


def type_oid(conn: psycopg.Connection[Any], type_: str) -> int:
    row = conn.execute("SELECT %s::regtype::oid", (type_,)).fetchone()
    assert row is not None
    return int(row[0])


def output_text(conn: psycopg.Connection[Any], type_: str, literal: str) -> str:
    """The text the type's output function writes (what pgoutput sends)."""
    cur = conn.cursor()
    cur.adapters.register_loader(type_oid(conn, type_), TextLoader)
    row = cur.execute(sql.SQL("SELECT %s::{}").format(sql.SQL(type_)), (literal,)).fetchone()
    assert row is not None
    return str(row[0])


@pytest.fixture(scope="module")
def typed_db(database_url: str) -> Iterator[str]:
    with pgadmin.temporary_database(database_url, prefix="keys") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(SETUP)
        yield url


def test_postgres_equal_values_render_to_one_key_and_the_key_casts_back(typed_db: str) -> None:
    failures = []
    with options_conn(typed_db) as ours, psycopg.connect(typed_db, autocommit=True) as plain:
        renderer = ValueRenderer()
        for i, ((type_, a, b, equal), ident) in enumerate(zip(PAIRS, IDS, strict=True)):
            cast, record = sql.SQL(type_), sql.Identifier(f"rec_{i}")
            said = ours.execute(sql.SQL("SELECT %s::{t} = %s::{t}").format(t=cast), (a, b)).fetchone()
            assert said is not None
            assert said[0] is equal, f"{ident}: Postgres says {a!r} = {b!r} is {said[0]}"
            oid = type_oid(ours, type_)
            renderer.learn_key_types([oid], lambda oids: describe_types(ours, oids))
            render = renderer.key_renderer_for(oid)
            plain.execute(sql.SQL("CREATE TABLE {} (k {})").format(record, cast))
            keys = []
            for literal in (a, b):
                text = output_text(ours, type_, literal)
                key = canonical_key({"k": render(text)})
                keys.append(key)
                # the store's way back: JSON key -> typed value, in a session without our settings
                back = plain.execute(
                    sql.SQL("SELECT (jsonb_populate_record(NULL::{r}, %s::jsonb)).k = %s::{t}")
                    .format(r=record, t=cast), (key.decode(), literal)).fetchone()
                if back is None or back[0] is not True:
                    failures.append(f"{ident}: key {key!r} of {text!r} does not cast back")
            if (keys[0] == keys[1]) is not equal:
                failures.append(f"{ident}: {a!r} / {b!r} -> {keys[0]!r} / {keys[1]!r}")
    assert not failures, "\n".join(failures)


# --- through a real pgoutput slot and the snapshot reader ----------------------------------------

TXN = Transaction(1, "2026-01-01T00:00:00+00:00", 1)


def test_stream_and_snapshot_give_equal_keys_one_key(typed_db: str) -> None:
    slot, pub = f"keys_{uuid.uuid4().hex[:8]}", f"keys_pub_{uuid.uuid4().hex[:8]}"
    tables = [f"pk_{i}" for i in range(len(PAIRS))]
    with options_conn(typed_db) as conn:
        for table, (type_, _, _, _) in zip(tables, PAIRS, strict=True):
            conn.execute(sql.SQL("CREATE TABLE {} (id {} PRIMARY KEY, n int)").format(
                sql.Identifier(table), sql.SQL(type_)))
        conn.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
            sql.Identifier(pub), sql.SQL(", ").join(map(sql.Identifier, tables))))
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
        try:
            for table, (type_, a, b, _) in zip(tables, PAIRS, strict=True):
                t, cast = sql.Identifier(table), sql.SQL(type_)
                conn.execute(sql.SQL("INSERT INTO {} VALUES (%s::{}, 1)").format(t, cast), (a,))
                conn.execute(sql.SQL("UPDATE {t} SET id = %s::{c}, n = 2 WHERE id = %s::{c}")
                             .format(t=t, c=cast), (b, a))
            # decoded in this session: the output functions run under SESSION_OPTIONS, as in
            # the connector's walsender
            changes = conn.execute(
                "SELECT data FROM pg_logical_slot_get_binary_changes(%s, NULL, NULL,"
                " 'proto_version', '1', 'publication_names', %s)", (slot, pub)).fetchall()
        finally:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))

        encoder = ChangeEncoder({("public", t): ["id"] for t in tables},
                                describe=lambda oids: describe_types(conn, oids))
        per_table: dict[str, list[Record]] = {t: [] for t in tables}
        for (data,) in changes:
            msg = decode_message(bytes(data))
            if isinstance(msg, Relation):
                encoder.relation(msg)
            elif isinstance(msg, Type):
                encoder.type(msg)
            elif isinstance(msg, Insert):
                per_table[_name(encoder, msg.relation_id)] += encoder.insert(msg, 10, TXN)
            elif isinstance(msg, Update):
                per_table[_name(encoder, msg.relation_id)] += encoder.update(msg, 20, TXN)

        failures = []
        for table, (_, a, b, equal), ident in zip(tables, PAIRS, IDS, strict=True):
            records = per_table[table]
            ops = [(r.key, None if r.value is None else getattr(decode_event(r.value), "op", None))
                   for r in records]
            reader = TableReader(conn, "public", table, ["id"])
            ((snap_key, _row, _texts),) = [row for chunk in reader.chunks(None, 10) for row in chunk]
            snapshot = canonical_key(snap_key)
            first = ops[0][0] if ops else None
            want: list[tuple[bytes | None, str | None]]
            if equal:
                want = [(first, "insert"), (first, "update")]
                want_snapshot = first
            else:
                last = ops[-1][0] if ops else None
                want = [(first, "insert"), (first, "delete"), (first, None), (last, "insert")]
                want_snapshot = last
                if first == last:
                    failures.append(f"{ident}: {a!r} and {b!r} share the key {first!r}")
            if ops != want:
                failures.append(f"{ident}: stream gave {ops}, wanted {want}")
            if snapshot != want_snapshot:
                failures.append(f"{ident}: snapshot key {snapshot!r}, stream key {want_snapshot!r}")
    assert not failures, "\n".join(failures)


def read_topic(servers: str, topic: str) -> list[tuple[int, bytes, bytes | None]]:
    """``(partition, key, value)`` of every record of ``topic`` up to the high-water marks."""
    consumer = KafkaConsumer(bootstrap_servers=servers, group_id=None, enable_auto_commit=False,
                             consumer_timeout_ms=500)
    try:
        parts = wait_for(lambda: consumer.partitions_for_topic(topic), f"topic {topic}", 60)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        out: list[tuple[int, bytes, bytes | None]] = []

        def at_high_water() -> bool:
            for tp, batch in consumer.poll(timeout_ms=200, max_records=100_000).items():
                out.extend((tp.partition, r.key, r.value) for r in batch)
            marks = {tp: consumer.highwater(tp) for tp in tps}
            return all(m is not None and consumer.position(tp) >= m for tp, m in marks.items())

        wait_for(at_high_water, f"{topic} read to its high-water marks", 60)
        return out
    finally:
        consumer.close()


def _name(encoder: ChangeEncoder, relation_id: int) -> str:
    table = encoder.table_of(relation_id)
    assert table is not None
    return table[1]


# --- connector and worker as processes -----------------------------------------------------------


def test_numeric_key_rewritten_to_an_equal_value_keeps_the_store_equal_to_the_source(
        fresh_database_url: str, kafka_bootstrap_servers: str, tmp_path: Path) -> None:
    """The incident: ``UPDATE t SET id = 1.50 WHERE id = 1.5`` gave two Kafka keys for one row,
    on different partitions; the old key's delete, applied after the insert, lost the chunks.
    Keys are quarters (exact in binary, so the audit's float and Decimal keys compare)."""
    url, rng = fresh_database_url, random.Random(1250)
    table = f"prices_{uuid.uuid4().hex[:8]}"
    config = local_config(dimensions=64)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (id numeric PRIMARY KEY, title text, content text,"
                             " views int DEFAULT 0)").format(sql.Identifier(table)))
    vectorizer_id = create_vectorizer(url, table, config)
    pipeline = Pipeline(url, kafka_bootstrap_servers, "public", table, vectorizer_id, config,
                        f"k{uuid.uuid4().hex[:6]}", tmp_path, partitions=4)
    t = sql.Identifier(table)

    def content() -> str:
        return f"{rng.choice(['alpha', 'beta', 'gamma', 'delta'])} {rng.random():.6f}. " + TEXT

    ids = [f"{i}.5" for i in range(1, 25)]
    for id_ in ids:  # before the connector: these arrive through the snapshot
        pipeline.sql(sql.SQL("INSERT INTO {} (id, title, content) VALUES (%s, %s, %s)").format(t),
                     (id_, f"doc {id_}", content()))
    pipeline.start()
    try:
        pipeline.wait_clean("the snapshot of numeric keys", timeout=120)
        for id_ in ids:  # the same value written anew: one row, one key
            pipeline.sql(sql.SQL("UPDATE {} SET id = %s WHERE id = %s").format(t), (id_ + "0", id_))
        for id_ in ids[::2]:  # ... then its text changes under the rewritten key
            pipeline.sql(sql.SQL("UPDATE {} SET content = %s WHERE id = %s").format(t),
                         (content(), id_ + "00"))
        for id_ in ids[1::4]:  # key rewritten and content changed in one statement
            pipeline.sql(sql.SQL("UPDATE {} SET id = %s, content = %s WHERE id = %s").format(t),
                         (id_ + "000", content(), id_))
        for id_ in ids[3::6]:  # deleted under yet another text of the same value
            pipeline.sql(sql.SQL("DELETE FROM {} WHERE id = %s").format(t), (id_ + "0000",))
        with psycopg.connect(url) as conn, conn.transaction():  # one transaction, two texts
            conn.execute(sql.SQL("UPDATE {} SET id = '1.50' WHERE id = '1.5'").format(t))
            conn.execute(sql.SQL("UPDATE {} SET content = %s WHERE id = '1.500'").format(t),
                         (content(),))
        pipeline.sql(sql.SQL("UPDATE {} SET id = 100.25 WHERE id = 2.5").format(t))  # a real change
        pipeline.sql(sql.SQL("INSERT INTO {} (id, title, content) VALUES ('4.50', 'back', %s)")
                     .format(t), (content(),))  # 4.5 was deleted above; it comes back
        audit = pipeline.wait_clean("numeric keys rewritten, updated and deleted", timeout=120)
        assert (audit.lost, audit.duplicated, audit.stale) == (0, 0, 0)
        assert audit.rows_checked == len(ids) - len(ids[3::6]) + 1
        assert not pipeline.sql("SELECT step, message FROM vectorizer.errors")
        store_schema, store_table = pipeline.store_table()
        stored_texts = {r[0] for r in pipeline.sql(sql.SQL("SELECT DISTINCT id::text FROM {}")
                                                  .format(sql.Identifier(store_schema, store_table)))}
        assert "100.25" in stored_texts and "2.5" not in stored_texts
        # the contract itself, on the topic: one row value, one key, one partition; the rewrites
        # are updates (the deletes are the SQL deletes and the one real key change)
        database = pipeline.sql("SELECT current_database()")[0][0]
        records = read_topic(kafka_bootstrap_servers,
                             topic_name(pipeline.prefix, database, "public", table))
        keys: dict[Decimal, set[tuple[bytes, int]]] = {}
        deletes = []
        for partition, key, value in records:
            if key == TRUNCATE_KEY:
                continue
            keys.setdefault(Decimal(orjson.loads(key)["id"]), set()).add((key, partition))
            if value is not None and orjson.loads(value)["op"] == "delete":
                deletes.append(Decimal(orjson.loads(key)["id"]))
        split = {row: found for row, found in keys.items() if len(found) != 1}
        assert not split, f"rows under more than one key or partition: {split}"
        assert sorted(deletes) == sorted([Decimal(i) for i in ids[3::6]] + [Decimal("2.5")])
    finally:
        pipeline.stop()
    log = (tmp_path / "worker.log").read_text(errors="replace")
    # one worker process that never restarted or crashed (no exit 70)
    assert log.count("worker starting:") == 1, log[-3000:]
    assert "crashed" not in log and "exited with" not in log, log[-3000:]

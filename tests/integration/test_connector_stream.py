"""The connector against a real Postgres and the embedded broker, run as a separate process.

Covers: inserts/updates/deletes/truncates in commit order per key with their LSNs, unchanged
TOAST marked, primary-key update as delete + insert, the initial snapshot under concurrent
writers (no gap, no duplicate state: replaying the topic like a processor gives the table), a
second table's vectorizer added while streaming, kill -9 and restart (every change at least
once), a hot standby taking over, broker loss (topics re-snapshotted) and the slot dropped with
the last vectorizer. Topics are read to the fetch high-water mark; every wait polls a condition
with a deadline.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from alembic.migration import MigrationContext
from alembic.operations import Operations
from kafka import KafkaConsumer, TopicPartition
from psycopg import sql
from sqlalchemy import create_engine

from connector.service import status
from infra.ports import free_port
from infra.urls import sqlalchemy_url
from pgai_orm.alembic import register_operations
from pgai_orm.lsn import parse_lsn
from pgai_orm.names import default_slot_name, topic_name
from tests.support import polling
from tests.support.vectorizers import create_vectorizer

ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 60.0

register_operations()


def wait_for(condition: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    return polling.wait_for(condition, what, timeout, interval=0.05)


def execute(url: str, query: Any, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def database_name(url: str) -> str:
    return execute(url, "SELECT current_database()")[0][0]


def drop_vectorizer(url: str, target_table: str) -> None:
    engine = create_engine(sqlalchemy_url(url))
    try:
        with engine.connect() as conn:
            Operations(MigrationContext.configure(conn)).drop_vectorizer(
                target_table=target_table, drop_all=True)
            conn.commit()
    finally:
        engine.dispose()


class ConnectorProcess:
    """``python -m connector.cli`` in its own process; its log goes to a file."""

    def __init__(self, url: str, servers: str, prefix: str, log_path: Path,
                 *extra: str) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        args = [
            sys.executable, "-m", "connector.cli", "--database-url", url,
            "--bootstrap-servers", servers, "--topic-prefix", prefix, "--partitions", "3",
            "--catalog-poll", "0.2", "--broker-check", "1", *extra,
        ]
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


@dataclass(frozen=True)
class Event:
    partition: int
    offset: int
    key: dict[str, Any]
    value: dict[str, Any] | None


def topic_for(url: str, prefix: str, table: str, schema: str = "public") -> str:
    return topic_name(prefix, database_name(url), schema, table)


def read_topic(servers: str, topic: str, timeout: float = WAIT_S) -> list[Event]:
    """Every record of ``topic`` up to the fetch high-water marks, per partition in order."""
    consumer = KafkaConsumer(bootstrap_servers=servers, group_id=None, enable_auto_commit=False,
                             consumer_timeout_ms=500)
    try:
        parts = wait_for(lambda: consumer.partitions_for_topic(topic), f"topic {topic}", timeout)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        out: list[Event] = []
        deadline = time.monotonic() + timeout
        while True:
            for tp, records in consumer.poll(timeout_ms=200, max_records=100_000).items():
                for r in records:
                    out.append(Event(tp.partition, r.offset, orjson.loads(r.key),
                                     None if r.value is None else orjson.loads(r.value)))
            marks = {tp: consumer.highwater(tp) for tp in tps}
            if all(m is not None and consumer.position(tp) >= m for tp, m in marks.items()):
                return out
            assert time.monotonic() < deadline, f"could not read {topic} to its high-water mark"
    finally:
        consumer.close()


def replay(events: list[Event]) -> dict[str, dict[str, Any]]:
    """Apply events like a processor: per key in partition order, skip lsn <= applied,
    truncate removes rows applied below it. Returns canonical key -> row (deleted rows absent)."""
    applied: dict[str, tuple[int, dict[str, Any] | None]] = {}
    truncated = 0
    for ev in sorted(events, key=lambda e: (e.partition, e.offset)):
        if ev.value is None:
            continue
        lsn = ev.value["lsn"]
        if ev.value["op"] == "truncate":
            truncated = max(truncated, lsn)
            continue
        key = orjson.dumps(ev.key, option=orjson.OPT_SORT_KEYS).decode()
        seen = applied.get(key)
        if (seen is not None and lsn <= seen[0]) or lsn < truncated:
            continue
        row = ev.value["row"]
        if row is not None and seen is not None and seen[1] is not None:
            for col in ev.value["unchanged_toast"]:
                row[col] = seen[1][col]
        applied[key] = (lsn, row)
    return {k: row for k, (lsn, row) in applied.items() if row is not None and lsn >= truncated}


def table_rows(url: str, table: str, key: str = "id") -> dict[str, dict[str, Any]]:
    rows = execute(url, sql.SQL("SELECT row_to_json(t)::text FROM {} t").format(sql.Identifier(table)))
    out = {}
    for (text,) in rows:
        row = orjson.loads(text)
        out[orjson.dumps({key: row[key]}).decode()] = row
    return out


def current_lsn(url: str) -> int:
    return parse_lsn(execute(url, "SELECT pg_current_wal_lsn()::text")[0][0])


def slot_row(url: str, slot: str) -> tuple[Any, ...] | None:
    rows = execute(url, "SELECT active_pid, confirmed_flush_lsn::text FROM pg_replication_slots"
                        " WHERE slot_name = %s", (slot,))
    return rows[0] if rows else None


def wait_confirmed(url: str, slot: str, target: int, timeout: float = WAIT_S) -> None:
    """Until the slot's confirmed_flush_lsn reaches ``target``: everything before it is in Kafka."""
    def reached() -> bool:
        row = slot_row(url, slot)
        return bool(row and row[1] and parse_lsn(row[1]) >= target)
    wait_for(reached, f"slot {slot} confirmed past {target:X}", timeout)


def wait_snapshots_done(url: str, tables: int, timeout: float = WAIT_S) -> None:
    def done() -> bool:
        try:
            rows = execute(url, "SELECT status FROM vectorizer.connector_tables")
        except psycopg.errors.UndefinedTable:
            return False
        return len(rows) == tables and all(r[0] == "streaming" for r in rows)
    wait_for(done, f"{tables} table snapshot(s) done", timeout)


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def connectors(tmp_path: Path):  # type: ignore[no-untyped-def]
    started: list[ConnectorProcess] = []

    def start(url: str, servers: str, prefix: str, *extra: str) -> ConnectorProcess:
        proc = ConnectorProcess(url, servers, prefix, tmp_path / f"connector-{len(started)}.log", *extra)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


def slot_of(url: str) -> str:
    return default_slot_name(database_name(url))


# --- tests -------------------------------------------------------------------------------------


def test_changes_arrive_in_commit_order_with_lsns(fresh_database_url: str, kafka_bootstrap_servers: str,
                                                   prefix: str, connectors) -> None:  # type: ignore[no-untyped-def]
    url, servers = fresh_database_url, kafka_bootstrap_servers
    execute(url, "CREATE TABLE docs (id int PRIMARY KEY, title text, content text)")
    execute(url, "ALTER TABLE docs ALTER COLUMN content SET STORAGE EXTERNAL")
    execute(url, "INSERT INTO docs VALUES (1, 'before', 'snapshot row')")
    create_vectorizer(url, "docs", template="$chunk")
    metrics_port = free_port()
    proc = connectors(url, servers, prefix, "--metrics-port", str(metrics_port))
    wait_snapshots_done(url, 1)
    big = "x" * 5000
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO docs VALUES (2, 'two', %s), (3, 'three', 'c3')", (big,))
        conn.execute("UPDATE docs SET title = 'two!' WHERE id = 2")  # content: unchanged TOAST
        conn.execute("UPDATE docs SET content = 'c3b' WHERE id = 3")
        conn.execute("UPDATE docs SET id = 30 WHERE id = 3")  # primary-key change
        conn.execute("DELETE FROM docs WHERE id = 1")
        conn.execute("TRUNCATE docs")
        conn.execute("INSERT INTO docs VALUES (4, 'after', 'truncate')")
        conn.execute("INSERT INTO docs VALUES (5, 'huge', repeat('y', 3000000))")  # > 1 MB event
    target = current_lsn(url)
    wait_confirmed(url, slot_of(url), target)
    events = read_topic(servers, topic_for(url, prefix, "docs"))
    assert "Traceback" not in proc.log(), proc.log()

    by_key: dict[str, list[Event]] = {}
    for ev in sorted(events, key=lambda e: (e.partition, e.offset)):
        by_key.setdefault(orjson.dumps(ev.key).decode(), []).append(ev)
    ops = {k: [(e.value["op"] if e.value else None) for e in evs] for k, evs in by_key.items()}
    assert ops['{"id":1}'] == ["read", "delete", None]
    assert ops['{"id":2}'] == ["insert", "update"]
    assert ops['{"id":3}'] == ["insert", "update", "delete", None]
    assert ops['{"id":30}'] == ["insert"]
    assert ops['{"id":4}'] == ["insert"]
    assert len(by_key['{"id":5}'][0].value["row"]["content"]) == 3_000_000
    # the snapshot closes with a truncate just below its read events (every snapshot is a
    # full resync); the source's TRUNCATE comes later, above them
    snapshot_lsn = by_key['{"id":1}'][0].value["lsn"]
    closing = [e for e in by_key['{"__truncate__":true}'] if e.value["lsn"] < snapshot_lsn]
    truncates = [e for e in by_key['{"__truncate__":true}'] if e.value["lsn"] > snapshot_lsn]
    assert sorted(e.partition for e in closing) == [0, 1, 2]  # every partition
    assert {e.value["lsn"] for e in closing} == {snapshot_lsn - 1}
    assert sorted(e.partition for e in truncates) == [0, 1, 2]  # every partition

    for evs in by_key.values():  # per key and partition (a truncate goes to every partition)
        for part in {e.partition for e in evs}:
            lsns = [e.value["lsn"] for e in evs if e.value and e.partition == part]
            assert lsns == sorted(lsns)
    two = by_key['{"id":2}']
    assert two[0].value["row"] == {"id": 2, "title": "two", "content": big}
    assert two[1].value["row"] == {"id": 2, "title": "two!"}
    assert two[1].value["unchanged_toast"] == ["content"]
    read = by_key['{"id":1}'][0].value
    assert read["lsn"] < two[0].value["lsn"] and read["row"] == {"id": 1, "title": "before", "content": "snapshot row"}
    pk_delete, pk_insert = by_key['{"id":3}'][2].value, by_key['{"id":30}'][0].value
    assert pk_delete["lsn"] == pk_insert["lsn"] and pk_insert["row"]["content"] == "c3b"
    ins = two[0].value
    assert ins["schema"] == "public" and ins["table"] == "docs" and ins["key"] == {"id": 2}
    assert ins["commit_lsn"] >= ins["lsn"] and ins["commit_time"].endswith("+00:00")
    trunc_lsn = truncates[0].value["lsn"]
    assert by_key['{"id":4}'][0].value["lsn"] > trunc_lsn
    assert replay(events) == table_rows(url, "docs")

    info = status(url)
    assert info["slot_exists"] and info["active"] and info["lag_bytes"] is not None
    (table_info,) = info["tables"]
    assert table_info["table"] == "docs" and table_info["status"] == "streaming"
    assert table_info["snapshot_rows"] == 1 and table_info["topic"] == topic_for(url, prefix, "docs")

    def scraped() -> str | None:
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2).read().decode()
        return text if 'vectorizer_connector_confirmed_lsn{slot="' in text and \
            "vectorizer_connector_slot_lag_bytes" in text and "vectorizer_connector_events_total" in text else None
    text = wait_for(scraped, "metrics")
    assert 'vectorizer_connector_snapshot_rows{slot=' in text




class Writers:
    """Threads that change a table in small multi-statement transactions until stopped."""

    def __init__(self, url: str, table: str, first_new_id: int, threads: int = 2) -> None:
        self.url, self.table = url, table
        self._next_id = first_new_id
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.commits = 0
        self.errors: list[BaseException] = []
        self._threads = [threading.Thread(target=self._run, args=(seed,), daemon=True)
                         for seed in range(threads)]

    def __enter__(self) -> Writers:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        assert not self.errors, self.errors

    def _new_id(self) -> int:
        with self._lock:
            self._next_id += 1
            return self._next_id

    def _run(self, seed: int) -> None:
        rnd = random.Random(seed)
        ident = sql.Identifier(self.table)
        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                while not self._stop.is_set():
                    try:
                        with conn.transaction():
                            conn.execute(sql.SQL("UPDATE {} SET v = v + 1, content = md5(random()::text)"
                                                 " WHERE id = %s").format(ident), (rnd.randrange(1, 3000),))
                            # an open transaction across the slot's consistent point: its
                            # changes have LSNs below it but it commits after it
                            conn.execute("SELECT pg_sleep(0.002)")
                            conn.execute(sql.SQL("INSERT INTO {} VALUES (%s, 'new', 0)").format(ident),
                                         (self._new_id(),))
                            conn.execute(sql.SQL("DELETE FROM {} WHERE id = %s").format(ident),
                                         (rnd.randrange(1, 3000),))
                            conn.execute(sql.SQL("UPDATE {} SET v = v + 1 WHERE id = %s").format(ident),
                                         (rnd.randrange(1, 3000),))
                        self.commits += 1
                    except psycopg.errors.DeadlockDetected:
                        continue
        except BaseException as exc:  # noqa: BLE001
            self.errors.append(exc)


def make_source(url: str, table: str, rows: int) -> None:
    ident = sql.Identifier(table)
    execute(url, sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, content text, v int NOT NULL)").format(ident))
    execute(url, sql.SQL("INSERT INTO {} SELECT g, md5(g::text), 0 FROM generate_series(1, %s) g").format(ident),
            (rows,))


def assert_topic_equals_table(url: str, servers: str, prefix: str, table: str,
                              unique_reads: bool = True) -> list[Event]:
    """Replaying the topic like a processor gives the table; with ``unique_reads`` no row was
    snapshotted twice (a crash may legitimately repeat the chunk in flight)."""
    events = read_topic(servers, topic_for(url, prefix, table))
    reads: dict[str, int] = {}
    for ev in events:
        if ev.value and ev.value["op"] == "read":
            k = orjson.dumps(ev.key).decode()
            reads[k] = reads.get(k, 0) + 1
    assert not unique_reads or all(n == 1 for n in reads.values()), "a row was snapshotted twice"
    expected = table_rows(url, table)
    got = replay(events)
    missing = set(expected) - set(got)
    extra = set(got) - set(expected)
    wrong = [k for k in set(expected) & set(got) if expected[k] != got[k]]
    if missing or extra or wrong:
        sample = sorted(missing | extra | set(wrong))[0]
        history = [(e.partition, e.offset, e.value) for e in events
                   if orjson.dumps(e.key).decode() == sample]
        raise AssertionError(f"{len(missing)} missing, {len(extra)} extra, {len(wrong)} wrong;"
                             f" {sample}: table {expected.get(sample)}, events {history}")
    return events


def test_snapshots_under_concurrent_writers_and_second_table(
        fresh_database_url: str, kafka_bootstrap_servers: str, prefix: str, connectors) -> None:  # type: ignore[no-untyped-def]
    url, servers = fresh_database_url, kafka_bootstrap_servers
    make_source(url, "docs_a", 3000)
    make_source(url, "docs_b", 3000)
    create_vectorizer(url, "docs_a", template="$chunk")
    with Writers(url, "docs_a", 100_000) as wa, Writers(url, "docs_b", 100_000) as wb:
        wait_for(lambda: wa.commits > 20 and wb.commits > 20, "writers running")
        proc = connectors(url, servers, prefix, "--snapshot-chunk", "300")
        wait_snapshots_done(url, 1)
        create_vectorizer(url, "docs_b", template="$chunk")  # while streaming docs_a under load
        wait_snapshots_done(url, 2)
        commits = wa.commits + wb.commits
        wait_for(lambda: wa.commits + wb.commits > commits + 20, "more writes after both snapshots")
    wait_confirmed(url, slot_of(url), current_lsn(url))
    assert "Traceback" not in proc.log(), proc.log()
    assert_topic_equals_table(url, servers, prefix, "docs_a")
    events_b = assert_topic_equals_table(url, servers, prefix, "docs_b")
    # docs_b's stream events start after its snapshot point: every one is newer than the reads
    read_lsn = {e.value["lsn"] for e in events_b if e.value and e.value["op"] == "read"}
    assert len(read_lsn) == 1
    assert all(e.value["lsn"] > min(read_lsn) for e in events_b
               if e.value and e.value["op"] not in ("read", "truncate"))
    # ... and the snapshot's closing truncate lies just below them, on every partition
    closing = [e for e in events_b if e.value and e.value["op"] == "truncate"]
    assert sorted(e.partition for e in closing) == [0, 1, 2]
    assert {e.value["lsn"] for e in closing} == {min(read_lsn) - 1}
    # sent after the rows (no empty store while the reads arrive): last in its partition's reads
    for trunc in closing:
        assert all(e.offset < trunc.offset for e in events_b
                   if e.partition == trunc.partition and e.value and e.value["op"] == "read")

    # dropping one of two vectorizers: its publication goes, the other table keeps streaming
    drop_vectorizer(url, "docs_b_embedding_store")
    execute(url, "UPDATE docs_b SET v = -1 WHERE id > 0")
    wait_for(lambda: execute(url, "SELECT count(*) FROM vectorizer.connector_tables")[0][0] == 1,
             "docs_b forgotten by the connector")
    execute(url, "UPDATE docs_a SET v = -1 WHERE id > 0")
    wait_confirmed(url, slot_of(url), current_lsn(url))
    assert_topic_equals_table(url, servers, prefix, "docs_a")
    assert slot_row(url, slot_of(url)) is not None and "Traceback" not in proc.log(), proc.log()


class VersionWriter:
    """One thread committing ``UPDATE ... SET v = <n>`` one row at a time, remembering (id, n)."""

    def __init__(self, url: str, table: str, ids: int) -> None:
        self.url, self.table, self.ids = url, table, ids
        self.written: list[tuple[int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def __enter__(self) -> VersionWriter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        assert self.error is None, self.error

    def _run(self) -> None:
        query = sql.SQL("UPDATE {} SET v = %s WHERE id = %s").format(sql.Identifier(self.table))
        n = 0
        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                while not self._stop.is_set():
                    n += 1
                    row_id = n % self.ids + 1
                    conn.execute(query, (n, row_id))
                    self.written.append((row_id, n))
        except BaseException as exc:  # noqa: BLE001
            self.error = exc


def snapshot_rows_done(url: str) -> int:
    try:
        rows = execute(url, "SELECT rows_done, status FROM vectorizer.connector_tables")
    except psycopg.errors.UndefinedTable:
        return 0
    return rows[0][0] if rows and rows[0][1] == "snapshotting" else 0


def test_kill9_mid_snapshot_and_stream_then_restart_delivers_everything(
        fresh_database_url: str, kafka_bootstrap_servers: str, prefix: str, connectors) -> None:  # type: ignore[no-untyped-def]
    url, servers = fresh_database_url, kafka_bootstrap_servers
    make_source(url, "docs", 50_000)  # ~2.5 s of snapshot: time to catch it half done
    create_vectorizer(url, "docs", template="$chunk")
    with VersionWriter(url, "docs", 50_000) as writer:
        first = connectors(url, servers, prefix, "--snapshot-chunk", "200")
        wait_for(lambda: snapshot_rows_done(url) >= 1000, "snapshot under way")
        first.kill9()  # mid-snapshot, mid-stream
        second = connectors(url, servers, prefix, "--snapshot-chunk", "200")
        wait_snapshots_done(url, 1)
        written = len(writer.written)
        wait_for(lambda: len(writer.written) > written + 200, "writes after the restart")
        second.kill9()  # streaming only
        third = connectors(url, servers, prefix)
        written = len(writer.written)
        wait_for(lambda: len(writer.written) > written + 200, "writes after the second restart")
    wait_confirmed(url, slot_of(url), current_lsn(url))
    assert "rows (key ['" in second.log(), "the snapshot did not resume from its keyset position"
    assert "Traceback" not in third.log(), third.log()
    events = assert_topic_equals_table(url, servers, prefix, "docs", unique_reads=False)
    # the resumed snapshot's closing truncate lies below its first attempt's rows, not its own
    read_lsns = {e.value["lsn"] for e in events if e.value and e.value["op"] == "read"}
    assert len(read_lsns) == 2, read_lsns
    assert {e.value["lsn"] for e in events if e.value and e.value["op"] == "truncate"} == {min(read_lsns) - 1}
    seen = {(e.key["id"], e.value["row"]["v"]) for e in events if e.value and e.value["row"]}
    lost = [w for w in writer.written if w not in seen]
    assert not lost, f"{len(lost)} of {len(writer.written)} changes never arrived: {lost[:5]}"


def active_connector(procs: list[ConnectorProcess]) -> ConnectorProcess | None:
    active = [p for p in procs if p.proc.poll() is None and "connector active on slot" in p.log()]
    return active[0] if len(active) == 1 else None


def test_standby_takes_over_and_slot_goes_with_last_vectorizer(
        fresh_database_url: str, kafka_bootstrap_servers: str, prefix: str, connectors) -> None:  # type: ignore[no-untyped-def]
    url, servers = fresh_database_url, kafka_bootstrap_servers
    slot = slot_of(url)
    make_source(url, "docs", 10)
    create_vectorizer(url, "docs", template="$chunk")
    procs = [connectors(url, servers, prefix), connectors(url, servers, prefix)]
    first = wait_for(lambda: active_connector(procs), "one active connector")
    standby = procs[1 - procs.index(first)]
    wait_for(lambda: "waiting as standby" in standby.log(), "the other one waiting as standby")
    wait_snapshots_done(url, 1)
    first.kill9()
    wait_for(lambda: "connector active on slot" in standby.log(), "the standby taking over")
    execute(url, "INSERT INTO docs VALUES (11, 'after takeover', 0)")
    wait_confirmed(url, slot, current_lsn(url))
    assert_topic_equals_table(url, servers, prefix, "docs")

    drop_vectorizer(url, "docs_embedding_store")
    wait_for(lambda: slot_row(url, slot) is None, "the slot dropped with the last vectorizer")
    assert standby.proc.poll() is None  # idles, ready for the next vectorizer
    create_vectorizer(url, "docs", template="$chunk")
    wait_for(lambda: slot_row(url, slot) is not None, "a new slot for a new vectorizer")
    wait_snapshots_done(url, 1)


def test_broker_loss_resnapshots_the_tables(fresh_database_url: str, restartable_broker,  # type: ignore[no-untyped-def]
                                            prefix: str, connectors) -> None:
    url, servers = fresh_database_url, restartable_broker.bootstrap_servers
    make_source(url, "docs", 500)
    create_vectorizer(url, "docs", template="$chunk")
    proc = connectors(url, servers, prefix)
    wait_snapshots_done(url, 1)
    execute(url, "UPDATE docs SET v = 1 WHERE id <= 10")
    wait_confirmed(url, slot_of(url), current_lsn(url))
    restartable_broker.restart()  # memory-only: every topic is gone
    wait_for(lambda: "broker lost the topics" in proc.log(), "the connector noticing the loss")
    wait_snapshots_done(url, 1)
    execute(url, "UPDATE docs SET v = 2 WHERE id <= 5")
    wait_confirmed(url, slot_of(url), current_lsn(url))
    events = assert_topic_equals_table(url, servers, prefix, "docs")
    # recreated with the configured partitions, not the broker's auto-create default
    assert {e.partition for e in events} == {0, 1, 2}


def test_huge_transaction_streams_through_with_bounded_rss(
        fresh_database_url: str, kafka_bootstrap_servers: str, prefix: str, connectors) -> None:  # type: ignore[no-untyped-def]
    """300k rows of 500 bytes in one transaction (150 MB of payload): the connector's RSS grows
    by far less, because the publisher blocks while 50k events / 32 MiB are unacknowledged and
    the replication reader stops reading meanwhile. ``bench/connector.py --rows 1000000
    --per-tx 1000000`` runs the same at a million rows."""
    import psutil

    url, servers = fresh_database_url, kafka_bootstrap_servers
    rows = 300_000
    execute(url, "CREATE TABLE docs (id int PRIMARY KEY, content text)")
    create_vectorizer(url, "docs", template="$chunk")
    proc = connectors(url, servers, prefix)
    wait_snapshots_done(url, 1)
    process = psutil.Process(proc.proc.pid)
    baseline = process.memory_info().rss
    peak = baseline
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        execute(url, "INSERT INTO docs SELECT g, repeat(md5(g::text), 16) FROM generate_series(1, %s) g",
                (rows,))
        wait_confirmed(url, slot_of(url), current_lsn(url), timeout=300)
    finally:
        done.set()
        sampler.join()
    growth_mib = (peak - baseline) / 2**20
    consumer = KafkaConsumer(bootstrap_servers=servers, group_id=None, enable_auto_commit=False)
    try:
        topic = topic_for(url, prefix, "docs")
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)

        def high_water_marks() -> list[int] | None:
            consumer.poll(timeout_ms=200, max_records=1)  # a fetch response carries the marks
            found = [consumer.highwater(tp) for tp in tps]
            return None if None in found else found  # type: ignore[return-value]

        marks = wait_for(high_water_marks, "the topic's high-water marks")
    finally:
        consumer.close()
    assert sum(marks) >= rows, f"only {sum(marks)} events in the topic"
    print(f"\n{rows} rows in one transaction: connector RSS {baseline / 2**20:.0f} MiB before, "
          f"peak +{growth_mib:.0f} MiB")
    assert growth_mib < 120, f"connector RSS grew by {growth_mib:.0f} MiB for one transaction"

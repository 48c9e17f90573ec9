"""Benchmark: commit-to-searchable latency of the whole pipeline at a steady insert rate.

One client inserts rows at a fixed rate (default 200 rows/s for 30 s), one row per transaction,
and notes when each commit returned. A second connection polls the embedding store every
``--poll-ms`` and notes when each row's chunks appear (a batch's chunks are written in one
transaction, so the first chunk seen means the row is searchable). The latency of a row is the
difference: WAL -> connector -> Kafka -> worker (chunk, format, embed with the offline model)
-> store commit. A third thread reads the topic itself (group-less, 5 ms fetch wait) and notes
when each row's event arrives, which splits the latency into commit -> Kafka (the connector's
part) and Kafka -> store (the workers' part). All clocks are this process's monotonic clock.
The three threads share the GIL, so a commit can be stamped a few ms after it happened (a topic
event then looks older than its commit: ``commit_to_kafka_ms.min`` < 0 shows by how much); a
1 ms thread switch interval keeps that error small against latencies of hundreds of ms.

Usage::

    python bench/e2e.py [--rate 200] [--duration 30] [--workers 2]

Without ``DATABASE_URL`` it starts the embedded stack, a fresh database, ``vectorizer connector``
and ``--workers`` ``vectorizer worker`` processes (``infra.services.PipelineServices``, the demo's
settings: 2 s session timeout, 0.2 s batch window). With ``--external`` it uses the pipeline that
already runs against ``DATABASE_URL``/``KAFKA_BOOTSTRAP_SERVERS`` (e.g. docker compose) and only
adds, then drops, its own table and vectorizer. Prints a table and writes ``bench/results/e2e.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra import pgadmin
from infra.corpus import load_corpus
from infra.ops.render import render_table
from infra.services import DEV_SESSION_TIMEOUT_S, PipelineServices
from infra.stack import EmbeddedStack
from infra.urls import libpq_url

TABLE = "bench_e2e_posts"
STORE = "bench_e2e_posts_embedding_store"
MAX_CHARS = 2000  # long docstrings are cut so every row costs about the same


def create_vectorizer(database_url: str) -> None:
    """The bench table and its vectorizer, through the same Alembic operation users call."""
    from alembic.migration import MigrationContext
    from alembic.operations import Operations
    from sqlalchemy import create_engine

    from infra.urls import sqlalchemy_url
    from pgai_orm.alembic import register_operations
    from pgai_orm.configuration import (
        ChunkingRecursiveCharacterTextSplitterConfig,
        EmbeddingLocalConfig,
        FormattingPythonTemplateConfig,
        IndexingHnswConfig,
    )

    register_operations()
    engine = create_engine(sqlalchemy_url(database_url))
    try:
        with engine.begin() as conn:
            op: Any = Operations(MigrationContext.configure(conn))
            conn.exec_driver_sql(
                f"CREATE TABLE {TABLE} (id int PRIMARY KEY, title text NOT NULL, content text NOT NULL)")
            op.create_vectorizer(
                source=TABLE, target_table=STORE, view_table="bench_e2e_posts_embedding",
                embedding=EmbeddingLocalConfig(),
                chunking=ChunkingRecursiveCharacterTextSplitterConfig(
                    chunk_column="content", chunk_size=800, chunk_overlap=100),
                formatting=FormattingPythonTemplateConfig(template="$title - $chunk"),
                indexing=IndexingHnswConfig(),
            )
    finally:
        engine.dispose()


def drop_vectorizer(database_url: str) -> None:
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute("SELECT vectorizer.drop_vectorizer(NULL, %s, true, true)", (STORE,))
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")


@dataclass
class Tracker:
    """Commit times of inserted rows and the times their chunks were first seen."""

    committed: dict[int, float] = field(default_factory=dict)
    seen: dict[int, float] = field(default_factory=dict)
    in_kafka: dict[int, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def pending(self) -> list[int]:
        with self.lock:
            return [i for i in self.committed if i not in self.seen]


def poll_store(database_url: str, tracker: Tracker, poll_s: float) -> None:
    """Note when each committed row's chunks appear in the store."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        while not tracker.stop.is_set():
            started = time.monotonic()
            pending = tracker.pending()
            if pending:
                rows = conn.execute(f"SELECT DISTINCT id FROM {STORE} WHERE id = ANY(%s)",
                                    (pending,)).fetchall()
                now = time.monotonic()
                with tracker.lock:
                    for (row_id,) in rows:
                        tracker.seen.setdefault(row_id, now)
            time.sleep(max(0.0, poll_s - (time.monotonic() - started)))


def read_topic(bootstrap_servers: str, topic: str, tracker: Tracker) -> None:
    """Note when each row's event reaches the topic (a plain reader, no consumer group)."""
    import asyncio

    import orjson
    from aiokafka import AIOKafkaConsumer

    async def run() -> None:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap_servers, group_id=None,
                                    auto_offset_reset="earliest", fetch_max_wait_ms=5)
        await consumer.start()
        try:
            while not tracker.stop.is_set():
                batches = await consumer.getmany(timeout_ms=50)
                now = time.monotonic()
                with tracker.lock:
                    for records in batches.values():
                        for record in records:
                            event = orjson.loads(record.value) if record.value else None
                            if event and event.get("key"):  # a row change (not a truncate)
                                tracker.in_kafka.setdefault(int(event["key"]["id"]), now)
        finally:
            await consumer.stop()

    asyncio.run(run())


def insert_steadily(database_url: str, tracker: Tracker, rate: float, duration: float,
                    first_id: int) -> float:
    """Insert ``rate`` rows/s, one per transaction, on a fixed schedule; return the real rate."""
    docs = load_corpus()
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        count = int(rate * duration)
        started = time.monotonic()
        for n in range(count):
            due = started + n / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing the load generator, not waiting for a result
            doc = docs[n % len(docs)]
            row_id = first_id + n
            conn.execute(f"INSERT INTO {TABLE} (id, title, content) VALUES (%s, %s, %s)",
                         (row_id, doc.title, doc.content[:MAX_CHARS]))
            committed = time.monotonic()
            with tracker.lock:
                tracker.committed[row_id] = committed
        return count / (time.monotonic() - started)


def wait_all_seen(tracker: Tracker, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while tracker.pending() and time.monotonic() < deadline:
        time.sleep(0.05)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(ms: list[float]) -> dict[str, float] | None:
    if not ms:
        return None
    return {"p50": round(percentile(ms, 50), 1), "p95": round(percentile(ms, 95), 1),
            "p99": round(percentile(ms, 99), 1), "max": round(max(ms), 1),
            "mean": round(statistics.fmean(ms), 1), "min": round(min(ms), 1)}


def topic_of(database_url: str) -> str:
    from pgai_orm.names import topic_name

    with psycopg.connect(libpq_url(database_url)) as conn:
        database = str(conn.execute("SELECT current_database()").fetchone()[0])  # type: ignore[index]
    prefix = os.environ.get("VECTORIZER_TOPIC_PREFIX", "vectorizer")
    return topic_name(prefix, database, "public", TABLE)


def measure(database_url: str, bootstrap_servers: str, rate: float, duration: float,
            poll_ms: float, drain_timeout: float) -> dict[str, Any]:
    tracker = Tracker()
    poller = threading.Thread(target=poll_store, args=(database_url, tracker, poll_ms / 1000),
                              daemon=True)
    poller.start()
    reader = threading.Thread(target=read_topic,
                              args=(bootstrap_servers, topic_of(database_url), tracker), daemon=True)
    reader.start()
    try:
        # Warm-up: the first row waits for the connector to see the vectorizer and the worker
        # to join its group; that start-up time is not the steady state being measured.
        started = time.monotonic()
        insert_steadily(database_url, tracker, 1.0, 1.0, first_id=0)
        wait_all_seen(tracker, 120.0)
        if tracker.pending():
            raise SystemExit("the pipeline did not embed the warm-up row within 120 s")
        warmup_s = time.monotonic() - started
        with tracker.lock:
            tracker.committed.clear()
            tracker.seen.clear()
        achieved = insert_steadily(database_url, tracker, rate, duration, first_id=1)
        wait_all_seen(tracker, drain_timeout)
    finally:
        tracker.stop.set()
        poller.join()
        reader.join()
    latencies = [tracker.seen[i] - t for i, t in tracker.committed.items() if i in tracker.seen]
    ms = [x * 1000 for x in latencies]
    to_kafka = [(tracker.in_kafka[i] - t) * 1000 for i, t in tracker.committed.items()
                if i in tracker.in_kafka]
    kafka_to_store = [(tracker.seen[i] - tracker.in_kafka[i]) * 1000 for i in tracker.committed
                      if i in tracker.seen and i in tracker.in_kafka]
    return {
        "rows": len(tracker.committed),
        "searchable": len(latencies),
        "missing": len(tracker.committed) - len(latencies),
        "target_rate": rate,
        "achieved_rate": round(achieved, 1),
        "duration_s": duration,
        "warmup_s": round(warmup_s, 2),
        "latency_ms": summary(ms),
        "commit_to_kafka_ms": summary(to_kafka),
        "kafka_to_store_ms": summary(kafka_to_store),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="rows per second")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of inserting")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (embedded mode)")
    parser.add_argument("--batch-within", type=float, default=0.2,
                        help="workers' batch window in seconds (embedded mode)")
    parser.add_argument("--poll-ms", type=float, default=10.0, help="store poll interval")
    parser.add_argument("--drain-timeout", type=float, default=120.0,
                        help="seconds to wait after the last insert for the rest")
    parser.add_argument("--external", action="store_true",
                        help="use the pipeline already running against DATABASE_URL")
    parser.add_argument("--output", type=Path,
                        default=Path(__file__).resolve().parent / "results" / "e2e.json")
    args = parser.parse_args()
    sys.setswitchinterval(0.001)  # see the module docstring: timestamps of the three threads

    setup: dict[str, Any] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                             "platform": platform.platform(), "model": "wordllama (256 dims)"}
    if args.external:
        url = os.environ["DATABASE_URL"]
        setup["pipeline"] = "external"
        drop_vectorizer(url)
        create_vectorizer(url)
        try:
            result = measure(url, os.environ["KAFKA_BOOTSTRAP_SERVERS"], args.rate,
                             args.duration, args.poll_ms, args.drain_timeout)
        finally:
            drop_vectorizer(url)
    else:
        state = Path(tempfile.mkdtemp(prefix="vz-bench-"))
        stack = EmbeddedStack(state)
        info = stack.up()
        services = None
        try:
            url = pgadmin.create_database(info.database_url, f"bench_{uuid.uuid4().hex[:8]}")
            create_vectorizer(url)
            worker_args = ("--session-timeout", str(DEV_SESSION_TIMEOUT_S), "--poll-interval", "1",
                           "--batch-within", str(args.batch_within))
            services = PipelineServices(url, info.kafka_bootstrap_servers, state / "logs",
                                        args.workers, mark=str(state), extra_worker_args=worker_args)
            services.start()
            setup.update({"pipeline": "embedded stack (PostgreSQL 18, Tansu broker)",
                          "workers": args.workers,
                          "worker_args": list(services.extra_worker_args)})
            result = measure(url, info.kafka_bootstrap_servers, args.rate, args.duration,
                             args.poll_ms, args.drain_timeout)
        finally:
            if services is not None:
                services.stop()
            stack.down()
    result["setup"] = setup
    result["poll_ms"] = args.poll_ms
    print(f"{result['rows']} rows at {result['achieved_rate']} rows/s (target {args.rate:.0f}), "
          f"{result['searchable']} searchable, {result['missing']} missing")
    rows = []
    for label, key in (("commit -> searchable", "latency_ms"), ("commit -> Kafka", "commit_to_kafka_ms"),
                       ("Kafka -> store", "kafka_to_store_ms")):
        stats = result[key] or {}
        rows.append([label, stats.get("p50"), stats.get("p95"), stats.get("p99"), stats.get("max")])
    print(render_table(["latency", "p50 ms", "p95 ms", "p99 ms", "max ms"], rows))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()

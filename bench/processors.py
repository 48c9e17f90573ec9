"""Benchmark: the processors' backfill throughput and the embedding calls that partial updates cost.

On one set of rows, in one run:

* ``bare embedder``: ``embed_sync`` over every formatted chunk of every row (the model alone,
  batches of its own limit) -- the ceiling;
* ``pipeline (in process)``: ``Pipeline.process`` on batches of real event bytes (parse, reduce,
  applied-state check, chunk, format, hash, embed, one store transaction per batch);
* ``worker (Kafka + faust)``: the same events produced to a topic and consumed by
  ``vectorizer worker`` in its own process, timed until every row is applied;
* a partial-update workload on the same rows (an unrelated column, an appended sentence, a new
  title), counting chunks embedded and embedding calls by this design against a design that
  re-embeds every chunk of every changed row.

Usage::

    python bench/processors.py [--rows 10000] [--updates 2000]

Uses ``DATABASE_URL`` / ``KAFKA_BOOTSTRAP_SERVERS`` when set, else starts the embedded stack.
Prints a table and writes ``bench/results/processors.json``.

CPU accounting (a second table): for each backfill path, the CPU seconds (user + system, all
threads) of the process doing the work, of the Postgres server (the postmaster, its live
children, and through the postmaster's children times the backends that exited in between) and,
for the worker, of the broker, over the same interval as the wall time. It tells whether a path
is slow because it waits or because this machine has no more cores to give: with ``N`` cores a
path cannot finish before ``total CPU / N`` seconds, nor before the bare model's own wall time,
so the best ratio to the bare model it can reach here is
``bare_wall / max(bare_wall, total_cpu / N)``. Postgres and the broker are measured only when
they run on this machine (``postmaster.pid`` in the server's data directory; the broker when the
embedded stack was started here). "others' cores busy" is the rest of the machine's busy CPU
(other jobs on the same cores), which the floor does not subtract.
The in-process pipeline runs under the worker's GIL switch interval
(``processors.interpreter.set_worker_switch_interval``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import psutil
import psycopg
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import cores, postmaster_pid, tree_cpu_s
from bench.common import print_table as aligned_table
from infra import pgadmin
from infra.services import DEV_SESSION_TIMEOUT_S
from pgai_orm.catalog import ensure_catalog, load_vectorizers
from pgai_orm.events import RowChange, RowOp, Transaction, decode_event
from pgai_orm.names import topic_name
from processors.errors_sink import ErrorSink
from processors.interpreter import set_worker_switch_interval
from processors.pipeline import BatchReport, Pipeline, VersionSpec, config_objects

BATCH = 256
PARTITIONS = 4
PREFIX = "bench"
CONFIG: dict[str, Any] = {
    "embedding": {"implementation": "local", "model": "wordllama", "dimensions": 256},
    "chunking": {"implementation": "recursive_character_text_splitter", "chunk_column": "content",
                 "chunk_size": 400, "chunk_overlap": 50, "separators": ["\n\n", ". ", " "],
                 "is_separator_regex": False},
    "formatting": {"implementation": "python_template", "template": "$title - $chunk"},
    "indexing": {"implementation": "none"},
}
WORDS = [
    "stream", "replication", "kafka", "postgres", "vector", "chunk", "embedding", "model", "worker",
    "partition", "offset", "commit", "batch", "latency", "throughput", "index", "query", "table",
    "column", "source", "store", "event", "key", "row", "update", "insert", "delete", "snapshot",
    "consumer", "producer", "broker", "topic", "schema", "text", "search",
]


def sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(8, 18))]
    return " ".join(words).capitalize() + "."


def document(rng: random.Random) -> str:
    return " ".join(sentence(rng) for _ in range(rng.randint(10, 22)))


class Events:
    """Change events of the bench table, encoded by the contract's own encoder (pgai_orm.events)."""

    def __init__(self, table: str) -> None:
        self.table = table
        self.lsn = 1_000_000

    def make(self, op: RowOp, row: dict[str, Any], toast: list[str] | None = None) -> tuple[bytes, bytes]:
        self.lsn += 8
        toast = toast or []
        txn = Transaction(commit_lsn=self.lsn, commit_time="2026-11-24T10:00:00+00:00", xid=1)
        return RowChange.of(op, self.lsn, {"id": row["id"]},
                            {k: v for k, v in row.items() if k not in toast},
                            unchanged_toast=toast, txn=txn, schema="public",
                            table=self.table).encode()


def create_vectorizer(url: str, table: str, target: str) -> tuple[int, VersionSpec]:
    with psycopg.connect(url, autocommit=True) as conn:
        vid = conn.execute(
            "SELECT vectorizer.create_vectorizer('public', %s, %s, NULL, %s, NULL, %s, %s::jsonb,"
            " 'content', ARRAY['title'], 256)",
            (table, target, target, target + "_view", orjson.dumps(CONFIG).decode()),
        ).fetchone()[0]  # type: ignore[index]
        record = next(r for r in load_vectorizers(conn) if r.id == vid)
    spec = VersionSpec(vid, 1, "public", table, tuple(c.attname for c in record.source_pk),
                       record.config, f"bench-{vid}-v1")
    return vid, spec


class CpuClock:
    """Wall time and CPU seconds of the parts of one path, read at its start and its end.

    ``harness`` is this process (``time.process_time``: every thread of it); ``read(pid)`` adds
    ``process``, the process tree of ``pid`` (the worker). ``machine`` is every process on the
    machine (user, nice, system, irq, softirq; steal kept apart), to show what others took from
    the same cores.
    """

    def __init__(self, postmaster: int | None = None, broker: int | None = None) -> None:
        self.postmaster, self.broker = postmaster, broker

    def read(self, process: int | None = None) -> dict[str, float | None]:
        machine = psutil.cpu_times()
        reading: dict[str, float | None] = {
            "postgres": tree_cpu_s(self.postmaster), "broker": tree_cpu_s(self.broker),
            "machine": machine.user + machine.nice + machine.system + machine.irq + machine.softirq,
            "steal": getattr(machine, "steal", 0.0),
            "process": tree_cpu_s(process) if process is not None else None,
        }
        reading["harness"] = time.process_time()  # last: the reads above cost this process CPU
        reading["wall"] = time.perf_counter()
        return reading


def cpu_delta(start: dict[str, float | None], end: dict[str, float | None], chunks: int,
              process: str = "harness") -> dict[str, Any]:
    """CPU seconds spent between two readings; ``process`` names the reading of the working process."""

    def spent(key: str) -> float | None:
        a, b = start[key], end[key]
        return None if b is None else b - (a or 0.0)  # a process that started in between: from 0

    wall = (end["wall"] or 0.0) - (start["wall"] or 0.0)
    parts = {"process_cpu_s": spent(process), "postgres_cpu_s": spent("postgres"),
             "broker_cpu_s": spent("broker") if process != "harness" else None}
    total = sum(v for v in parts.values() if v is not None)
    machine = spent("machine") or 0.0
    harness = (spent("harness") or 0.0) if process != "harness" else 0.0  # the bench polling the worker
    # everything else on the machine (other users' jobs); CPU times tick in 10 ms, so near 0 it can dip below
    others = machine - total - harness
    return {"chunks": chunks, "wall_s": wall, **parts, "total_cpu_s": total,
            "cores_busy": total / wall if wall else None, "machine_cpu_s": machine,
            "machine_cores_busy": machine / wall if wall else None, "others_cpu_s": others,
            "others_cores_busy": others / wall if wall else None, "steal_s": spent("steal"),
            **({"harness_cpu_s": harness} if process != "harness" else {})}


async def run_pipeline(url: str, spec: VersionSpec, records: list[tuple[bytes, bytes]],
                       clock: CpuClock | None = None) -> tuple[float, BatchReport, dict[str, Any] | None]:
    """Process ``records`` in batches; with a clock, also the CPU spent (this process, Postgres)."""
    pipeline = Pipeline.from_spec(spec, ErrorSink(spec.vectorizer_id, 1, None))
    total = BatchReport()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        before = clock.read() if clock else None
        started = time.perf_counter()
        for start in range(0, len(records), BATCH):
            events = [decode_event(v) for _, v in records[start:start + BATCH]]
            total.add(await pipeline.process(conn, events))
        elapsed = time.perf_counter() - started
        cpu = cpu_delta(before, clock.read(), total.chunks_embedded) if clock and before else None
        return elapsed, total, cpu


def bare_embedder(rows: list[dict[str, Any]], clock: CpuClock) -> dict[str, Any]:
    from pgai_orm.embedders import create_embedder
    from processors.chunking import chunker_for
    from processors.formatting import formatter_for

    objects = config_objects(CONFIG)
    chunker, formatter = chunker_for(objects.chunking), formatter_for(objects.formatting)
    embedder = create_embedder(objects.embedding)
    embedder.embed_sync(["warm up"])
    started = time.perf_counter()
    texts = [formatter(c, row) for row in rows for c in chunker(row["content"])]
    prepared = time.perf_counter() - started
    before = clock.read()
    started = time.perf_counter()
    embedder.embed_sync(texts)
    embedded = time.perf_counter() - started
    cpu = cpu_delta(before, clock.read(), len(texts))
    cpu["postgres_cpu_s"] = None  # the model alone: Postgres' own idle work is no part of it
    cpu["others_cpu_s"] += cpu["total_cpu_s"] - cpu["process_cpu_s"]
    cpu["others_cores_busy"] = cpu["others_cpu_s"] / cpu["wall_s"]
    cpu["total_cpu_s"] = cpu["process_cpu_s"]
    cpu["cores_busy"] = cpu["total_cpu_s"] / cpu["wall_s"]
    return {"chunks": len(texts), "chunk_format_s": prepared, "embed_s": embedded,
            "chunks_per_s": len(texts) / embedded, "cpu": cpu}


def run_worker(url: str, servers: str, vid: int, records: list[tuple[bytes, bytes]],
               topic: str, clock: CpuClock) -> dict[str, Any]:
    admin = KafkaAdminClient(bootstrap_servers=servers)
    try:
        admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=5)
    for key, value in records:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()
    env = {**os.environ, "DATABASE_URL": url, "KAFKA_BOOTSTRAP_SERVERS": servers}
    chunks_sql = "SELECT coalesce(sum(cardinality(chunk_hashes)), 0) FROM vectorizer.applied_state WHERE vectorizer_id = %s"
    with tempfile.NamedTemporaryFile(prefix="bench-worker-", suffix=".log", delete=False) as log:
        at_start = clock.read()
        started = time.perf_counter()
        worker = subprocess.Popen(
            [sys.executable, "-m", "processors.cli", "--topic-prefix", PREFIX, "--session-timeout", str(DEV_SESSION_TIMEOUT_S),
             "--batch-size", str(BATCH), "--batch-within", "0.5", "--without-web", "--loglevel", "warning"],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parent.parent,
        )
        first_row = None
        at_first: dict[str, float | None] = {}
        chunks_at_first = 0
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                while True:
                    done = conn.execute("SELECT count(*) FROM vectorizer.applied_state WHERE vectorizer_id = %s",
                                        (vid,)).fetchone()[0]  # type: ignore[index]
                    if done and first_row is None:
                        first_row = time.perf_counter() - started
                        at_first = clock.read(worker.pid)
                        chunks_at_first = int(conn.execute(chunks_sql, (vid,)).fetchone()[0])  # type: ignore[index]
                    if done >= len(records):
                        break
                    if worker.poll() is not None:
                        raise RuntimeError(f"worker exited; log: {log.name}")
                    time.sleep(0.05)
                elapsed = time.perf_counter() - started
                at_end = clock.read(worker.pid)  # the worker still runs: its CPU so far
                chunks = conn.execute(chunks_sql, (vid,)).fetchone()[0]  # type: ignore[index]
        finally:
            worker.terminate()
            worker.wait(timeout=60)
    os.unlink(log.name)  # kept only when the worker failed
    at_start["process"] = 0.0  # the worker did not exist yet
    return {"rows": len(records), "chunks": int(chunks), "wall_s": elapsed,
            "first_row_s": first_row or 0.0, "steady_s": elapsed - (first_row or 0.0),
            "chunks_per_s_steady": int(chunks) / (elapsed - (first_row or 0.0)),
            "cpu": {"whole_run": cpu_delta(at_start, at_end, int(chunks), process="process"),
                    "steady": cpu_delta(at_first or at_start, at_end, int(chunks) - chunks_at_first,
                                        process="process")}}


def partial_updates(url: str, table: str, rows: list[dict[str, Any]], events: Events,
                    count: int, rng: random.Random) -> tuple[list[tuple[bytes, bytes]], dict[str, int]]:
    """Apply ``count`` updates to the source and return their events and the workload's mix."""
    from processors.chunking import chunker_for

    chunker = chunker_for(config_objects(CONFIG).chunking)
    mix = {"unrelated_column": 0, "appended_sentence": 0, "new_title": 0}
    records: list[tuple[bytes, bytes]] = []
    reembed_all_chunks = 0
    by_id = {r["id"]: r for r in rows}
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(count):
            row = by_id[rng.randint(1, len(rows))]
            kind = rng.choices(list(mix), weights=(50, 35, 15))[0]
            mix[kind] += 1
            if kind == "unrelated_column":
                row["views"] += 1
                conn.execute(f"UPDATE {table} SET views = %s WHERE id = %s", (row["views"], row["id"]))
                records.append(events.make("update", row, ["content"]))
            elif kind == "appended_sentence":
                row["content"] += " " + sentence(rng)
                conn.execute(f"UPDATE {table} SET content = %s WHERE id = %s", (row["content"], row["id"]))
                records.append(events.make("update", row))
            else:
                row["title"] = f"retitled {rng.randint(0, 10**6)}"
                conn.execute(f"UPDATE {table} SET title = %s WHERE id = %s", (row["title"], row["id"]))
                records.append(events.make("update", row, ["content"]))
            # a design without hashes re-embeds every chunk of the row on every update
            reembed_all_chunks += len(chunker(row["content"]))
    mix["reembed_everything_chunks"] = reembed_all_chunks
    return records, mix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--updates", type=int, default=2_000)
    args = parser.parse_args()
    logging.getLogger("kafka").setLevel(logging.WARNING)
    rng = random.Random(20261124)

    stack = None
    url, servers = os.environ.get("DATABASE_URL"), os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not url or not servers:
        from infra.stack import EmbeddedStack

        stack = EmbeddedStack(Path(tempfile.mkdtemp(prefix="vz-bench-")))
        info = stack.up()
        url, servers = info.database_url, info.kafka_bootstrap_servers
    try:
        with pgadmin.temporary_database(url, prefix="bench") as db:
            results = bench(db, servers, args.rows, args.updates, rng,
                            broker_pid=stack.broker.pid if stack is not None else None)
    finally:
        if stack is not None:
            stack.down()
    out = Path(__file__).resolve().parent / "results" / "processors.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out}")


def bench(db: str, servers: str, n_rows: int, n_updates: int, rng: random.Random,
          broker_pid: int | None = None) -> dict[str, Any]:
    table = "bench_docs"
    with psycopg.connect(db, autocommit=True) as conn:
        ensure_catalog(conn)
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, title text, content text, views int)")
        rows: list[dict[str, Any]] = [{"id": i, "title": f"document {i}", "content": document(rng), "views": 0}
                for i in range(1, n_rows + 1)]
        with conn.cursor().copy(f"COPY {table} (id, title, content, views) FROM STDIN") as copy:
            for r in rows:
                copy.write_row((r["id"], r["title"], r["content"], r["views"]))
        database = conn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
    events = Events(table)
    snapshot = [events.make("read", r) for r in rows]
    avg_len = sum(len(r["content"]) for r in rows) / len(rows)

    load_before = os.getloadavg()[0]
    clock = CpuClock(postmaster_pid(db), broker_pid)
    bare_runs = [bare_embedder(rows, clock)]

    vid1, _ = create_vectorizer(db, table, "store_worker")
    worker = run_worker(db, servers, vid1, snapshot, topic_name(PREFIX, database, "public", table), clock)
    with psycopg.connect(db, autocommit=True) as conn:  # the worker is done with vectorizer 1
        conn.execute("SELECT vectorizer.drop_vectorizer('store_worker', NULL, true, false)")

    _, spec = create_vectorizer(db, table, "store_inproc")
    default_interval = sys.getswitchinterval()
    worker_interval = set_worker_switch_interval()  # as the worker's process runs
    try:
        elapsed, backfill, pipeline_cpu = asyncio.run(run_pipeline(db, spec, snapshot, clock))
    finally:
        sys.setswitchinterval(default_interval)
    pipeline = {"chunks": backfill.chunks_embedded, "wall_s": elapsed,
                "chunks_per_s": backfill.chunks_embedded / elapsed, "embedding_calls": backfill.embedding_calls,
                "switch_interval_s": worker_interval, "cpu": pipeline_cpu}

    bare_runs.append(bare_embedder(rows, clock))  # again after: other load on the machine varies
    bare = min(bare_runs, key=lambda b: b["embed_s"])
    bare["runs_embed_s"] = [b["embed_s"] for b in bare_runs]
    bare["runs_cpu_s"] = [b["cpu"]["process_cpu_s"] for b in bare_runs]

    update_records, mix = partial_updates(db, table, rows, events, n_updates, rng)
    elapsed, upd, _ = asyncio.run(run_pipeline(db, spec, update_records))
    batches = (len(update_records) + BATCH - 1) // BATCH
    updates = {
        "updates": n_updates, "mix": {k: v for k, v in mix.items() if k != "reembed_everything_chunks"},
        "this_design": {"chunks_embedded": upd.chunks_embedded, "embedding_calls": upd.embedding_calls,
                        "chunks_reused": upd.chunks_reused, "rereads": upd.rereads, "wall_s": elapsed},
        "reembed_everything": {"chunks_embedded": mix["reembed_everything_chunks"],
                               "embedding_calls": batches},
    }
    results = {
        "machine": {"cpus": os.cpu_count(), "cores_available": cores(), "python": platform.python_version(),
                    "load_avg_1m_before_after": [load_before, os.getloadavg()[0]]},
        "rows": n_rows, "avg_content_chars": round(avg_len), "batch_size": BATCH,
        "config": CONFIG, "bare_embedder": bare, "pipeline_in_process": pipeline,
        "worker_kafka_faust": worker, "partial_updates": updates,
    }
    results["cpu_floor"] = cpu_floor(results)
    print_table(results)
    print_cpu_table(results)
    return results


def cpu_floor(r: dict[str, Any]) -> dict[str, Any]:
    """The best ratio to the bare model that each path's measured CPU work allows on this machine.

    A path whose parts (its process, Postgres, the broker) spend ``C`` CPU seconds on ``c`` chunks
    costs ``C / c`` per chunk. On ``N`` cores the bare model's ``B`` chunks then take at least
    ``floor = (C / c) * B / N`` seconds, and never less than the bare model's own wall time
    ``W`` (the embedding is part of the path). So the path's throughput is at most ``B / max(W,
    floor)``, and its ratio to the bare model's ``B / W`` is at most ``W / max(W, floor)``.
    """
    bare, n = r["bare_embedder"], r["machine"]["cores_available"]
    wall, chunks = bare["cpu"]["wall_s"], bare["cpu"]["chunks"]
    floors: dict[str, Any] = {"cores": n, "bare_wall_s": wall, "bare_chunks": chunks,
                              "bare_cpu_s": bare["cpu"]["total_cpu_s"]}
    paths = {"pipeline_in_process": r["pipeline_in_process"]["cpu"],
             "worker_whole_run": r["worker_kafka_faust"]["cpu"]["whole_run"],
             "worker_steady": r["worker_kafka_faust"]["cpu"]["steady"]}
    for name, cpu in paths.items():
        if not cpu or not cpu["chunks"]:
            continue
        per_chunk = cpu["total_cpu_s"] / cpu["chunks"]
        floor = per_chunk * chunks / n
        floors[name] = {
            "cpu_s_per_chunk": per_chunk,
            # CPU beyond what the bare model spent on as many chunks: the pipeline's own work
            "cpu_s_beyond_model": cpu["total_cpu_s"] - bare["cpu"]["total_cpu_s"] * cpu["chunks"] / chunks,
            "floor_s": floor, "best_ratio_to_bare": wall / max(wall, floor),
            "measured_ratio_to_bare": (cpu["chunks"] / cpu["wall_s"]) / (chunks / wall),
        }
    return floors


def print_cpu_table(r: dict[str, Any]) -> None:
    bare, pipe, work, floors = (r["bare_embedder"]["cpu"], r["pipeline_in_process"]["cpu"],
                                r["worker_kafka_faust"]["cpu"], r["cpu_floor"])
    rows = [("bare embedder (best run)", bare), ("pipeline in process", pipe),
            ("worker via Kafka+faust (whole)", work["whole_run"]),
            ("worker via Kafka+faust (steady)", work["steady"])]
    aligned_table(
        ["path", "chunks", "wall s", "process CPU s", "Postgres CPU s", "broker CPU s", "total CPU s",
         "cores busy", "beyond model CPU s", "others' cores busy"],
        [(name, c["chunks"], c["wall_s"], c["process_cpu_s"], c["postgres_cpu_s"], c["broker_cpu_s"],
          c["total_cpu_s"], c["cores_busy"],
          floors.get(key, {}).get("cpu_s_beyond_model"), c["others_cores_busy"])
         for (name, c), key in zip(rows, [None, "pipeline_in_process", "worker_whole_run", "worker_steady"],
                                   strict=True)],
        title=f"CPU (core-seconds) per path, {floors['cores']} cores"
              f" (in-process pipeline at switch interval {r['pipeline_in_process']['switch_interval_s'] * 1000:g} ms)")
    n, wall, chunks = floors["cores"], floors["bare_wall_s"], floors["bare_chunks"]
    print(f"CPU floor on {n} cores: total CPU per chunk x {chunks} chunks / {n} cores, against the bare"
          f" model's wall {wall:.2f}s; best ratio to bare = {wall:.2f} / max({wall:.2f}, floor)")
    for key, label in [("pipeline_in_process", "pipeline in process"), ("worker_whole_run", "worker (whole)"),
                       ("worker_steady", "worker (steady)")]:
        if key in floors:
            f = floors[key]
            print(f"  {label:22} {f['cpu_s_per_chunk'] * 1000:.3f} ms/chunk x {chunks} / {n} = floor"
                  f" {f['floor_s']:.2f}s -> best {f['best_ratio_to_bare']:.2f} (measured {f['measured_ratio_to_bare']:.2f})")
    print("  (Postgres: postmaster + live children + reaped children; broker: the embedded stack's;"
          " others': the machine's busy CPU less this table's and the bench's, i.e. other jobs on the"
          " same cores, which the floor does not subtract; '-': not measured)")


def print_table(r: dict[str, Any]) -> None:
    bare, pipe, work = r["bare_embedder"], r["pipeline_in_process"], r["worker_kafka_faust"]
    print(f"\nbackfill: {r['rows']} rows, {bare['chunks']} chunks (avg {r['avg_content_chars']} chars/row),"
          f" wordllama 256d, {os.cpu_count()} CPUs")
    print(f"{'path':34} {'chunks':>8} {'seconds':>9} {'chunks/s':>10} {'vs bare':>8}")
    print(f"{'bare embedder (embed_sync, best)':34} {bare['chunks']:>8} {bare['embed_s']:>9.2f} {bare['chunks_per_s']:>10.0f} {1:>8.2f}")
    print(f"{'pipeline in process':34} {pipe['chunks']:>8} {pipe['wall_s']:>9.2f} {pipe['chunks_per_s']:>10.0f}"
          f" {pipe['chunks_per_s'] / bare['chunks_per_s']:>8.2f}")
    print(f"{'worker via Kafka+faust (steady)':34} {work['chunks']:>8} {work['steady_s']:>9.2f}"
          f" {work['chunks_per_s_steady']:>10.0f} {work['chunks_per_s_steady'] / bare['chunks_per_s']:>8.2f}")
    print(f"  (worker wall incl. start-up and group join: {work['wall_s']:.2f}s, first row after {work['first_row_s']:.2f}s)")
    print(f"  (bare embedder runs: {', '.join(f'{t:.2f}s' for t in bare['runs_embed_s'])};"
          f" 1-min load average before/after: {r['machine']['load_avg_1m_before_after']})")
    u = r["partial_updates"]
    print(f"\npartial updates: {u['updates']} ({', '.join(f'{k} {v}' for k, v in u['mix'].items())})")
    print(f"{'design':34} {'chunks embedded':>16} {'embedding calls':>16}")
    print(f"{'hash per chunk (this)':34} {u['this_design']['chunks_embedded']:>16} {u['this_design']['embedding_calls']:>16}")
    print(f"{'re-embed everything':34} {u['reembed_everything']['chunks_embedded']:>16} {u['reembed_everything']['embedding_calls']:>16}")


if __name__ == "__main__":
    main()

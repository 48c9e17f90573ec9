"""Benchmark: the connector publishing 100k row changes (~1 KB rows) into Kafka, acknowledged.

Beside it, in the same run and on the same WAL, ``pg_recvlogical`` (the C client bundled with
Postgres) streams a second pgoutput slot created at the same moment into /dev/null: the ceiling
for "how fast can the server hand these changes out".

Procedure: a fresh database with one vectorizer; the connector runs (as ``python -m
connector.cli``) until its snapshot of the empty table is done, then stops; the changes are
written (inserts in transactions of ``--per-tx`` rows) while it is down, so the timed part is a
pure catch-up: from the first acknowledged event to the last (the connector's own Prometheus
counter, polled every 100 ms: each scrape costs the connector CPU, and at 20 ms the scrapes
took ~7% of its samples), and the connector's peak RSS (psutil, sampled at the same rate).

Usage::

    python bench/connector.py [--rows 100000] [--per-tx 1000] [--dsn ... --bootstrap ...]

Without ``--dsn``/``--bootstrap`` the embedded Postgres and Tansu broker are started. Prints a
table and writes ``bench/results/connector.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import pg_recvlogical_binary  # noqa: E402
from connector.values import SESSION_OPTIONS  # noqa: E402
from pgai_orm.lsn import format_lsn, parse_lsn  # noqa: E402

TABLE = "bench_docs"
COPY_SLOT = "bench_connector_recvlogical"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _embedded() -> tuple[str, str, Callable[[], None]]:
    from infra.broker import TansuBroker
    from infra.postgres import EmbeddedPostgres

    root = Path(tempfile.mkdtemp(prefix="bench-connector-"))
    server = EmbeddedPostgres(root / "postgres")
    url = server.start()
    broker = TansuBroker(root / "broker.log")
    servers = broker.start()

    def stop() -> None:
        broker.stop()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)

    return url, servers, stop


def _counter(port: int) -> float:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1).read().decode()
    except OSError:
        return 0.0
    total = 0.0
    for line in text.splitlines():
        if line.startswith("vectorizer_connector_events_total{") and 'source="stream"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _start_connector(url: str, servers: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "connector.cli", "--database-url", url, "--bootstrap-servers",
         servers, "--metrics-port", str(port), "--partitions", "6", "--topic-prefix", "bench"],
        cwd=ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )


def _wait(condition: Callable[[], Any], what: str, timeout: float = 300.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.02)
    raise TimeoutError(what)


def run(url: str, servers: str, rows: int, per_tx: int, workdir: Path) -> dict[str, Any]:
    from alembic.migration import MigrationContext
    from alembic.operations import Operations
    from sqlalchemy import create_engine

    from infra.urls import sqlalchemy_url
    from pgai_orm.alembic import register_operations
    from pgai_orm.configuration import (
        ChunkingRecursiveCharacterTextSplitterConfig,
        EmbeddingLocalConfig,
    )

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        conn.execute(f"CREATE TABLE {TABLE} (id int PRIMARY KEY, title text, body text)")
    register_operations()
    engine = create_engine(sqlalchemy_url(url))
    with engine.connect() as sa:
        Operations(MigrationContext.configure(sa)).create_vectorizer(
            source=TABLE, embedding=EmbeddingLocalConfig(),
            chunking=ChunkingRecursiveCharacterTextSplitterConfig(chunk_column="body"))
        sa.commit()
    engine.dispose()

    port = _free_port()
    log = workdir / "connector.log"
    proc = _start_connector(url, servers, port, log)
    with psycopg.connect(url, autocommit=True) as conn:
        def snapshot_done() -> bool:
            if not conn.execute("SELECT to_regclass('vectorizer.connector_tables') IS NOT NULL").fetchone()[0]:
                return False
            return bool(conn.execute("SELECT EXISTS (SELECT 1 FROM vectorizer.connector_tables"
                                     " WHERE status = 'streaming')").fetchone()[0])

        _wait(snapshot_done,
            "initial snapshot")
        proc.terminate()
        proc.wait(timeout=30)
        slot, start = conn.execute(
            "SELECT slot_name, confirmed_flush_lsn::text FROM pg_replication_slots"
            " WHERE slot_name LIKE 'vectorizer%'").fetchone()
        # Same WAL for pg_recvlogical: a copy of the connector's slot at the same position.
        conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                     " WHERE slot_name = %s", (COPY_SLOT,))
        conn.execute("SELECT pg_copy_logical_replication_slot(%s, %s)", (slot, COPY_SLOT))
        publication = conn.execute("SELECT publication_name FROM vectorizer.vectorizers").fetchone()[0]
        started = time.perf_counter()
        for first in range(0, rows, per_tx):
            with conn.transaction():
                conn.execute(
                    f"INSERT INTO {TABLE} SELECT g, 'title ' || g,"
                    " rpad(md5(g::text), 1000, md5((g + 1)::text))"
                    " FROM generate_series(%s::int, %s::int) g",
                    (first, min(first + per_tx, rows) - 1))
        print(f"wrote {rows} rows in {time.perf_counter() - started:.1f}s", file=sys.stderr)
        end_lsn = parse_lsn(conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])

        proc = _start_connector(url, servers, port, log)
        ps = psutil.Process(proc.pid)
        peak_rss = 0
        first_seen: tuple[float, float] | None = None
        last = 0.0
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            count = _counter(port)
            now = time.perf_counter()
            peak_rss = max(peak_rss, ps.memory_info().rss)
            if count > 0 and first_seen is None:
                first_seen = (now, count)
            if count >= rows:
                last = now
                break
            time.sleep(0.1)
        else:
            raise TimeoutError("connector did not publish every change")
        assert first_seen is not None
        confirmed = _wait(lambda: parse_lsn(conn.execute(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
            (slot,)).fetchone()[0]) >= end_lsn, "confirmation")
        cpu = ps.cpu_times()
        proc.terminate()
        proc.wait(timeout=30)

    connector_s = last - first_seen[0]
    connector_rate = (rows - first_seen[1]) / connector_s if connector_s > 0 else float("inf")
    result: dict[str, Any] = {
        "rows": rows, "per_tx": per_tx, "start_lsn": start, "end_lsn": format_lsn(end_lsn),
        "connector": {"seconds": round(connector_s, 3), "events_per_s": round(connector_rate),
                      "peak_rss_mib": round(peak_rss / 2**20, 1),
                      "cpu_s": round(cpu.user + cpu.system, 2), "confirmed": bool(confirmed)},
    }
    binary = pg_recvlogical_binary()
    if binary:
        t0 = time.perf_counter()
        subprocess.run(
            [binary, "--dbname", url, "--slot", COPY_SLOT, "--start", "--no-loop",
             "--endpos", format_lsn(end_lsn), "--file", "/dev/null",
             "-o", "proto_version=1", "-o", f"publication_names={publication}"],
            check=True, env={**os.environ, "PGOPTIONS": SESSION_OPTIONS})
        recv_s = time.perf_counter() - t0
        result["pg_recvlogical"] = {"seconds": round(recv_s, 3), "rows_per_s": round(rows / recv_s)}
        result["ratio_connector_vs_pg_recvlogical"] = round(connector_rate / (rows / recv_s), 3)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_drop_replication_slot(%s)", (COPY_SLOT,))
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--per-tx", type=int, default=1000)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "connector.json"))
    args = parser.parse_args(argv)
    def stop() -> None:
        pass

    url, servers = args.dsn, args.bootstrap
    if not url or not servers:
        url, servers, stop = _embedded()
    workdir = Path(tempfile.mkdtemp(prefix="bench-connector-run-"))
    try:
        result = run(url, servers, args.rows, args.per_tx, workdir)
    finally:
        stop()
    result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    c, r = result["connector"], result.get("pg_recvlogical")
    print(f"{'reader':<34}{'seconds':>9}{'rows/s':>10}{'peak RSS MiB':>14}")
    print(f"{'connector (acked by Kafka)':<34}{c['seconds']:>9.2f}{c['events_per_s']:>10}{c['peak_rss_mib']:>14}")
    if r:
        print(f"{'pg_recvlogical -> /dev/null':<34}{r['seconds']:>9.2f}{r['rows_per_s']:>10}{'-':>14}")
        print(f"ratio connector / pg_recvlogical: {result['ratio_connector_vs_pg_recvlogical']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()

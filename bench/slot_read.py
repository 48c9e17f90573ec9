"""Benchmark: read 100k row changes (~1 KB rows) from a logical slot.

Compares, on identical slot content in the same run:

* ``psycopg3``: :class:`connector.replication.ReplicationStream` + the pgoutput decoder
  (the connector's own path);
* ``psycopg2``: ``LogicalReplicationConnection`` + the same decoder (only if psycopg2 is
  installed; it is the alternative the driver choice was measured against);
* ``pg_recvlogical``: the C client bundled with Postgres writing pgoutput bytes to /dev/null,
  the ceiling for "how fast can the server hand these out".

Every read works on a fresh copy of one source slot (pg_recvlogical confirms what it wrote,
which would advance a shared slot). Readers run interleaved ``--repeat`` times; medians are
reported, with the client's CPU time (on 2 cores the walsender's own decoding competes).

Usage::

    python bench/slot_read.py --dsn postgresql://postgres@127.0.0.1:5432/postgres [--rows 100000]

Without ``--dsn`` the embedded Postgres of ``infra.postgres`` is started, if available.
Prints a table and writes ``bench/results/slot_read.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import select
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import pg_recvlogical_binary
from connector.pgoutput import Insert, decode_message
from connector.replication import ReplicationStream
from connector.values import SESSION_OPTIONS
from pgai_orm.lsn import format_lsn, parse_lsn

TABLE = "bench_slot_read"
PUBLICATION = "bench_slot_read_pub"
SOURCE_SLOT = "bench_slot_read_src"
RUN_SLOT = "bench_slot_read_run"


def _drop_slots(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
        " WHERE slot_name = ANY(%s)",
        ([SOURCE_SLOT, RUN_SLOT],),
    )


def prepare(dsn: str, rows: int, per_tx: int) -> int:
    """Create table, publication and a source slot, then write ``rows`` inserts.

    Every timed read works on a fresh copy of the source slot (``pg_copy_logical_replication_
    slot``), so all readers and repeats decode exactly the same WAL from the same point, and
    pg_recvlogical confirming what it wrote changes nothing for the next reader.
    Returns the WAL position after the last commit (the end position for pg_recvlogical).
    """
    with psycopg.connect(dsn, autocommit=True) as conn:
        _drop_slots(conn)
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        conn.execute(f"DROP PUBLICATION IF EXISTS {PUBLICATION}")
        conn.execute(f"CREATE TABLE {TABLE} (id int PRIMARY KEY, title text, body text)")
        conn.execute(f"CREATE PUBLICATION {PUBLICATION} FOR TABLE {TABLE}")
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (SOURCE_SLOT,))
        started = time.perf_counter()
        for first in range(0, rows, per_tx):
            last = min(first + per_tx, rows)
            with conn.transaction():
                conn.execute(
                    f"INSERT INTO {TABLE} SELECT g, 'title ' || g,"
                    " rpad(md5(g::text), 1000, md5((g + 1)::text))"
                    " FROM generate_series(%s::int, %s::int) g",
                    (first, last - 1),
                )
        print(f"wrote {rows} rows in {time.perf_counter() - started:.1f}s", file=sys.stderr)
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        return parse_lsn(row[0])


def fresh_run_slot(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
            " WHERE slot_name = %s",
            (RUN_SLOT,),
        )
        conn.execute("SELECT pg_copy_logical_replication_slot(%s, %s)", (SOURCE_SLOT, RUN_SLOT))
    return RUN_SLOT


def read_psycopg3(dsn: str, slot: str, rows: int, decode: bool) -> tuple[float, float]:
    """Wall and client CPU seconds to read ``rows`` inserts through ReplicationStream
    (+ the decoder when ``decode``)."""
    started, cpu = time.perf_counter(), time.process_time()
    with ReplicationStream.open(dsn, slot, [PUBLICATION]) as stream:
        stream.start()
        seen = 0
        while seen < rows:
            for msg in stream.read_batch(max_messages=5000, timeout=5.0):
                if decode:
                    if type(decode_message(msg.payload)) is Insert:
                        seen += 1
                elif msg.payload[0] == 0x49:  # 'I'
                    seen += 1
    return time.perf_counter() - started, time.process_time() - cpu


def decode_only(dsn: str, slot: str, rows: int) -> tuple[int, float]:
    """Capture the slot's pgoutput messages, then time the decoder alone over them.

    Returns (message count, seconds): the pure-Python decoder's own throughput.
    """
    payloads: list[bytes] = []
    seen = 0
    with ReplicationStream.open(dsn, slot, [PUBLICATION]) as stream:
        stream.start()
        while seen < rows:
            for msg in stream.read_batch(max_messages=5000, timeout=5.0):
                payloads.append(bytes(msg.payload))
                seen += msg.payload[0] == 0x49
    decode = decode_message
    started = time.perf_counter()
    for payload in payloads:
        decode(payload)
    return len(payloads), time.perf_counter() - started


def read_psycopg2(dsn: str, slot: str, rows: int, decode: bool) -> tuple[float, float]:
    """Wall and client CPU seconds to read ``rows`` inserts through psycopg2's
    LogicalReplicationConnection (+ the decoder when ``decode``)."""
    import psycopg2
    import psycopg2.extras

    started, cpu = time.perf_counter(), time.process_time()
    conn = psycopg2.connect(
        dsn,
        connection_factory=psycopg2.extras.LogicalReplicationConnection,
        options=SESSION_OPTIONS,
    )
    try:
        cur = conn.cursor()
        cur.start_replication(
            slot_name=slot,
            decode=False,
            options={"proto_version": "1", "publication_names": PUBLICATION},
        )
        seen = 0
        while seen < rows:
            msg = cur.read_message()
            if msg is None:
                select.select([cur], [], [], 5.0)
                continue
            if decode:
                if type(decode_message(msg.payload)) is Insert:
                    seen += 1
            elif msg.payload[0] == 0x49:
                seen += 1
    finally:
        conn.close()
    return time.perf_counter() - started, time.process_time() - cpu


def read_pg_recvlogical(dsn: str, slot: str, end_lsn: int, binary: str) -> tuple[float, float]:
    """Wall and client CPU seconds for pg_recvlogical to stream the slot up to ``end_lsn``
    into /dev/null."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        [
            binary, "--dbname", dsn, "--slot", slot, "--start",
            "--no-loop", "--endpos", format_lsn(end_lsn), "--file", "/dev/null",
            "-o", "proto_version=1", "-o", f"publication_names={PUBLICATION}",
        ],
        check=True,
        env={**os.environ, "PGOPTIONS": SESSION_OPTIONS},
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _embedded_dsn() -> tuple[str, Callable[[], None]]:
    """Start a throwaway embedded Postgres (infra's dev stack) in a temp dir."""
    import tempfile

    from infra.postgres import EmbeddedPostgres

    root = Path(tempfile.mkdtemp(prefix="bench-slot-read-"))
    server = EmbeddedPostgres(root / "postgres")
    url = server.start()

    def stop() -> None:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)

    return url, stop


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--per-tx", type=int, default=1000, help="rows per transaction")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--raw", action="store_true", help="also time reads without decoding")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "slot_read.json"))
    args = parser.parse_args(argv)

    def stop() -> None:
        pass

    dsn = args.dsn
    if not dsn:
        dsn, stop = _embedded_dsn()
    try:
        end_lsn = prepare(dsn, args.rows, args.per_tx)
        readers: dict[str, Callable[[str], tuple[float, float]]] = {
            "psycopg3 + decode": lambda slot: read_psycopg3(dsn, slot, args.rows, True),
        }
        try:
            import psycopg2  # noqa: F401

            readers["psycopg2 + decode"] = lambda slot: read_psycopg2(dsn, slot, args.rows, True)
        except ImportError:
            print("psycopg2 not installed: skipped", file=sys.stderr)
        recvlogical = pg_recvlogical_binary()
        if recvlogical:
            readers["pg_recvlogical (C)"] = lambda slot: read_pg_recvlogical(
                dsn, slot, end_lsn, recvlogical
            )
        if args.raw:  # transport alone, no pgoutput decoding: where the time goes
            readers["psycopg3 raw"] = lambda slot: read_psycopg3(dsn, slot, args.rows, False)
            if "psycopg2 + decode" in readers:
                readers["psycopg2 raw"] = lambda slot: read_psycopg2(dsn, slot, args.rows, False)
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in readers}
        for _ in range(args.repeat):  # interleaved, so drift hits every reader alike
            for name, read in readers.items():
                samples[name].append(read(fresh_run_slot(dsn)))
        decoded = [decode_only(dsn, fresh_run_slot(dsn), args.rows) for _ in range(args.repeat)]
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            _drop_slots(conn)
            conn.execute(f"DROP PUBLICATION IF EXISTS {PUBLICATION}")
            conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        stop()

    results = {name: statistics.median(w for w, _ in runs) for name, runs in samples.items()}
    cpu = {name: statistics.median(c for _, c in runs) for name, runs in samples.items()}
    reference = results.get("pg_recvlogical (C)")
    table = []
    print(f"median of {args.repeat} runs, {args.rows} rows of ~1 KB")
    header = ("reader", "seconds", "rows/s", "ratio", "client cpu s", "rows/cpu-s")
    print("{:<20} {:>8} {:>10} {:>6} {:>12} {:>11}".format(*header))
    for name, seconds in results.items():
        rate = args.rows / seconds
        ratio = (reference / seconds) if reference else None
        table.append({"reader": name, "seconds": round(seconds, 3), "rows_per_s": round(rate),
                      "ratio_vs_pg_recvlogical": round(ratio, 3) if ratio else None,
                      "client_cpu_s": round(cpu[name], 3),
                      "rows_per_client_cpu_s": round(args.rows / cpu[name]) if cpu[name] else None,
                      "runs": [{"seconds": round(w, 3), "client_cpu_s": round(c, 3)}
                               for w, c in samples[name]]})
        per_cpu = args.rows / cpu[name] if cpu[name] else float("nan")
        print(f"{name:<20} {seconds:>8.2f} {rate:>10,.0f} {ratio if ratio else float('nan'):>6.2f}"
              f" {cpu[name]:>12.2f} {per_cpu:>11,.0f}")
    messages = decoded[0][0]
    decode_seconds = statistics.median(sec for _, sec in decoded)
    print(f"decoder alone: {messages} pgoutput messages in {decode_seconds:.3f}s ="
          f" {messages / decode_seconds:,.0f} msgs/s")
    report = {
        "benchmark": "slot_read",
        "rows": args.rows,
        "row_bytes": 1000,
        "rows_per_transaction": args.per_tx,
        "repeat": args.repeat,
        "ratio": "pg_recvlogical seconds / reader seconds (1.0 = as fast as the C client)",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "psycopg": psycopg.__version__, "libpq": psycopg.pq.version()},
        "results": table,
        "decoder_only": {"messages": messages, "seconds": round(decode_seconds, 4),
                         "messages_per_s": round(messages / decode_seconds)},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()

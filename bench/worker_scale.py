"""The worker's cost per vectorizer, and its start-up, next to pgai Vectorizer's worker.

One `vectorizer worker` process serves every config version (``processors.engine``); pgai's one
worker serves all its vectorizers too. For 1, 5 and 10 vectorizers, each on its own table of
``--rows`` rows of real text (``infra.corpus``, as in ``vs_pgai.py``), both systems backfill every
table behind the same OpenAI-compatible endpoint (``bench/openai_compat_server.py`` serving the
offline wordllama model, 256 dimensions), and this script reports:

* the peak RSS of each worker's whole process tree (sampled every 0.2 s) and the number of
  processes in it: the goal is ours <= pgai's with 1 vectorizer, ours with 10 <= 1.5x ours with 1,
  and a process count that does not grow with the vectorizers;
* the backfill wall time of all tables, and the first row searchable after the worker started.

Then the *start-up* of our worker alone: with the connector already done (every change is in
Kafka), the time from starting `vectorizer worker` until the first row is searchable, and until
every row is, with the demo's dev settings (``infra.services.DEV_WORKER_ARGS``).

Ours runs as `vectorizer connector` + `vectorizer worker` (``infra.services``); pgai as
``pgai vectorizer worker`` with ``--poll-interval 1s`` from its own venv (``vs_pgai.py`` installs it
on first use). Each system gets a database of its own on the same server.

Usage::

    python bench/worker_scale.py [--rows 300] [--counts 1,5,10] [--skip pgai]

Prints a table and writes ``bench/results/worker_scale.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import vs_pgai  # noqa: E402
from bench.common import RssSampler, machine, print_table, wait_for, write_json  # noqa: E402
from bench.vs_pgai import (  # noqa: E402
    API_KEY,
    PGAI_VENV,
    EmbeddingServer,
    PgaiWorker,
    Row,
    build_rows,
    create_pgai_vectorizer,
    ensure_pgai_venv,
    log,
    scalar,
    stack_urls,
)
from infra import pgadmin  # noqa: E402
from infra.services import DEV_WORKER_ARGS  # noqa: E402


def create_tables(url: str, rows: list[Row], count: int) -> list[str]:
    """``count`` tables ``docs_1`` ... with the same rows each; returns their names."""
    names = [f"docs_{i + 1}" for i in range(count)]
    with psycopg.connect(url, autocommit=True) as conn:
        for name in names:
            conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, title text NOT NULL,"
                         " content text NOT NULL)")
            with conn.cursor().copy(f"COPY {name} (id, title, content) FROM STDIN") as copy:
                for r in rows:
                    copy.write_row((r.id, r.title, r.content))
    return names


def stored_rows(conn: psycopg.Connection[Any], stores: list[str]) -> list[int]:
    return [int(scalar(conn, f"SELECT count(DISTINCT id) FROM {store}") or 0) for store in stores]


def process_count(pid: int) -> int:
    try:
        root = psutil.Process(pid)
        return 1 + len(root.children(recursive=True))
    except psutil.NoSuchProcess:
        return 0


def wait_backfill(conn: psycopg.Connection[Any], stores: list[str], total: int, started: float,
                  alive: Any, timeout: float) -> dict[str, float]:
    first: list[float] = []

    def done() -> bool:
        alive()
        counts = stored_rows(conn, stores)
        if any(counts) and not first:
            first.append(time.monotonic() - started)
        return all(c >= total for c in counts)

    wait_for(done, timeout, 0.1, "backfill of every table")
    return {"first_row_s": round(first[0], 2), "wall_s": round(time.monotonic() - started, 2)}


def create_ours(url: str, server: EmbeddingServer, tables: list[str]) -> list[str]:
    """A vectorizer per table, as a migration creates it; returns the store tables."""
    stores = [f"{t}_store" for t in tables]
    vs_pgai.create_ours(url, server, [(t, f"{t}_ours", st) for t, st in zip(tables, stores,
                                                                            strict=True)])
    return stores


def run_ours(server_url: str, servers: str, server: EmbeddingServer, rows: list[Row],
             count: int, log_dir: Path, sampler: RssSampler, timeout: float) -> dict[str, Any]:
    from infra.services import PipelineServices

    url = pgadmin.create_database(server_url, f"bench_scale_ours_{count}")
    tables = create_tables(url, rows, count)
    stores = create_ours(url, server, tables)
    os.environ["OPENAI_API_KEY"] = API_KEY
    services = PipelineServices(url, servers, log_dir / f"ours-{count}", workers=1,
                                mark=str(log_dir), extra_worker_args=DEV_WORKER_ARGS)
    started = time.monotonic()
    services.start()
    worker = next(s for s in services.services if s.name.startswith("worker"))
    name = f"ours_{count}"
    sampler.track(name, worker.pid or 0)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            result: dict[str, Any] = wait_backfill(conn, stores, len(rows), started,
                                                   services.check_alive, timeout)
            # after the backfill: a short-lived helper (the SDK asking `uname`) is no process
            processes = process_count(worker.pid or 0)
    finally:
        services.stop()
        sampler.untrack(name)
    result.update(peak_rss_mib=sampler.peak_mib(name), processes=processes)
    return result


def run_pgai(server_url: str, server: EmbeddingServer, rows: list[Row], count: int,
             exe: Path, log_dir: Path, sampler: RssSampler, timeout: float) -> dict[str, Any]:
    import subprocess

    url = pgadmin.create_database(server_url, f"bench_scale_pgai_{count}")
    tables = create_tables(url, rows, count)
    subprocess.run([str(exe.parent / "python"), "-c",
                    "import pgai, sys; pgai.install(sys.argv[1])", url],
                   check=True, capture_output=True)
    stores = [f"{t}_store" for t in tables]
    with psycopg.connect(url, autocommit=True) as conn:
        for table, store in zip(tables, stores, strict=True):
            create_pgai_vectorizer(conn, server.base_url("pgai"), table, f"{table}_pgai",
                                   store, f"{table}_view")
    env = {**os.environ, "OPENAI_API_KEY": API_KEY}
    env.pop("VIRTUAL_ENV", None)
    worker = PgaiWorker(exe, url, env, log_dir / f"pgai-{count}.log", "1s")
    started = time.monotonic()
    name = f"pgai_{count}"
    sampler.track(name, worker.start())
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            result: dict[str, Any] = wait_backfill(conn, stores, len(rows), started,
                                                   worker.check, timeout)
            processes = process_count(worker.process.pid if worker.process else 0)
    finally:
        worker.stop()
        sampler.untrack(name)
    result.update(peak_rss_mib=sampler.peak_mib(name), processes=processes)
    return result


def run_startup(server_url: str, servers: str, server: EmbeddingServer, rows: list[Row],
                log_dir: Path, timeout: float) -> dict[str, Any]:
    """Connector first, until the topic holds every row; then time the worker alone."""
    from infra.services import PipelineServices, Service

    url = pgadmin.create_database(server_url, "bench_scale_startup")
    tables = create_tables(url, rows, 1)
    stores = create_ours(url, server, tables)
    os.environ["OPENAI_API_KEY"] = API_KEY
    services = PipelineServices(url, servers, log_dir / "startup", workers=0,
                                mark=str(log_dir), extra_worker_args=DEV_WORKER_ARGS)
    services.start()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            wait_for(lambda: scalar(conn, "SELECT bool_and(status = 'streaming') FROM"
                                          " vectorizer.connector_tables") is True,
                     timeout, 0.1, "the connector's snapshot to finish")
            worker = Service("worker-startup", ["worker", *DEV_WORKER_ARGS],
                             log_dir / "startup" / "worker.log", services._env())
            started = time.monotonic()
            worker.start()
            try:
                result = wait_backfill(conn, stores, len(rows), started, lambda: None, timeout)
            finally:
                worker.stop()
    finally:
        services.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=300, help="rows per table")
    parser.add_argument("--counts", default="1,5,10", help="numbers of vectorizers to run")
    parser.add_argument("--skip", action="append", default=[], choices=["ours", "pgai", "startup"])
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--pgai-venv", default=str(PGAI_VENV))
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    rows, corpus = build_rows(args.rows)
    log_dir = Path(tempfile.mkdtemp(prefix="vz-worker-scale-"))
    results: dict[str, Any] = {"machine": machine(), "corpus": corpus, "counts": counts,
                               "ours": {}, "pgai": {}}
    exe = None if "pgai" in args.skip else ensure_pgai_venv(Path(args.pgai_venv))
    with stack_urls() as (server_url, servers, _), RssSampler() as sampler:
        server = EmbeddingServer(log_dir)
        server.start()
        try:
            for count in counts:
                if "ours" not in args.skip:
                    log(f"ours, {count} vectorizer(s)")
                    results["ours"][count] = run_ours(server_url, servers, server, rows, count,
                                                      log_dir, sampler, args.timeout)
                    log(f"ours {count}: {results['ours'][count]}")
                if exe is not None:
                    log(f"pgai, {count} vectorizer(s)")
                    results["pgai"][count] = run_pgai(server_url, server, rows, count, exe,
                                                      log_dir, sampler, args.timeout)
                    log(f"pgai {count}: {results['pgai'][count]}")
            if "startup" not in args.skip:
                results["startup"] = run_startup(server_url, servers, server, rows, log_dir,
                                                 args.timeout)
                log(f"startup: {results['startup']}")
        finally:
            server.stop()
    report(results)
    print(f"\nlogs in {log_dir}; JSON in {write_json('worker_scale', results)}")


def report(results: dict[str, Any]) -> None:
    ours, pgai = results["ours"], results["pgai"]
    base = (ours.get(results["counts"][0]) or {}).get("peak_rss_mib")
    table = []
    for count in results["counts"]:
        o, p = ours.get(count, {}), pgai.get(count, {})
        rss = o.get("peak_rss_mib")
        table.append((count, rss, round(rss / base, 2) if rss and base else None,
                      o.get("processes"), p.get("peak_rss_mib"), p.get("processes"),
                      o.get("wall_s"), p.get("wall_s"), o.get("first_row_s"),
                      p.get("first_row_s")))
    print_table(("vectorizers", "ours RSS MiB", "x ours@1", "ours procs", "pgai RSS MiB",
                 "pgai procs", "ours wall s", "pgai wall s", "ours 1st row s", "pgai 1st row s"),
                table, title=f"worker per vectorizer count ({results['corpus']['rows']} rows each)")
    startup = results.get("startup")
    if startup:
        print_table(("measure", "seconds"),
                    [("worker start -> first row searchable", startup["first_row_s"]),
                     ("worker start -> every row searchable", startup["wall_s"])],
                    title="start-up of `vectorizer worker` (connector done, dev settings)")


if __name__ == "__main__":
    main()

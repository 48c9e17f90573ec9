"""Benchmark: backfill against a remote, rate-limited provider, ours next to pgai Vectorizer 0.12.1.

Most production users embed through a remote API: every request costs a round trip, and the
provider caps requests and tokens per minute. There the question is not how fast the model runs
but how much of the tokens-per-minute limit a backfill turns into stored rows, how many 429s it
provokes on the way, and whether any row is lost to them.

The provider is ``bench/openai_compat_server.py`` as a subprocess, playing a remote OpenAI:

* each answer is held ``--latency-ms`` (200) plus ``--per-token-us`` (10) per input token;
* ``--rpm`` (3,000) and ``--tpm`` (1,000,000) are enforced as OpenAI does
  (``bench/rate_limits.py``): a 429 with ``Retry-After`` over the limit, the ``x-ratelimit-*``
  headers on every answer; the buckets hold ``--burst-s`` (6) seconds of the limits (OpenAI:
  limits "may be enforced over shorter periods"; a whole minute's burst would swallow 60% of
  this run and hide the pacing);
* vectors are hash-seeded pseudo-random unit vectors (``--embeddings hash``): deterministic and
  nearly free, so the endpoint's CPU does not compete with the clients on this machine. Tokens
  are still counted with cl100k_base, as OpenAI bills them.

Each system is a separate client of the endpoint (a path prefix) with buckets of its own, and
the endpoint counts, per client, tokens admitted, requests answered, 429s, and the times of the
first request and the last answer. Same corpus, chunking, template and model name as
``bench/vs_pgai.py`` (whose pieces this script imports). Systems, one after the other:

* ours: ``vectorizer connector`` + one ``vectorizer worker`` (the demo's dev settings);
* pgai's worker at its defaults (concurrency 1, batches of 50 rows), then with
  ``--concurrency`` 4 and 8 (``--pgai-concurrency``); the best of them is reported.

Measured per system: wall time from service start until every row is stored (or, with failed
rows, until the queue is empty and nothing moved for ``--settle`` seconds); tokens per minute
as a fraction of the TPM limit, over the endpoint's busy window (first request to last answer)
and over the wall time; requests; 429s; failed rows (rows not in the store at the end; ours also
counts ``vectorizer.errors``). The floor is the tokens to embed at the TPM limit, less the
initial bucket.

Usage::

    python bench/remote_provider.py [--rows 10000] [--tpm 1000000] [--rpm 3000]

Uses ``DATABASE_URL`` / ``KAFKA_BOOTSTRAP_SERVERS`` when set, else starts the embedded stack.
Prints a table and writes ``bench/results/remote_provider.json``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import machine, print_table, write_json  # noqa: E402
from bench.vs_pgai import (  # noqa: E402
    API_KEY,
    PGAI_VENV,
    PGAI_VERSION,
    EmbeddingServer,
    PgaiWorker,
    Row,
    build_rows,
    chunk_rows,
    create_ours,
    create_pgai_vectorizer,
    create_source,
    ensure_pgai_venv,
    log,
    pgai_pending,
    phase,
    scalar,
    stack_urls,
    store_rows,
)
from infra import pgadmin  # noqa: E402


def provider_args(args: argparse.Namespace) -> tuple[str, ...]:
    return ("--embeddings", "hash", "--latency-ms", str(args.latency_ms),
            "--per-token-us", str(args.per_token_us), "--rpm", str(args.rpm),
            "--tpm", str(args.tpm), "--burst-s", str(args.burst_s))


def floor(rows: list[Row], args: argparse.Namespace) -> dict[str, Any]:
    """Tokens to embed (cl100k_base, this project's chunker) and the time the TPM limit allows."""
    from pgai_orm.embedders.batching import cl100k

    texts = [c[3] for c in chunk_rows(rows)]
    tokens = sum(len(t) for t in cl100k().encode_ordinary_batch(texts))
    burst = args.tpm / 60 * args.burst_s
    return {"chunks": len(texts), "tokens": tokens,
            "wall_s_at_tpm": round(max(0.0, tokens - burst) / (args.tpm / 60), 1)}


def summarise(stats: dict[str, Any], wall: float, stored: int, total: int,
              args: argparse.Namespace) -> dict[str, Any]:
    """What the endpoint saw of one client, as fractions of the limits."""
    tokens = int(stats.get("tokens", 0))
    first, last = stats.get("first_at"), stats.get("last_at")
    busy = (last - first) if first and last else None
    return {
        "wall_s": round(wall, 1), "rows_stored": stored, "failed_rows": total - stored,
        "tokens": tokens, "requests": stats.get("calls", 0), "inputs": stats.get("inputs", 0),
        "rate_limited": stats.get("rate_limited", 0),
        "busy_window_s": round(busy, 1) if busy else None,
        "tpm_fraction_busy": round(tokens / (busy / 60) / args.tpm, 3) if busy else None,
        "tpm_fraction_wall": round(tokens / (wall / 60) / args.tpm, 3) if wall else None,
    }


def wait_done(conn: psycopg.Connection[Any], total: int, alive: Callable[[], None],
              idle: Callable[[], bool], settle: float, timeout: float) -> tuple[float, int]:
    """Seconds until all ``total`` rows are stored, or until, after the first row, ``idle()`` held
    and the store did not grow for ``settle`` s (rows that failed never arrive); returns
    (seconds, rows stored)."""
    started = time.monotonic()
    last_count, last_change = -1, started
    while True:
        alive()
        now = time.monotonic()
        stored = store_rows(conn)[0]
        if stored >= total:
            return now - started, stored
        if stored != last_count:
            last_count, last_change = stored, now
        elif stored and idle() and now - last_change >= settle:
            return last_change - started, stored
        if now - started > timeout:
            raise TimeoutError(f"backfill not done within {timeout:.0f}s ({stored}/{total} rows)")
        time.sleep(0.2)


def run_ours(server_url: str, servers: str, server: EmbeddingServer, rows: list[Row],
             args: argparse.Namespace, log_dir: Path, out: dict[str, Any]) -> None:
    from infra.services import PipelineServices

    url = pgadmin.create_database(server_url, "bench_remote_ours")
    try:
        create_source(url, rows)
        create_ours(url, server)  # base URL .../ours/v1: the endpoint counts it as "ours"
        os.environ["OPENAI_API_KEY"] = API_KEY  # PipelineServices passes our environment on
        services = PipelineServices(url, servers, log_dir / "ours", workers=1, mark=str(log_dir))
        services.start()
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                wall, stored = wait_done(conn, len(rows), services.check_alive, lambda: True,
                                         args.settle, args.timeout)
                out.update(summarise(server.stats().get("ours", {}), wall, stored, len(rows), args))
                out["errors_recorded"] = int(scalar(conn, "SELECT count(*) FROM vectorizer.errors"))
        finally:
            services.stop()
    finally:
        pgadmin.drop_database(server_url, "bench_remote_ours")


def run_pgai(server_url: str, server: EmbeddingServer, rows: list[Row], concurrency: int | None,
             args: argparse.Namespace, log_dir: Path, out: dict[str, Any]) -> None:
    exe = ensure_pgai_venv(Path(args.pgai_venv))
    label = "default" if concurrency is None else f"c{concurrency}"
    client = f"pgai-{label}"
    database = f"bench_remote_pgai_{label}"
    pgadmin.drop_database(server_url, database)
    url = pgadmin.create_database(server_url, database)
    try:
        create_source(url, rows)
        subprocess.run([str(exe.parent / "python"), "-c", "import pgai, sys; pgai.install(sys.argv[1])",
                        url], check=True, capture_output=True)
        with psycopg.connect(url, autocommit=True) as conn:
            create_pgai_vectorizer(conn, server.base_url(client))
        env = {**os.environ, "OPENAI_API_KEY": API_KEY}
        env.pop("VIRTUAL_ENV", None)
        worker = PgaiWorker(exe, url, env, log_dir / f"{client}.log", "1s")
        if concurrency is not None:
            worker.args += ["--concurrency", str(concurrency)]
        out["worker_args"] = worker.args[5:]  # after "vectorizer worker -d URL"
        worker.start()
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                wall, stored = wait_done(conn, len(rows), worker.check,
                                         lambda: pgai_pending(conn) == 0, args.settle, args.timeout)
                out.update(summarise(server.stats().get(client, {}), wall, stored, len(rows), args))
                out["errors_recorded"] = int(scalar(conn, "SELECT count(*) FROM ai.vectorizer_errors"))
        finally:
            worker.stop()
    finally:
        pgadmin.drop_database(server_url, database)


def report(r: dict[str, Any]) -> None:
    """One table: ours, pgai at its defaults and at each concurrency, the TPM floor."""
    s = r["settings"]
    rows: list[tuple[Any, ...]] = []
    names = ["ours", *[k for k in r if k.startswith("pgai-")]]
    for name in names:
        d = r.get(name) or {}
        if "error" in d and "wall_s" not in d:
            rows.append((name, "FAILED: " + d["error"][:60], None, None, None, None, None, None))
            continue
        rows.append((name, d.get("wall_s"), d.get("tokens"), d.get("tpm_fraction_busy"),
                     d.get("tpm_fraction_wall"), d.get("requests"), d.get("rate_limited"),
                     d.get("failed_rows")))
    lim = r.get("floor", {})
    rows.append(("limit: tokens at the TPM limit", lim.get("wall_s_at_tpm"), lim.get("tokens"), 1.0,
                 1.0, None, 0, 0))
    print_table(("system", "wall (s)", "tokens", "TPM used (busy)", "TPM used (wall)", "requests",
                 "429s", "failed rows"), rows,
                title=f"{s['rows']} rows, remote provider: {s['latency_ms']:.0f} ms + "
                      f"{s['per_token_us']:.0f} us/token, {s['tpm']:,.0f} TPM, {s['rpm']:,.0f} RPM, "
                      f"{s['burst_s']:.0f} s burst, {r['machine']['cpus']} CPUs")
    best = r.get("pgai_best")
    if best:
        print(f"pgai's best: {best}")
    for name in names:
        d = r.get(name) or {}
        if "error" in d:
            print(f"{name}: FAILED: {d['error']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--tpm", type=float, default=1_000_000)
    parser.add_argument("--rpm", type=float, default=3_000)
    parser.add_argument("--burst-s", type=float, default=6.0)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--per-token-us", type=float, default=10.0)
    parser.add_argument("--pgai-concurrency", default="default,4,8",
                        help="comma-separated: 'default' (no flag) and/or numbers")
    parser.add_argument("--settle", type=float, default=20.0,
                        help="seconds without progress (queue empty) that end a run with failed rows")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--pgai-venv", default=str(PGAI_VENV))
    parser.add_argument("--skip", action="append", default=[], choices=["ours", "pgai"])
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    log_dir = Path(tempfile.mkdtemp(prefix="remote-provider-logs-"))
    log(f"logs in {log_dir}")
    rows, corpus = build_rows(args.rows)
    results: dict[str, Any] = {
        "benchmark": "remote_provider", "machine": machine(), "corpus": corpus,
        "settings": {"rows": args.rows, "tpm": args.tpm, "rpm": args.rpm, "burst_s": args.burst_s,
                     "latency_ms": args.latency_ms, "per_token_us": args.per_token_us,
                     "embeddings": "hash-seeded unit vectors (no model)", "pgai_version": PGAI_VERSION},
        "floor": floor(rows, args), "logs": str(log_dir),
    }
    server = EmbeddingServer(log_dir, provider_args(args))
    server.start()
    try:
        with stack_urls() as (server_url, servers, _broker_pid):
            if "ours" not in args.skip:
                phase(results, "ours", lambda out: run_ours(server_url, servers, server, rows, args,
                                                            log_dir, out))
            if "pgai" not in args.skip:
                for item in args.pgai_concurrency.split(","):
                    concurrency = None if item.strip() == "default" else int(item)
                    name = "pgai-default" if concurrency is None else f"pgai-c{concurrency}"
                    phase(results, name, lambda out, c=concurrency: run_pgai(
                        server_url, server, rows, c, args, log_dir, out))
    finally:
        server.stop()
    pgai_runs = {k: v for k, v in results.items() if k.startswith("pgai-") and "wall_s" in v}
    if pgai_runs:
        results["pgai_best"] = min(pgai_runs, key=lambda k: (pgai_runs[k]["failed_rows"],
                                                            pgai_runs[k]["wall_s"]))
    results["load_avg_1m_before_after"] = [load_before, os.getloadavg()[0]]
    report(results)
    path = write_json("remote_provider", results)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()

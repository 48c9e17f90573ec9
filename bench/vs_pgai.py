"""Benchmark: this pipeline side by side with pgai Vectorizer 0.12.1, and with the physical limits.

Both systems get, in one run on one machine:

* the same PostgreSQL server (the embedded one), each in its own database so neither system's
  triggers, slot or catalog touches the other's table;
* the same table of real text (``docs``: id, title, content, views), built from the Python
  standard library's own documentation (``infra.corpus``: ``pydoc_data.topics`` and stdlib
  docstrings, split into paragraphs; each row is three consecutive paragraphs, and the list is
  repeated with a "(pass N)" title suffix to reach ``--rows``);
* the same chunking (recursive splitter, 800/400, pgai's defaults) and template
  (``$title - $chunk``);
* the same embedding model, reached the same way: the offline wordllama model behind a local
  OpenAI-compatible endpoint (``bench/openai_compat_server.py``), 256 dimensions. Ours is
  configured with ``EmbeddingOpenaiConfig(model="wordllama", dimensions=256, base_url=...)``,
  pgai's with ``ai.embedding_openai('wordllama', 256, base_url => ...)``. The server counts
  calls and tokens per client (``/ours/v1`` vs ``/pgai/v1``).

Measured:

1. backfill of ``--rows`` existing rows (time from starting the services until every row is
   searchable);
2. commit-to-searchable latency under a steady insert rate (``--rate`` rows/s for ``--duration``
   s): ours, pgai's worker with ``--poll-interval 1s``, and pgai's worker with its default poll
   interval (rows not searchable when the window closes count as "at least" the time they
   waited);
3. embedding calls and tokens for ``--updates`` updates of an unrelated column (``views``) and
   for ``--updates`` small edits (one sentence appended to ``content``);
4. peak RSS of each system's worker processes (sampled every 0.2 s).

Physical limits beside each figure: the bare model in-process on the same chunks; the shared
model server's ceiling (the bar of the goal "backfill at least 0.9 of what the server can
serve"): the chunks/s it serves an ideal client sending the same formatted chunks (standard
library HTTP, keep-alive, bodies serialised in advance, base64 answers), best of a sweep of batch
sizes and concurrencies, measured in the same run just before both systems; the same vectors
written with one plain ``COPY`` into a table identical to the store; one row embedded and inserted
in-process (latency floor); a fresh interpreter holding only an OpenAI client and a Postgres
driver (a worker's memory floor when the model sits behind an endpoint); the model alone (the
endpoint's floor); and the tokens of only the chunks whose text changed (calls/tokens floor).

pgai runs from its own virtual environment (``bench/.venv-pgai``, created on first use with
``pgai[vectorizer-worker]==0.12.1``; ``--pgai-venv`` points elsewhere). Its catalog is installed
with ``pgai.install(url)`` into its database. Every phase has a deadline; a phase that cannot run
is recorded with its error and the rest goes on.

Usage::

    python bench/vs_pgai.py [--rows 10000] [--rate 20] [--duration 30] [--updates 1000]

Uses ``DATABASE_URL`` / ``KAFKA_BOOTSTRAP_SERVERS`` when set, else starts the embedded stack.
Prints a table and writes ``bench/results/vs_pgai.json``.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    CpuMeter,
    RssSampler,
    machine,
    percentiles,
    postmaster_pid,
    print_table,
    tree_cpu_s,
    wait_for,
    write_json,
)
from infra import pgadmin  # noqa: E402
from infra.ports import free_port, port_accepts  # noqa: E402
from infra.urls import sqlalchemy_url  # noqa: E402

PGAI_VERSION = "0.12.1"
PGAI_VENV = ROOT / "bench" / ".venv-pgai"
MODEL = "wordllama"
DIMENSIONS = 256
CHUNK_SIZE, CHUNK_OVERLAP = 800, 400  # pgai's defaults for the recursive splitter
TEMPLATE = "$title - $chunk"
TABLE = "docs"
STORE = "docs_embedding_store"
#: Extra sentence of the small-edit workload (appended to ``content``).
EDIT = " This sentence was appended by the benchmark to measure the cost of a small edit."
#: Path prefix of the ideal client that measures the server ceiling (:func:`server_ceiling`).
CEILING_CLIENT = "ceiling"
API_KEY = "sk-bench-local"  # the local server accepts anything; both SDKs insist on a key


def log(message: str) -> None:
    """Progress on stderr (stdout carries the result table)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- corpus -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    id: int
    title: str
    content: str


def build_rows(count: int) -> tuple[list[Row], dict[str, Any]]:
    """``count`` rows of real text: three consecutive paragraphs of one stdlib document each.

    Three paragraphs make rows of one to a few chunks at 800 characters, so a small edit touches
    one chunk of several (the case where re-embedding only changed chunks matters). When the
    corpus is exhausted the list starts again with a "(pass N)" title suffix: the text repeats,
    the formatted chunks (title included) do not.
    """
    from infra.corpus import describe_corpus, load_corpus

    units: list[tuple[str, str]] = []
    for doc in load_corpus():
        paragraphs = [p.strip() for p in doc.content.split("\n\n") if len(p.strip()) >= 40]
        for start in range(0, len(paragraphs), 3):
            text = "\n\n".join(paragraphs[start:start + 3])
            if len(text) >= 200:
                units.append((doc.title, text))
    rows = []
    for i in range(count):
        title, content = units[i % len(units)]
        passes = i // len(units)
        rows.append(Row(i + 1, title + (f" (pass {passes + 1})" if passes else ""), content))
    info = {"source": describe_corpus(), "distinct_texts": len(units), "rows": count,
            "repeated": count > len(units),
            "avg_content_chars": round(sum(len(r.content) for r in rows) / count)}
    return rows, info


# -- the shared embedding endpoint --------------------------------------------------------------

class EmbeddingServer:
    """``bench/openai_compat_server.py`` as a subprocess (its CPU and memory are its own)."""

    def __init__(self, log_dir: Path, extra_args: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.log_path = log_dir / "embedding-server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.extra_args = extra_args  # options of openai_compat_server.py (latency, limits)

    def base_url(self, client: str) -> str:
        return f"http://127.0.0.1:{self.port}/{client}/v1"

    def start(self) -> None:
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, str(ROOT / "bench" / "openai_compat_server.py"), "--port", str(self.port),
                 *self.extra_args],
                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        wait_for(lambda: port_accepts(self.port) or self.process.poll() is not None, 120,
                 what="embedding server")
        if self.process.poll() is not None:
            raise RuntimeError(f"embedding server exited; see {self.log_path}")

    def stats(self) -> dict[str, dict[str, Any]]:
        import json

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=10) as resp:
            return dict(json.loads(resp.read()))

    def reset(self) -> None:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/stats/reset", data=b"{}", method="POST")
        urllib.request.urlopen(req, timeout=10).read()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


# -- database helpers ---------------------------------------------------------------------------

def create_source(url: str, rows: list[Row]) -> None:
    """The ``docs`` table with every row, loaded with COPY."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {TABLE} (id int PRIMARY KEY, title text NOT NULL,"
                     " content text NOT NULL, views int NOT NULL DEFAULT 0)")
        with conn.cursor().copy(f"COPY {TABLE} (id, title, content) FROM STDIN") as copy:
            for r in rows:
                copy.write_row((r.id, r.title, r.content))
        conn.execute(f"ANALYZE {TABLE}")


def scalar(conn: psycopg.Connection[Any], query: str, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    return row[0] if row else None


def store_rows(conn: psycopg.Connection[Any], table: str = STORE) -> tuple[int, int]:
    """(source rows with at least one chunk, chunks) in a store table."""
    row = conn.execute(sql.SQL("SELECT count(DISTINCT id), count(*) FROM {}").format(
        sql.Identifier(table))).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


# -- workloads shared by both systems -----------------------------------------------------------

#: How often the latency poller reads the store (both systems are measured with it).
STORE_POLL_S = 0.01


def steady_inserts(url: str, rows: list[Row], first_id: int, rate: float, duration: float,
                   grace: float, store: str = STORE) -> dict[str, Any]:
    """Insert ``rate`` rows/s for ``duration`` s; report commit-to-searchable latency per row.

    The commit time is taken when the INSERT (autocommit) returns; a poller reads the store
    every ``STORE_POLL_S`` (10 ms, as ``e2e.py``) and records when each new id first has a chunk,
    so latencies carry up to 10 ms of polling error. Rows still missing ``grace`` seconds after the last insert are reported as
    lower bounds (they waited at least that long).
    """
    count = int(rate * duration)
    ids = list(range(first_id, first_id + count))
    committed: dict[int, float] = {}
    seen: dict[int, float] = {}
    stop = threading.Event()

    def poll() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            query = sql.SQL("SELECT DISTINCT id FROM {} WHERE id >= %s AND id < %s").format(
                sql.Identifier(store))
            while not stop.is_set():
                now = time.monotonic()
                for (i,) in conn.execute(query, (first_id, first_id + count)).fetchall():
                    seen.setdefault(i, now)
                if len(seen) == count:
                    return
                stop.wait(STORE_POLL_S)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    started = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        for n, i in enumerate(ids):
            delay = started + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            src = rows[i % len(rows)]
            conn.execute(f"INSERT INTO {TABLE} (id, title, content) VALUES (%s, %s, %s)",
                         (i, f"live {i}: {src.title}", src.content))
            committed[i] = time.monotonic()
    inserted_s = time.monotonic() - started
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and len(seen) < count:
        time.sleep(0.1)
    stop.set()
    poller.join(timeout=5)
    closed = time.monotonic()
    done = [seen[i] - committed[i] for i in ids if i in seen]
    waiting = [closed - committed[i] for i in ids if i not in seen]
    return {"rows": count, "rate_per_s": rate, "insert_s": round(inserted_s, 2),
            "searchable": len(done), "not_searchable_at_close": len(waiting),
            "window_after_last_insert_s": grace,
            "latency_s": percentiles(done),
            "waited_at_least_s": percentiles(waiting),
            "lower_bound_p50_s": percentiles(done + waiting)["p50"] if waiting else None}


def time_backfill(conn: psycopg.Connection[Any], started: float, total: int,
                  alive: Callable[[], None], drained: Callable[[], bool],
                  timeout: float) -> dict[str, Any]:
    """Wait until all ``total`` rows are in the store; time the first row and the whole.

    The first searchable row separates start-up (process start, pgai's catalog read; our
    snapshot, topic creation, group join) from the rate at which rows then flow.
    """
    first: list[float] = []

    def done() -> bool:
        alive()
        stored = store_rows(conn)[0]
        if stored and not first:
            first.append(time.monotonic() - started)
        return stored >= total and drained()

    wait_for(done, timeout, 0.1, "backfill")
    took = time.monotonic() - started
    stored, chunks = store_rows(conn)
    steady = took - first[0]
    # Under ten polls (a small run stored everything at once) the rate would be polling noise.
    rate = round(chunks / steady) if steady >= 1.0 else None
    return {"rows": stored, "chunks": chunks, "wall_s": round(took, 2),
            "rows_per_s": round(stored / took, 1), "first_row_s": round(first[0], 2),
            "after_first_row_s": round(steady, 2),
            "chunks_per_s_after_first_row": rate}


def pick_ids(rng: random.Random, rows: list[Row], count: int) -> list[int]:
    return rng.sample([r.id for r in rows], min(count, len(rows)))


def update_views(url: str, ids: list[int]) -> None:
    """One autocommitted UPDATE per row of a column no vectorizer reads."""
    with psycopg.connect(url, autocommit=True) as conn:
        for i in ids:
            conn.execute(f"UPDATE {TABLE} SET views = views + 1 WHERE id = %s", (i,))


def append_sentence(url: str, ids: list[int]) -> None:
    """One autocommitted UPDATE per row appending one sentence to the chunked column."""
    with psycopg.connect(url, autocommit=True) as conn:
        for i in ids:
            conn.execute(f"UPDATE {TABLE} SET content = content || %s WHERE id = %s", (EDIT, i))


# -- physical limits ----------------------------------------------------------------------------

def chunk_rows(rows: list[Row]) -> list[tuple[int, int, str, str]]:
    """(id, seq, chunk, formatted text) of every row, with this project's chunker and formatter."""
    from pgai_orm.configuration import (
        ChunkingRecursiveCharacterTextSplitterConfig,
        FormattingPythonTemplateConfig,
    )
    from processors.chunking import chunker_for
    from processors.formatting import formatter_for

    chunker = chunker_for(ChunkingRecursiveCharacterTextSplitterConfig(
        chunk_column="content", chunk_size=CHUNK_SIZE, chunk_overlap=CHUNK_OVERLAP))
    formatter = formatter_for(FormattingPythonTemplateConfig(template=TEMPLATE))
    out = []
    for r in rows:
        values = {"id": r.id, "title": r.title, "content": r.content, "views": 0}
        for seq, chunk in enumerate(chunker(r.content)):
            out.append((r.id, seq, chunk, formatter(chunk, values)))
    return out


def limits(url: str, rows: list[Row], ids_edit: list[int], server: EmbeddingServer) -> dict[str, Any]:
    """The floors: bare model, server ceiling, plain COPY, one row in-process, model-only RSS,
    minimal tokens."""
    from pgai_orm.embedders.batching import cl100k
    from pgai_orm.embedders.local import _wordllama

    model = _wordllama(DIMENSIONS)
    model.embed(["warm up"], norm=True)
    chunks = chunk_rows(rows)
    texts = [c[3] for c in chunks]
    enc = cl100k()
    tokens = sum(len(t) for t in enc.encode_ordinary_batch(texts))
    started = time.perf_counter()
    vectors = []
    for start in range(0, len(texts), 512):
        vectors.extend(model.embed(texts[start:start + 512], norm=True))
    embed_s = time.perf_counter() - started
    log(f"bare model: {len(texts) / embed_s:,.0f} chunks/s")
    ceiling = server_ceiling(server, texts)

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE copy_store (embedding_uuid uuid PRIMARY KEY DEFAULT gen_random_uuid(),"
                     " id int NOT NULL, chunk_seq int NOT NULL, chunk text NOT NULL,"
                     f" embedding vector({DIMENSIONS}) NOT NULL, UNIQUE (id, chunk_seq))")
        # The COPY text is rendered before the clock starts: the limit is what the server takes
        # to ingest the vectors, not how fast Python formats floats.
        payload = "".join(
            f"{i}\t{seq}\t{_copy_escape(chunk)}\t[{','.join(f'{x:.7g}' for x in vec)}]\n"
            for (i, seq, chunk, _), vec in zip(chunks, vectors, strict=True)).encode()
        started = time.perf_counter()
        with conn.cursor().copy("COPY copy_store (id, chunk_seq, chunk, embedding) FROM STDIN") as copy:
            for start in range(0, len(payload), 1 << 20):
                copy.write(payload[start:start + (1 << 20)])
        copy_s = time.perf_counter() - started
        if scalar(conn, "SELECT count(*) FROM copy_store") != len(chunks):
            raise RuntimeError("COPY wrote a different number of rows than it was given")

        # latency floor: one row chunked, embedded and inserted in this process
        one = [c for c in chunk_rows(rows[:1])]
        conn.execute("TRUNCATE copy_store")
        samples = []
        for n in range(20):
            started = time.perf_counter()
            vecs = model.embed([c[3] for c in one], norm=True)
            with conn.transaction():
                for (_, seq, chunk, _), vec in zip(one, vecs, strict=True):
                    conn.execute("INSERT INTO copy_store (id, chunk_seq, chunk, embedding) VALUES"
                                 " (%s, %s, %s, %s::vector)",
                                 (n, seq, chunk, "[" + ",".join(f"{x:.7g}" for x in vec) + "]"))
            samples.append(time.perf_counter() - started)

    # calls/tokens floor of the small edit: only chunks whose formatted text changed
    by_id = {r.id: r for r in rows}
    changed_texts = []
    for i in ids_edit:
        old = {c[3] for c in chunk_rows([by_id[i]])}
        new = chunk_rows([Row(i, by_id[i].title, by_id[i].content + EDIT)])
        changed_texts += [c[3] for c in new if c[3] not in old]
    all_after_edit = [c[3] for i in ids_edit
                      for c in chunk_rows([Row(i, by_id[i].title, by_id[i].content + EDIT)])]
    return {
        "chunks": len(chunks), "tokens": tokens,
        "bare_model_embed_s": round(embed_s, 3), "bare_model_chunks_per_s": round(len(chunks) / embed_s),
        "server_ceiling": ceiling,
        "copy_s": round(copy_s, 3), "copy_rows_per_s": round(len(chunks) / copy_s),
        "embed_plus_copy_s": round(embed_s + copy_s, 3),
        "one_row_embed_insert_s": percentiles(samples),
        "model_only_rss_mib": model_only_rss(),
        "client_only_rss_mib": client_only_rss(),
        "small_edit_changed_chunks": len(changed_texts),
        "small_edit_changed_tokens": sum(len(t) for t in enc.encode_ordinary_batch(changed_texts)),
        "small_edit_all_chunks_of_edited_rows": len(all_after_edit),
        "small_edit_all_tokens_of_edited_rows": sum(
            len(t) for t in enc.encode_ordinary_batch(all_after_edit)),
    }


#: (inputs per request, concurrent connections) pairs the server ceiling is swept over
CEILING_SWEEP: tuple[tuple[int, int], ...] = ((256, 1), (256, 2), (256, 4), (2048, 1), (2048, 2), (2048, 4))


def server_ceiling(server: EmbeddingServer, texts: Sequence[str],
                   sweep: Sequence[tuple[int, int]] = CEILING_SWEEP) -> dict[str, Any]:
    """Chunks/s the shared model server serves an ideal client: the bar both systems' backfills
    are held to ("at least 0.9 of what the server can serve").

    The bare model in-process is no fair bar for a client of the endpoint: the server also parses
    JSON, counts tokens and encodes the answer. So this client sends the very texts the backfill
    embeds and does as little as a client can: standard library ``http.client``, one keep-alive
    connection per thread (connected in advance), request bodies serialised before the clock
    starts, base64 answers, and ``concurrency`` threads pulling the next request as soon as one
    returns so the server is never idle. Each ``(batch, concurrency)`` pair is one full pass over
    ``texts``; the best pair is the ceiling. Calls count under the client ``ceiling``.
    """
    import http.client
    import json
    import queue
    from concurrent.futures import ThreadPoolExecutor

    path = f"/{CEILING_CLIENT}/v1/embeddings"

    def post(conn: http.client.HTTPConnection, body: bytes, inputs: int) -> None:
        conn.request("POST", path, body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        payload = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"server ceiling: HTTP {resp.status}: {payload[:300]!r}")
        got = len(json.loads(payload)["data"])
        if got != inputs:
            raise RuntimeError(f"server ceiling: {got} embeddings for {inputs} inputs")

    def bodies(batch: int) -> list[tuple[bytes, int]]:
        return [(json.dumps({"model": MODEL, "input": list(texts[i:i + batch]),
                             "dimensions": DIMENSIONS, "encoding_format": "base64"}).encode(),
                 len(texts[i:i + batch])) for i in range(0, len(texts), batch)]

    def model_s() -> float:
        return float(server.stats().get(CEILING_CLIENT, {}).get("model_s", 0.0))

    warm = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
    post(warm, *bodies(min(256, len(texts)))[0])  # untimed: first-call costs belong to no pair
    warm.close()
    pairs = []
    for batch, concurrency in sweep:
        work: queue.SimpleQueue[tuple[bytes, int]] = queue.SimpleQueue()
        requests = bodies(batch)
        for item in requests:
            work.put(item)
        conns = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
                 for _ in range(concurrency)]
        for conn in conns:
            conn.connect()

        def drain(conn: http.client.HTTPConnection, work: queue.SimpleQueue[tuple[bytes, int]] = work) -> None:
            while True:
                try:
                    item = work.get_nowait()
                except queue.Empty:
                    return
                post(conn, *item)

        in_model = model_s()
        server_cpu = tree_cpu_s(server.process.pid if server.process else None) or 0.0
        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            for future in [pool.submit(drain, conn) for conn in conns]:
                future.result()  # re-raises a failed request
        wall = time.perf_counter() - started
        for conn in conns:
            conn.close()
        pairs.append({"batch": batch, "concurrency": concurrency, "requests": len(requests),
                      "wall_s": round(wall, 3), "chunks_per_s": round(len(texts) / wall),
                      # seconds inside the model, summed over server threads: above wall_s means
                      # the model calls overlapped; far below it, HTTP/JSON/tokens took the rest
                      "server_model_s": round(model_s() - in_model, 3),
                      # the server process's CPU (every thread) for this pass
                      "server_cpu_s": round((tree_cpu_s(server.process.pid if server.process
                                                        else None) or 0.0) - server_cpu, 2)})
        log(f"server ceiling, batch {batch} x {concurrency}: {pairs[-1]}")
    best = max(pairs, key=lambda p: p["chunks_per_s"])
    return {"client": CEILING_CLIENT, "chunks": len(texts), "chunks_per_s": best["chunks_per_s"],
            "best": {"batch": best["batch"], "concurrency": best["concurrency"]}, "pairs": pairs}


def _copy_escape(text: str) -> str:
    """COPY text format escaping of one field."""
    return (text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
            .replace("\r", "\\r"))


def client_only_rss() -> float:
    """RSS (MiB) of a fresh interpreter that imported an HTTP embedding client and a driver.

    With the model behind an endpoint, a worker's floor is what any process needs to call it
    and write to Postgres; everything above it is the worker's own machinery.
    """
    code = ("import psutil, openai, psycopg\n"
            "client = openai.OpenAI(api_key='x', base_url='http://127.0.0.1:9/v1')\n"
            "print(psutil.Process().memory_info().rss)")
    return _child_rss_mib(code)


def _child_rss_mib(code: str) -> float:
    """Run ``code`` in a fresh interpreter that prints its own RSS in bytes; return MiB.

    Current RSS, not ``ru_maxrss``: Linux carries a forked child's max RSS over from its parent
    (this large benchmark process), which would inflate the floor.
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT)
    return round(int(out.stdout.strip().splitlines()[-1]) / 2**20, 1)


def model_only_rss() -> float:
    """RSS (MiB) of a fresh interpreter that loaded wordllama and embedded one batch."""
    code = (f"import sys, psutil; sys.path.insert(0, {str(ROOT)!r})\n"
            "from pgai_orm.embedders.local import _wordllama\n"
            "m = _wordllama(256); m.embed(['warm up'] * 512, norm=True)\n"
            "print(psutil.Process().memory_info().rss)")
    return _child_rss_mib(code)


# -- pgai ---------------------------------------------------------------------------------------

def ensure_pgai_venv(venv: Path) -> Path:
    """Create ``venv`` with pgai's worker on first use; return the ``pgai`` executable.

    torch is installed first from the exact version pip would pick for a CPU-only machine
    (``torch==2.13.0``; a local ``+cpu`` build is preferred when the index offers one), because
    pgai's worker extra pulls docling, and an unpinned torch drags in gigabytes of CUDA wheels.
    """
    exe = venv / "bin" / "pgai"
    if exe.exists():
        return exe
    log(f"creating {venv} with pgai[vectorizer-worker]=={PGAI_VERSION} (a few minutes)")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)
    subprocess.run([*pip, f"pgai[vectorizer-worker]=={PGAI_VERSION}"], check=True)
    return exe


class PgaiWorker:
    """``pgai vectorizer worker`` as a subprocess with its own log."""

    def __init__(self, exe: Path, url: str, env: dict[str, str], log_path: Path,
                 poll_interval: str | None) -> None:
        self.args = [str(exe), "vectorizer", "worker", "-d", url]
        if poll_interval is not None:
            self.args += ["--poll-interval", poll_interval]
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> int:
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT,
                                            env=self.env, start_new_session=True)
        return self.process.pid

    def check(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"pgai worker exited with {self.process.returncode}; "
                               f"see {self.log_path}:\n{tail(self.log_path)}")

    def stop(self) -> None:
        from pgai_orm.runtime.processes import stop_group

        if self.process is not None:
            stop_group(self.process.pid, 20.0, self.process)


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "<no log>"


def pgai_pending(conn: psycopg.Connection[Any]) -> int:
    """Rows waiting in pgai's queue for the benchmark's vectorizer (exact count)."""
    return int(scalar(conn, "SELECT ai.vectorizer_queue_pending(id, true) FROM ai.vectorizer"
                            " WHERE name = 'docs_pgai'") or 0)


def run_pgai(server_url: str, server: EmbeddingServer, rows: list[Row], args: argparse.Namespace,
             ids_views: list[int], ids_edit: list[int], log_dir: Path,
             sampler: RssSampler, result: dict[str, Any], pids: dict[str, int | None]) -> None:
    """Install pgai into its own database, backfill, measure latency and the update workloads.

    Fills ``result`` as it goes, so a phase that fails half-way still reports what it measured.
    """
    exe = ensure_pgai_venv(Path(args.pgai_venv))
    url = pgadmin.create_database(server_url, "bench_pgai")
    result["version"] = PGAI_VERSION
    create_source(url, rows)
    started = time.perf_counter()
    subprocess.run([str(exe.parent / "python"), "-c", "import pgai, sys; pgai.install(sys.argv[1])", url],
                   check=True, capture_output=True)
    result["install_s"] = round(time.perf_counter() - started, 2)
    with psycopg.connect(url, autocommit=True) as conn:
        create_pgai_vectorizer(conn, server.base_url("pgai"))
        result["queued_at_create"] = pgai_pending(conn)
    # pgai counts tokens with tiktoken only for OpenAI's own model names (its wheel carries
    # their encodings); for "wordllama" it sends the text as is, with no network access.
    env = {**os.environ, "OPENAI_API_KEY": API_KEY}
    env.pop("VIRTUAL_ENV", None)

    worker = PgaiWorker(exe, url, env, log_dir / "pgai-worker-1s.log", "1s")
    server.reset()
    meter = CpuMeter(dict(pids)).start()
    started = time.monotonic()
    worker_pid = worker.start()
    sampler.track("pgai_worker", worker_pid)
    meter.add("pgai worker", worker_pid)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            result["backfill"] = time_backfill(
                conn, started, len(rows), worker.check, lambda: pgai_pending(conn) == 0,
                args.backfill_timeout)
        result["backfill"]["cpu"] = meter.stop()
        result["backfill"]["server"] = server.stats().get("pgai", {})
        log(f"pgai backfill: {result['backfill']}")

        result["latency_poll_1s"] = steady_inserts(url, rows, 200_001, args.rate, args.duration,
                                                   args.grace)
        log(f"pgai 1s-poll latency: {result['latency_poll_1s']['latency_s']}")
        result["updates"] = pgai_updates(url, server, worker, ids_views, ids_edit)
    finally:
        worker.stop()
        sampler.untrack("pgai_worker")
    result["peak_rss_mib"] = sampler.peak_mib("pgai_worker")

    # Default poll interval: its first pass runs at start (the queue is empty by now), the next
    # one only after the interval, so the window shows what a row waits at the default setting.
    default = PgaiWorker(exe, url, env, log_dir / "pgai-worker-default.log", None)
    default.start()
    try:
        time.sleep(args.default_poll_settle)
        default.check()
        result["latency_poll_default"] = steady_inserts(url, rows, 300_001, args.rate,
                                                        args.duration, args.default_window)
        log(f"pgai default-poll latency: {result['latency_poll_default']}")
    finally:
        default.stop()
    result["default_poll_interval"] = pgai_default_poll_interval(exe)


def create_pgai_vectorizer(conn: psycopg.Connection[Any], base_url: str, table: str = TABLE,
                           name: str = "docs_pgai", store: str = STORE,
                           view: str = "docs_embedding") -> None:
    """pgai's vectorizer on ``table``, the same settings as ours (:func:`ours_config`)."""
    conn.execute(
        "SELECT ai.create_vectorizer(%s::regclass, name => %s,"
        " loading => ai.loading_column('content'),"
        " embedding => ai.embedding_openai(%s, %s, base_url => %s),"
        " chunking => ai.chunking_recursive_character_text_splitter(%s, %s),"
        " formatting => ai.formatting_python_template(%s),"
        " indexing => ai.indexing_none(),"
        " destination => ai.destination_table(target_table => %s, view_name => %s))",
        (table, name, MODEL, DIMENSIONS, base_url, CHUNK_SIZE, CHUNK_OVERLAP, TEMPLATE,
         store, view))


def pgai_updates(url: str, server: EmbeddingServer, worker: PgaiWorker, ids_views: list[int],
                 ids_edit: list[int]) -> dict[str, Any]:
    """Both update workloads against the running worker; calls and tokens from the server."""
    out: dict[str, Any] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for name, apply, ids in (("views", update_views, ids_views),
                                 ("small_edit", append_sentence, ids_edit)):
            server.reset()
            started = time.monotonic()
            apply(url, ids)
            queued = pgai_pending(conn)

            def drained() -> bool:
                worker.check()
                return pgai_pending(conn) == 0

            wait_for(drained, 300, 0.2, f"pgai {name} queue drained")
            time.sleep(3.0)  # a batch fetched just before the check may still be embedding
            stats = server.stats().get("pgai", {})
            out[name] = {"updates": len(ids), "queued": queued,
                         "calls": stats.get("calls", 0), "inputs": stats.get("inputs", 0),
                         "tokens": stats.get("tokens", 0),
                         "wall_s": round(time.monotonic() - started - 3.0, 2)}
            log(f"pgai {name}: {out[name]}")
    return out


def pgai_default_poll_interval(exe: Path) -> str:
    """The default of ``--poll-interval`` as pgai's own ``--help`` states it."""
    text = subprocess.run([str(exe), "vectorizer", "worker", "--help"], capture_output=True,
                          text=True).stdout
    flat = " ".join(text.split())
    at = flat.find("--poll-interval")
    default = flat.find("[default:", at)
    return flat[default:flat.find("]", default) + 1] if at >= 0 and default >= 0 else "unknown"


# -- ours ---------------------------------------------------------------------------------------

def ours_config(server: EmbeddingServer) -> dict[str, Any]:
    from pgai_orm.configuration import (
        ChunkingRecursiveCharacterTextSplitterConfig,
        EmbeddingOpenaiConfig,
        FormattingPythonTemplateConfig,
    )

    return {
        "embedding": EmbeddingOpenaiConfig(model=MODEL, dimensions=DIMENSIONS,
                                           base_url=server.base_url("ours")),
        "chunking": ChunkingRecursiveCharacterTextSplitterConfig(
            chunk_column="content", chunk_size=CHUNK_SIZE, chunk_overlap=CHUNK_OVERLAP),
        "formatting": FormattingPythonTemplateConfig(template=TEMPLATE),
    }


def create_ours(url: str, server: EmbeddingServer,
                tables: Sequence[tuple[str, str, str]] = ((TABLE, "docs_ours", STORE),)) -> int:
    """``op.create_vectorizer`` exactly as a migration runs it (the op's own statements), one per
    ``(table, name, store)`` in one transaction; returns the id of the first vectorizer."""
    import logging

    from sqlalchemy import create_engine

    from pgai_orm.alembic.operations import CreateVectorizerOp, catalog_install_statements

    logging.getLogger("alembic").setLevel(logging.WARNING)  # its INFO lines drown the progress

    ops = [CreateVectorizerOp(table, name=name, target_table=store, **ours_config(server))
           for table, name, store in tables]
    engine = create_engine(sqlalchemy_url(url))
    try:
        with engine.begin() as conn:
            for statement in [*catalog_install_statements(),
                              *(st for op in ops for st in op.statements())]:
                conn.execute(statement)
    finally:
        engine.dispose()
    with psycopg.connect(url, autocommit=True) as conn:
        return int(scalar(conn, "SELECT id FROM vectorizer.vectorizers WHERE name = %s",
                          (tables[0][1],)))


def applied_since(conn: psycopg.Connection[Any], vid: int, ids: list[int], lsn: str) -> int:
    """How many of ``ids`` have an applied LSN above ``lsn`` (their update was processed)."""
    return int(scalar(conn, "SELECT count(*) FROM vectorizer.applied_state a"
                            " JOIN unnest(%s::int[]) AS u(id) ON a.pk = jsonb_build_object('id', u.id)"
                            " WHERE a.vectorizer_id = %s AND a.lsn > %s::pg_lsn", (ids, vid, lsn)))


def run_ours(server_url: str, servers: str, server: EmbeddingServer, rows: list[Row],
             args: argparse.Namespace, ids_views: list[int], ids_edit: list[int], log_dir: Path,
             sampler: RssSampler, result: dict[str, Any], pids: dict[str, int | None]) -> None:
    """Backfill, latency and the update workloads through ``vectorizer connector`` + ``worker``.

    Fills ``result`` as it goes, like :func:`run_pgai`.
    """
    from infra.services import DEV_SESSION_TIMEOUT_S, PipelineServices

    url = pgadmin.create_database(server_url, "bench_ours")
    create_source(url, rows)
    vid = create_ours(url, server)
    os.environ["OPENAI_API_KEY"] = API_KEY  # PipelineServices passes our environment on
    worker_args = ("--session-timeout", str(DEV_SESSION_TIMEOUT_S), "--poll-interval", "1",
                   "--batch-within", str(args.batch_within))  # the demo's dev settings
    services = PipelineServices(url, servers, log_dir / "ours", workers=1, mark=str(log_dir),
                                extra_worker_args=worker_args)
    result["worker_args"] = list(worker_args)
    server.reset()
    meter = CpuMeter(dict(pids)).start()
    started = time.monotonic()
    services.start()
    for service in services.services:
        sampler.track(f"ours_{service.name}", service.pid or 0)
        meter.add(f"ours {service.name}", service.pid)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            result["backfill"] = time_backfill(conn, started, len(rows), services.check_alive,
                                               lambda: True, args.backfill_timeout)
        result["backfill"]["cpu"] = meter.stop()
        result["backfill"]["server"] = server.stats().get("ours", {})
        log(f"ours backfill: {result['backfill']}")

        result["latency"] = steady_inserts(url, rows, 100_001, args.rate, args.duration, args.grace)
        log(f"ours latency: {result['latency']['latency_s']}")

        out: dict[str, Any] = {}
        result["updates"] = out
        with psycopg.connect(url, autocommit=True) as conn:
            for name, apply, ids in (("views", update_views, ids_views),
                                     ("small_edit", append_sentence, ids_edit)):
                server.reset()
                lsn = str(scalar(conn, "SELECT pg_current_wal_lsn()"))
                begun = time.monotonic()
                apply(url, ids)

                def caught_up(ids: list[int] = ids, lsn: str = lsn) -> bool:
                    services.check_alive()
                    return applied_since(conn, vid, ids, lsn) >= len(ids)

                wait_for(caught_up, 300, 0.2, f"our {name} applied")
                stats = server.stats().get("ours", {})
                out[name] = {"updates": len(ids), "calls": stats.get("calls", 0),
                             "inputs": stats.get("inputs", 0), "tokens": stats.get("tokens", 0),
                             "wall_s": round(time.monotonic() - begun, 2)}
                log(f"ours {name}: {out[name]}")
    finally:
        services.stop()
        for service in services.services:
            sampler.untrack(f"ours_{service.name}")
        # A supervisor restarting a crashed worker would hide inside the timings: report it.
        result["service_restarts"] = {
            s.name: s.log_path.read_text(errors="replace").count("; restarting")
            for s in services.services if s.log_path.exists()}
    result["peak_rss_mib"] = {s.name: sampler.peak_mib(f"ours_{s.name}") for s in services.services}


# -- orchestration ------------------------------------------------------------------------------

def phase(results: dict[str, Any], name: str, fn: Callable[[dict[str, Any]], None]) -> None:
    """Run one phase filling ``results[name]``; on failure record the error and go on."""
    log(f"phase {name} ...")
    started = time.monotonic()
    out: dict[str, Any] = {}
    results[name] = out
    try:
        fn(out)
    except Exception as exc:  # noqa: BLE001 - a failed phase is a result, not the end of the run
        traceback.print_exc()
        out["error"] = f"{type(exc).__name__}: {exc}"
    log(f"phase {name} done in {time.monotonic() - started:.0f}s")


@contextmanager
def stack_urls() -> Iterator[tuple[str, str, int | None]]:
    """(server URL, bootstrap servers, broker pid or None): the environment's or an embedded stack."""
    url, servers = os.environ.get("DATABASE_URL"), os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if url and servers:
        yield url, servers, None
        return
    from infra.stack import EmbeddedStack

    stack = EmbeddedStack(Path(tempfile.mkdtemp(prefix="vz-vs-pgai-")))
    info = stack.up()
    try:
        yield info.database_url, info.kafka_bootstrap_servers, stack.broker.pid
    finally:
        stack.down()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=20.0, help="inserts per second")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of steady inserts")
    parser.add_argument("--grace", type=float, default=30.0,
                        help="seconds after the last insert before a latency window closes")
    parser.add_argument("--default-window", type=float, default=330.0,
                        help="the same, for pgai's worker at its default poll interval")
    parser.add_argument("--default-poll-settle", type=float, default=10.0,
                        help="seconds for pgai's default-interval worker to finish its first pass")
    parser.add_argument("--updates", type=int, default=1000)
    parser.add_argument("--batch-within", type=float, default=0.2,
                        help="our worker's batch window in seconds (the demo's default)")
    parser.add_argument("--backfill-timeout", type=float, default=900.0)
    parser.add_argument("--pgai-venv", default=str(PGAI_VENV))
    parser.add_argument("--skip", action="append", default=[], choices=["limits", "pgai", "ours"])
    args = parser.parse_args()

    rng = random.Random(20261124)
    load_before = os.getloadavg()[0]  # other work on the machine skews every figure: record it
    log_dir = Path(tempfile.mkdtemp(prefix="vs-pgai-logs-"))
    log(f"logs in {log_dir}")
    rows, corpus = build_rows(args.rows)
    ids_views = pick_ids(rng, rows, args.updates)
    ids_edit = pick_ids(rng, rows, args.updates)
    results: dict[str, Any] = {
        "benchmark": "vs_pgai", "machine": machine(), "corpus": corpus,
        "settings": {"model": f"{MODEL} l2_supercat via OpenAI-compatible local endpoint",
                     "dimensions": DIMENSIONS, "chunk_size": CHUNK_SIZE,
                     "chunk_overlap": CHUNK_OVERLAP, "template": TEMPLATE, "rows": args.rows,
                     "insert_rate_per_s": args.rate, "insert_duration_s": args.duration,
                     "latency_window_after_last_insert_s": args.grace,
                     "default_poll_window_s": args.default_window, "updates": args.updates},
        "logs": str(log_dir),
    }
    server = EmbeddingServer(log_dir)
    server.start()
    try:
        with stack_urls() as (server_url, servers, broker_pid), RssSampler() as sampler:
            sampler.track("embedding_server", server.process.pid)  # type: ignore[union-attr]
            if broker_pid:
                sampler.track("broker", broker_pid)
            with pgadmin.temporary_database(server_url, prefix="bench_limits") as limits_url:
                if "limits" not in args.skip:
                    phase(results, "limits",
                          lambda out: out.update(limits(limits_url, rows, ids_edit, server)))
            # the shared processes whose CPU each backfill is charged with (what it made them do)
            pids = {"model server": server.process.pid if server.process else None,
                    "postgres": postmaster_pid(server_url)}
            for name, fn in (("pgai", lambda out: run_pgai(server_url, server, rows, args, ids_views,
                                                           ids_edit, log_dir, sampler, out, pids)),
                             ("ours", lambda out: run_ours(server_url, servers, server, rows, args,
                                                           ids_views, ids_edit, log_dir, sampler, out,
                                                           {**pids, "broker": broker_pid}))):
                if name in args.skip:
                    continue
                pgadmin.drop_database(server_url, f"bench_{name}")
                try:
                    phase(results, name, fn)
                finally:
                    pgadmin.drop_database(server_url, f"bench_{name}")
            results["broker_peak_rss_mib"] = sampler.peak_mib("broker")
            results["embedding_server_peak_rss_mib"] = sampler.peak_mib("embedding_server")
    finally:
        server.stop()
    results["load_avg_1m_before_after"] = [load_before, os.getloadavg()[0]]
    results["backfill_chunks_per_s_ratios"] = backfill_ratios(results)
    report(results)
    path = write_json("vs_pgai", results)
    print(f"\nwrote {path}")


def _get(d: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _latency(d: dict[str, Any] | None) -> str:
    if not d:
        return "-"
    if d.get("not_searchable_at_close"):
        return (f">= {d['lower_bound_p50_s']:.1f} / {d['searchable']}/{d['rows']} searchable"
                f" after {d['window_after_last_insert_s']:.0f}s")
    lat = d["latency_s"]
    return f"{lat['p50']:.2f} / {lat['p95']:.2f} / {lat['max']:.2f}"


def backfill_ratios(r: dict[str, Any]) -> dict[str, float | None]:
    """Backfill chunks/s after the first row: ours and pgai over the server ceiling, ours over pgai."""
    ours = _get(r, "ours", "backfill", "chunks_per_s_after_first_row")
    pgai = _get(r, "pgai", "backfill", "chunks_per_s_after_first_row")
    ceiling = _get(r, "limits", "server_ceiling", "chunks_per_s")

    def over(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a is not None and b else None

    return {"ours_over_ceiling": over(ours, ceiling), "pgai_over_ceiling": over(pgai, ceiling),
            "ours_over_pgai": over(ours, pgai)}


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _throughput_limits(lim: dict[str, Any]) -> str | None:
    """The chunks/s limits side by side: the bare model in-process and the model server's ceiling."""
    bare, ceiling = lim.get("bare_model_chunks_per_s"), lim.get("server_ceiling")
    parts = [f"{bare:,} bare model" if bare else None,
             f"{ceiling['chunks_per_s']:,} server ceiling (batch {ceiling['best']['batch']}"
             f" x {ceiling['best']['concurrency']})" if ceiling else None]
    return " / ".join(p for p in parts if p) or None


def _backfill_cpu(system: dict[str, Any]) -> str | None:
    """``total core-s (cores busy / cores)`` of one system's backfill."""
    cpu = _get(system, "backfill", "cpu")
    if not cpu:
        return None
    return f"{cpu['total_cpu_s']:.1f} ({cpu['cores_busy']:.2f} of {cpu['cores']} cores)"


def _cpu_floor(system: dict[str, Any]) -> str | None:
    """The shortest backfill that system's CPU work allows on this machine's cores."""
    cpu = _get(system, "backfill", "cpu")
    if not cpu:
        return None
    return f"{cpu['total_cpu_s'] / cpu['cores']:.2f} (measured {cpu['wall_s']:.2f})"


def _server_ms_per_1k(cpu_s: float | None, chunks: int | None) -> str | None:
    return f"{cpu_s / chunks * 1_000_000:.0f}" if cpu_s is not None and chunks else None


def _ceiling_server_cpu(lim: dict[str, Any]) -> str | None:
    """The model server's CPU per 1k chunks in the ceiling's best pass (nothing else running)."""
    ceiling = lim.get("server_ceiling")
    if not ceiling:
        return None
    best = next(p for p in ceiling["pairs"] if p["batch"] == ceiling["best"]["batch"]
                and p["concurrency"] == ceiling["best"]["concurrency"])
    return _server_ms_per_1k(best.get("server_cpu_s"), ceiling["chunks"])


def report(r: dict[str, Any]) -> None:
    """One table: each measure, ours, pgai, and the physical limit beside it."""
    lim, pg, us = r.get("limits", {}), r.get("pgai", {}), r.get("ours", {})
    ours_cps = _get(us, "backfill", "chunks_per_s_after_first_row")
    pgai_cps = _get(pg, "backfill", "chunks_per_s_after_first_row")
    ratios = backfill_ratios(r)
    rows = [
        ("backfill wall (s)", _get(us, "backfill", "wall_s"), _get(pg, "backfill", "wall_s"),
         f"{_get(lim, 'embed_plus_copy_s')} (model {_get(lim, 'bare_model_embed_s')} + COPY {_get(lim, 'copy_s')})"
         if lim.get("copy_s") else None),
        ("backfill: first row searchable after (s)", _get(us, "backfill", "first_row_s"),
         _get(pg, "backfill", "first_row_s"), "-"),
        ("backfill: chunks/s after the first row", ours_cps, pgai_cps, _throughput_limits(lim)),
        ("share of the server ceiling (chunks/s after the first row)", _ratio(ratios.get("ours_over_ceiling")),
         _ratio(ratios.get("pgai_over_ceiling")), "1.00 (goal: ours >= 0.90)"),
        ("ours / pgai, chunks/s after the first row", _ratio(ratios.get("ours_over_pgai")),
         "1.00" if pgai_cps else "-", "-"),
        ("backfill CPU, all processes (core-s)", _backfill_cpu(us), _backfill_cpu(pg), "-"),
        ("  that CPU on all cores: shortest backfill (s)", _cpu_floor(us), _cpu_floor(pg), "-"),
        ("  of it the model server's (core-s)", _get(us, "backfill", "cpu", "cpu_s", "model server"),
         _get(pg, "backfill", "cpu", "cpu_s", "model server"), "-"),
        ("  model server CPU per 1k chunks (ms)",
         _server_ms_per_1k(_get(us, "backfill", "cpu", "cpu_s", "model server"),
                           _get(us, "backfill", "chunks")),
         _server_ms_per_1k(_get(pg, "backfill", "cpu", "cpu_s", "model server"),
                           _get(pg, "backfill", "chunks")),
         f"{_ceiling_server_cpu(lim)} (ceiling's best pass)" if _ceiling_server_cpu(lim) else None),
        ("backfill rows/s", _get(us, "backfill", "rows_per_s"), _get(pg, "backfill", "rows_per_s"),
         round(r["settings"]["rows"] / lim["embed_plus_copy_s"]) if lim.get("embed_plus_copy_s") else None),
        ("chunks stored", _get(us, "backfill", "chunks"), _get(pg, "backfill", "chunks"), lim.get("chunks")),
        ("embedding calls (backfill)", _get(us, "backfill", "server", "calls"),
         _get(pg, "backfill", "server", "calls"),
         -(-lim["chunks"] // 2048) if lim.get("chunks") else None),
        ("tokens sent (backfill)", _get(us, "backfill", "server", "tokens"),
         _get(pg, "backfill", "server", "tokens"), lim.get("tokens")),
        ("latency p50/p95/max (s), ours | pgai 1s poll", _latency(us.get("latency")),
         _latency(pg.get("latency_poll_1s")),
         f"{_get(lim, 'one_row_embed_insert_s', 'p50'):.4f} (one row in-process)"
         if lim.get("one_row_embed_insert_s") else None),
        ("latency, pgai default poll (5m)", "-", _latency(pg.get("latency_poll_default")), "-"),
    ]
    for name, label in (("views", "views updates"), ("small_edit", "small edits")):
        changed = lim.get("small_edit_changed_chunks")
        floor_calls = 0 if name == "views" else (-(-changed // 2048) if changed else None)
        floor_inputs = 0 if name == "views" else changed
        floor_tokens = 0 if name == "views" else lim.get("small_edit_changed_tokens")
        rows.append((f"{label}: embedding calls", _get(us, "updates", name, "calls"),
                     _get(pg, "updates", name, "calls"), floor_calls))
        rows.append((f"{label}: chunks embedded", _get(us, "updates", name, "inputs"),
                     _get(pg, "updates", name, "inputs"), floor_inputs))
        rows.append((f"{label}: tokens sent", _get(us, "updates", name, "tokens"),
                     _get(pg, "updates", name, "tokens"), floor_tokens))
    ours_rss = us.get("peak_rss_mib") or {}
    rows.append(("peak RSS worker (MiB)", ours_rss.get("worker-1"), pg.get("peak_rss_mib"),
                 f"{lim.get('client_only_rss_mib')} (openai+psycopg imported)"))
    rows.append(("peak RSS connector (MiB)", ours_rss.get("connector"), "n/a (triggers)", "-"))
    rows.append(("peak RSS Kafka broker (MiB)", r.get("broker_peak_rss_mib"), "n/a", "-"))
    rows.append(("peak RSS model server, shared (MiB)", r.get("embedding_server_peak_rss_mib"),
                 r.get("embedding_server_peak_rss_mib"), f"{lim.get('model_only_rss_mib')} (model alone)"))
    print_table(("measure", "ours", "pgai 0.12.1", "physical limit"), rows,
                title=f"{r['settings']['rows']} rows of stdlib docs, wordllama 256d behind an "
                      f"OpenAI-compatible endpoint, {r['machine']['cpus']} CPUs")
    restarts = {k: v for k, v in (us.get("service_restarts") or {}).items() if v}
    if restarts:
        print(f"ours: services restarted during the run (timings include it): {restarts}")
    for name in ("limits", "pgai", "ours"):
        if isinstance(r.get(name), dict) and "error" in r[name]:
            print(f"{name}: FAILED: {r[name]['error']}")


if __name__ == "__main__":
    main()

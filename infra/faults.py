"""Fault injection against the dev stack: the pipeline as processes to kill, a seeded load of
writes with faults at random moments of it, and an audit of the store against the source.

Used by ``tests/reliability`` (a few faults) and ``bench/faults.py`` (more rounds, prints the
tally). The faults themselves are ``kill -9`` of the connector or of the worker (the supervisor
and its faust children), and the restarts of the stack's own services
(:meth:`infra.postgres.EmbeddedPostgres.restart`, :meth:`infra.broker.TansuBroker.restart`).

The audit recomputes, outside the pipeline, what the store must hold from the source table
alone (chunker and formatter of the vectorizer's config) and counts rows checked, lost (missing
chunks), duplicated (a chunk twice) and stale (a chunk whose text is not the current one, or a
row the source no longer has).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from alembic.migration import MigrationContext
from alembic.operations import Operations
from psycopg import sql
from sqlalchemy import create_engine

from infra.services import DEV_SESSION_TIMEOUT_S
from infra.urls import sqlalchemy_url
from pgai_orm.alembic import register_operations
from pgai_orm.configuration import (
    ChunkingRecursiveCharacterTextSplitterConfig,
    EmbeddingLocalConfig,
    FormattingPythonTemplateConfig,
    VectorizerConfig,
)
from pgai_orm.runtime.processes import stop_process
from pgai_orm.runtime.waiting import wait_until
from processors.chunking import chunker_for
from processors.formatting import formatter_for

__all__ = ["TEXT", "Audit", "Load", "Pipeline", "inject", "make_pipeline", "run_sql"]

ROOT = Path(__file__).resolve().parents[1]

TEXT = (
    "Postgres streams every change through logical replication. The connector turns each "
    "change into an event. Kafka keeps the events in order per row. Faust agents chunk and "
    "embed the text. The store keeps one vector per chunk. "
)
WORDS = ("alpha", "beta", "gamma", "delta", "replication", "kafka", "vector", "chunk", "store")

#: How long a stopped service may take to finish its batch before it gets SIGKILL.
STOP_TIMEOUT_S = 40.0


#: The benchmarks' vectorizer for :class:`Load`: the offline model at 64 dimensions, chunks of
#: about two sentences (several per row), a template that reads ``title``.
LOAD_CONFIG = VectorizerConfig(
    embedding=EmbeddingLocalConfig(model="wordllama", dimensions=64),
    chunking=ChunkingRecursiveCharacterTextSplitterConfig(
        chunk_column="content", chunk_size=120, chunk_overlap=20, separators=(". ", " ")),
    formatting=FormattingPythonTemplateConfig(template="$title - $chunk"),
).to_dict()

def run_sql(url: str, query: Any, params: Any = None) -> list[tuple[Any, ...]]:
    """Run one statement in its own autocommit connection; its rows, or [] when it has none."""
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


@dataclass
class Audit:
    rows_checked: int = 0
    lost: int = 0
    duplicated: int = 0
    stale: int = 0
    bad_embeddings: int = 0
    details: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return self.rows_checked > 0 and not (self.lost or self.duplicated or self.stale
                                               or self.bad_embeddings)


@dataclass
class Tally:
    """Audits summed over the rounds of a benchmark (what ``bench/faults.py`` and
    ``bench/lifecycle.py`` print)."""

    rows_checked: int = 0
    lost: int = 0
    duplicated: int = 0
    stale: int = 0

    def add(self, audit: Audit) -> None:
        self.rows_checked += audit.rows_checked
        self.lost += audit.lost
        self.duplicated += audit.duplicated
        self.stale += audit.stale

    @property
    def clean(self) -> bool:
        return self.lost == self.duplicated == self.stale == 0

    def as_dict(self) -> dict[str, int]:
        return {"rows checked": self.rows_checked, "lost": self.lost,
                "duplicated": self.duplicated, "stale": self.stale}


@dataclass
class Pipeline:
    """One vectorizer on one source table, with its connector and worker as processes.

    ``config`` is the vectorizer's config as the catalog stores it (``to_dict()``).
    """

    url: str
    servers: str
    schema: str
    table: str
    vectorizer_id: int
    config: dict[str, Any]
    prefix: str
    log_dir: Path
    key: str = "id"
    env: dict[str, str] = field(default_factory=dict)
    partitions: int = 2
    connector: subprocess.Popen[bytes] | None = None
    worker: subprocess.Popen[bytes] | None = None
    extra_worker_args: tuple[str, ...] = ()

    def sql(self, query: Any, params: Any = None) -> list[tuple[Any, ...]]:
        return run_sql(self.url, query, params)

    # -- processes --------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        return {**os.environ, "DATABASE_URL": self.url, "KAFKA_BOOTSTRAP_SERVERS": self.servers,
                **self.env}

    def start_connector(self) -> None:
        log = (self.log_dir / "connector.log").open("ab")
        self.connector = subprocess.Popen(
            [sys.executable, "-m", "connector.cli", "--topic-prefix", self.prefix,
             "--partitions", str(self.partitions), "--catalog-poll", "0.2", "--broker-check", "1",
             "--snapshot-chunk", "50"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=self._env(), start_new_session=True)

    def start_worker(self) -> None:
        log = (self.log_dir / "worker.log").open("ab")
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "processors.cli", "--topic-prefix", self.prefix,
             "--session-timeout", str(DEV_SESSION_TIMEOUT_S), "--batch-within", "0.2",
             "--poll-interval", "0.5",
             "--without-web", "--loglevel", "info", *self.extra_worker_args],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=self._env(), start_new_session=True)

    def start(self) -> Pipeline:
        self.start_connector()
        self.start_worker()
        return self

    @staticmethod
    def _stop(process: subprocess.Popen[bytes] | None, *, crash: bool) -> None:
        """Stop the whole process group (the worker supervisor and its faust children);
        ``crash``: SIGKILL at once, as ``kill -9`` would."""
        if process is not None:
            stop_process(process.pid, STOP_TIMEOUT_S, process=process, group=True,
                         graceful=not crash)

    def kill_connector(self, *, restart: bool = True) -> None:
        self._stop(self.connector, crash=True)
        if restart:
            self.start_connector()

    def stop_connector(self) -> None:
        """Stop the connector as an operator would (SIGTERM); :meth:`start_connector` again."""
        self._stop(self.connector, crash=False)

    def kill_worker(self) -> None:
        self._stop(self.worker, crash=True)
        self.start_worker()

    def stop_worker(self) -> None:
        """Stop the worker as an operator would (SIGTERM); :meth:`start_worker` starts it again."""
        self._stop(self.worker, crash=False)

    def stop(self) -> None:
        self._stop(self.worker, crash=False)
        self._stop(self.connector, crash=False)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(self.log_dir.glob("*.log")))

    # -- the audit --------------------------------------------------------------------------

    def store_table(self) -> tuple[str, str]:
        schema, table = self.sql("SELECT target_schema, target_table FROM vectorizer.vectorizers"
                                 " WHERE id = %s", (self.vectorizer_id,))[0]
        return schema, table

    def source_rows(self) -> list[dict[str, Any]]:
        return [r[0] for r in self.sql(
            sql.SQL("SELECT to_jsonb(t) FROM {} t").format(sql.Identifier(self.schema, self.table)))]

    def audit(self) -> Audit:
        objects = VectorizerConfig.from_dict(dict(self.config))
        chunker, formatter = chunker_for(objects.chunking), formatter_for(objects.formatting)
        column = objects.source_column
        dims = objects.embedding.dimensions
        expected: dict[tuple[Any, int], str] = {}
        rows = self.source_rows()
        for row in rows:
            text = row.get(column)
            chunks = chunker(text) if text else []
            for seq, chunk in enumerate(chunks):
                formatter(chunk, row)  # the template must render for every expected chunk
                expected[(row[self.key], seq)] = chunk
        schema, table = self.store_table()
        stored = self.sql(sql.SQL("SELECT {k}, chunk_seq, chunk, vector_dims(embedding) FROM {t}")
                          .format(k=sql.Identifier(self.key), t=sql.Identifier(schema, table)))
        counts = Counter((k, seq) for k, seq, _, _ in stored)
        audit = Audit(rows_checked=len(rows))
        seen: dict[tuple[Any, int], str] = {}
        for k, seq, chunk, d in stored:
            seen[(k, seq)] = chunk
            if d != dims:
                audit.bad_embeddings += 1
                audit.details.append(f"{k}/{seq}: {d} dims")
        for key, n in counts.items():
            if n > 1:
                audit.duplicated += n - 1
                audit.details.append(f"duplicated {key}")
        for key, chunk in expected.items():
            if key not in seen:
                audit.lost += 1
                audit.details.append(f"lost {key}")
            elif seen[key] != chunk:
                audit.stale += 1
                audit.details.append(f"stale {key}")
        for key in seen.keys() - expected.keys():
            audit.stale += 1
            audit.details.append(f"left over {key}")
        return audit

    def settle(self, what: str, timeout: float = 180.0) -> Audit:
        """:meth:`wait_clean` for a benchmark round: a store that does not recover in time is
        reported on stderr and its audit returned, so the round counts instead of aborting."""
        try:
            return self.wait_clean(what, timeout=timeout)
        except AssertionError as exc:
            print(str(exc)[:3000], file=sys.stderr)
            return self.audit()

    def wait_clean(self, what: str, timeout: float = 90.0) -> Audit:
        """Poll the audit until the store equals the source; at the deadline raise an
        ``AssertionError`` (a test fails with it) carrying the last audit and the logs."""
        if not wait_until(lambda: self.audit().clean, timeout, interval=0.3):
            audit = self.audit()
            raise AssertionError(f"{what}: {audit.__dict__ | {'details': audit.details[:20]}}\n"
                                 f"{self.logs()}")
        return self.audit()


def migration(url: str, step: Callable[[Any], Any]) -> Any:
    """Run ``step(op)`` in one transaction with Alembic's Operations, as a migration would."""
    register_operations()
    engine = create_engine(sqlalchemy_url(url))
    try:
        with engine.begin() as conn:
            return step(Operations(MigrationContext.configure(conn)))
    finally:
        engine.dispose()


_CONFIG_PARTS = ("embedding", "chunking", "formatting", "loading", "parsing", "indexing",
                 "processing", "text_indexing")


def create_in_migration(op: Any, source: str, config: VectorizerConfig | Mapping[str, Any],
                        **options: Any) -> int:
    """``op.create_vectorizer`` on ``source`` with ``config`` (an object or the catalog's form)
    inside a migration; the new vectorizer's id. ``options`` are the operation's other
    arguments; a config part among them (``embedding=...``) replaces that part of ``config``."""
    objects = config if isinstance(config, VectorizerConfig) else VectorizerConfig.from_dict(dict(config))
    parts = {part: getattr(objects, part) for part in _CONFIG_PARTS}
    parts.update((k, options.pop(k)) for k in _CONFIG_PARTS if k in options)
    op.create_vectorizer(source=source, **parts, **options)
    # the serial the catalog function just drew, in this session
    return int(op.get_bind().exec_driver_sql(
        "SELECT currval(pg_get_serial_sequence('vectorizer.vectorizers', 'id'))").scalar_one())


def _create_vectorizer(url: str, table: str, config: Mapping[str, Any]) -> int:
    """``op.create_vectorizer`` on ``public.<table>``, as a migration would; its id."""
    return int(migration(url, lambda op: create_in_migration(op, table, config)))


def recreate_vectorizer(pipeline: Pipeline, between: Callable[[], None] | None) -> None:
    """``op.drop_vectorizer(drop_all=True)`` then ``op.create_vectorizer`` with the same config:
    in two migrations with ``between()`` run in the gap, or (``between=None``) in one."""
    name = pipeline.sql("SELECT name FROM vectorizer.vectorizers WHERE id = %s",
                        (pipeline.vectorizer_id,))[0][0]

    def drop(op: Any) -> None:
        op.drop_vectorizer(name, drop_all=True)

    if between is None:
        def both(op: Any) -> int:
            drop(op)
            return create_in_migration(op, pipeline.table, pipeline.config)

        pipeline.vectorizer_id = int(migration(pipeline.url, both))
        return
    migration(pipeline.url, drop)
    between()
    pipeline.vectorizer_id = _create_vectorizer(pipeline.url, pipeline.table, pipeline.config)


def make_pipeline(url: str, servers: str, log_dir: Path, config: Mapping[str, Any],
                  env: dict[str, str] | None = None) -> Pipeline:
    """A fresh table ``(id, title, content, views)`` for :class:`Load`, its vectorizer with
    ``config`` (the catalog's form; it chunks ``content``, its template may use ``title``)
    and the processes, not started yet."""
    table = f"docs_{uuid.uuid4().hex[:8]}"
    run_sql(url, sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, title text, content text, views int"
                         " DEFAULT 0)").format(sql.Identifier(table)))
    vectorizer_id = _create_vectorizer(url, table, config)
    return Pipeline(url, servers, "public", table, vectorizer_id, dict(config),
                    f"r{uuid.uuid4().hex[:6]}", log_dir, env=env or {})


def text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) + ". " + \
        TEXT * rng.randint(0, 2)


@dataclass
class Load:
    """Seeded mixed writes; ``ids`` is the set of rows that exist."""

    pipeline: Pipeline
    rng: random.Random
    next_id: int = 1
    ids: set[int] = field(default_factory=set)
    writes: int = 0

    def one(self) -> None:
        p, rng = self.pipeline, self.rng
        t = sql.Identifier(p.table)
        roll = rng.random()
        if roll < 0.5 or len(self.ids) < 5:
            p.sql(sql.SQL("INSERT INTO {} (id, title, content) VALUES (%s, %s, %s)").format(t),
                  (self.next_id, f"doc {self.next_id}", text(rng)))
            self.ids.add(self.next_id)
            self.next_id += 1
        elif roll < 0.8:
            target = rng.choice(sorted(self.ids))
            if rng.random() < 0.7:
                p.sql(sql.SQL("UPDATE {} SET content = %s WHERE id = %s").format(t), (text(rng), target))
            else:
                p.sql(sql.SQL("UPDATE {} SET title = %s, views = views + 1 WHERE id = %s").format(t),
                      (f"title {rng.random():.4f}", target))
        else:
            target = rng.choice(sorted(self.ids))
            p.sql(sql.SQL("DELETE FROM {} WHERE id = %s").format(t), (target,))
            self.ids.discard(target)
        self.writes += 1

    def delete_some(self, n: int) -> None:
        """Delete ``n`` existing rows (right after a broker restart: their events are lost)."""
        for target in self.rng.sample(sorted(self.ids), min(n, len(self.ids))):
            self.pipeline.sql(sql.SQL("DELETE FROM {} WHERE id = %s")
                              .format(sql.Identifier(self.pipeline.table)), (target,))
            self.ids.discard(target)
            self.writes += 1

    def run(self, n: int) -> None:
        for _ in range(n):
            self.one()


def inject(load: Load, faults: list[tuple[str, Callable[[], None]]], writes_between: int,
           record: list[str]) -> None:
    """Between seeded bursts of writes, inject each fault at a random point of the burst."""
    for name, fault in faults:
        before = load.rng.randint(1, writes_between)
        load.run(before)
        fault()
        record.append(name)
        load.run(writes_between - before)

"""The whole pipeline as processes (connector + `vectorizer worker`), and a store audit.

Used by tests/reliability and bench/faults.py. The audit recomputes, outside the pipeline, what the
store must hold from the source table alone (chunker and formatter of the vectorizer's config) and
counts rows checked, lost (missing chunks), duplicated (a chunk twice) and stale (a chunk whose text
is not the current one, or a row the source no longer has).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psycopg
from psycopg import sql

from pgai_orm.catalog import catalog_sql
from pgai_orm.configuration import (
    ChunkingRecursiveCharacterTextSplitterConfig,
    EmbeddingLocalConfig,
    EmbeddingOpenaiConfig,
    FormattingPythonTemplateConfig,
    VectorizerConfig,
)
from processors.chunking import chunker_for
from processors.formatting import formatter_for
from processors.pipeline import config_objects
from tests import polling

ROOT = Path(__file__).resolve().parents[2]

TEXT = (
    "Postgres streams every change through logical replication. The connector turns each "
    "change into an event. Kafka keeps the events in order per row. Faust agents chunk and "
    "embed the text. The store keeps one vector per chunk. "
)


def local_config(template: str = "$title - $chunk", dimensions: int = 64) -> dict[str, Any]:
    return VectorizerConfig(
        embedding=EmbeddingLocalConfig(model="wordllama", dimensions=dimensions),
        chunking=ChunkingRecursiveCharacterTextSplitterConfig(
            chunk_column="content", chunk_size=120, chunk_overlap=20, separators=[". ", " "]),
        formatting=FormattingPythonTemplateConfig(template=template),
    ).to_dict()


#: the environment variable the OpenAI configs below name for their key
KEY_ENV = "RELIABILITY_KEY"


def openai_config(base_url: str, dimensions: int = 64) -> dict[str, Any]:
    """:func:`local_config` with the OpenAI embedder pointed at a fake server (key in KEY_ENV)."""
    config = local_config(dimensions=dimensions)
    config["embedding"] = EmbeddingOpenaiConfig(
        model="text-embedding-3-small", dimensions=dimensions, api_key_name=KEY_ENV,
        base_url=base_url).to_dict()
    return config


def run_sql(url: str, query: Any, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def create_vectorizer(url: str, schema: str, table: str, config: dict[str, Any],
                      placeholders: list[str], name: str | None = None,
                      target_schema: str | None = None, target_table: str | None = None) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(catalog_sql())
        return conn.execute(
            "SELECT vectorizer.create_vectorizer(%s, %s, %s, %s, %s, NULL, NULL, %s::jsonb, %s, %s, %s)",
            (schema, table, name, target_schema, target_table, orjson.dumps(config).decode(),
             config["chunking"]["chunk_column"], placeholders, config["embedding"]["dimensions"]),
        ).fetchone()[0]  # type: ignore[index]


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
class Pipeline:
    """One vectorizer on one source table, with its connector and worker as processes."""

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
             "--session-timeout", "3", "--batch-within", "0.2", "--poll-interval", "0.5",
             "--without-web", "--loglevel", "info", *self.extra_worker_args],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=self._env(), start_new_session=True)

    def start(self) -> Pipeline:
        self.start_connector()
        self.start_worker()
        return self

    @staticmethod
    def _kill(process: subprocess.Popen[bytes] | None, sig: int) -> None:
        """Signal the whole process group (the worker supervisor and its faust children)."""
        if process is None or process.poll() is not None and sig != signal.SIGKILL:
            return
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if sig == signal.SIGKILL:  # orphans of the group too
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def kill_connector(self) -> None:
        self._kill(self.connector, signal.SIGKILL)
        self.start_connector()

    def kill_worker(self) -> None:
        self._kill(self.worker, signal.SIGKILL)
        self.start_worker()

    def stop(self) -> None:
        self._kill(self.worker, signal.SIGTERM)
        self._kill(self.connector, signal.SIGTERM)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(self.log_dir.glob("*.log")))

    # -- the audit --------------------------------------------------------------------------

    def store_table(self) -> tuple[str, str]:
        return self.sql("SELECT target_schema, target_table FROM vectorizer.vectorizers"
                        " WHERE id = %s", (self.vectorizer_id,))[0]  # type: ignore[return-value]

    def source_rows(self) -> list[dict[str, Any]]:
        return [r[0] for r in self.sql(
            sql.SQL("SELECT to_jsonb(t) FROM {} t").format(sql.Identifier(self.schema, self.table)))]

    def audit(self) -> Audit:
        objects = config_objects(self.config)
        chunker, formatter = chunker_for(objects.chunking), formatter_for(objects.formatting)
        column = self.config["chunking"]["chunk_column"]
        dims = self.config["embedding"]["dimensions"]
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

    def wait_clean(self, what: str, timeout: float = 90.0) -> Audit:
        try:
            polling.wait_for(lambda: self.audit().clean, what, timeout, interval=0.3)
        except AssertionError:
            audit = self.audit()
            raise AssertionError(f"{what}: {audit.__dict__ | {'details': audit.details[:20]}}\n"
                                 f"{self.logs()}") from None
        return self.audit()

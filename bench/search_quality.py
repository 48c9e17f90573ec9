"""Search quality per mode: recall@5, MRR@10 and latency of vector, keyword and hybrid search.

The labelled query set is built offline from the demo's corpus (``infra.corpus``: the Python
standard library's own documentation, shipped with every CPython), exactly like this:

* **Targets** are the documented classes and functions (titles such as ``shutil.copytree``)
  whose docstring has a first paragraph (the summary) of 4 to 40 words and at least 200
  characters after it. Each target's row in the searched table holds its docstring *without*
  that first paragraph; every other document (module docstrings, language reference topics,
  members without a usable summary) is stored whole, as the demo stores it.
* **Paraphrase queries**: the target's summary paragraph, i.e. its authors' own one-sentence
  statement of what it does, which is no longer in the indexed text. Relevant: the target.
* **Identifier queries**: the first snake_case identifier (two or more words joined by ``_``,
  at least 8 characters) in the target's stored text that occurs in no other stored document
  (parameter names such as ``dirs_exist_ok``, helper names). Relevant: the target.
* Up to ``--queries`` of each kind, taken evenly from the targets sorted by title.

The store is built as the workers would build it (the demo's vectorizer: recursive splitter
800/100, template ``$title - $chunk``, HNSW index, ``text_indexing=TextIndexingFullTextConfig()``)
with the real chunker, formatter and embedder, written straight into the store (no Kafka: the
pipeline is not what is measured). Every mode runs through the ORM exactly as a user calls it,
grouped by parent (``group_by_parent=True``, relevance is per document), ``limit=10``; a query
counts for recall@5 when its document is among the first 5, MRR@10 is the mean of 1/rank
(0 beyond 10). Latency is the wall time of the ``search()`` call, query embedding included.
The ``quality`` extra's model (all-MiniLM-L6-v2) runs too when it is installed
(``--models local,minilm``).

    .venv/bin/python bench/search_quality.py [--queries 200] [--models local,minilm]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from bench.common import machine, percentiles, print_table, write_json
from infra import pgadmin
from infra.corpus import Document, load_corpus
from infra.urls import sqlalchemy_url
from pgai_orm.alembic import register_operations
from pgai_orm.configuration import (
    ChunkingRecursiveCharacterTextSplitterConfig,
    EmbeddingLocalConfig,
    FormattingPythonTemplateConfig,
    IndexingHnswConfig,
    TextIndexingFullTextConfig,
    VectorizerConfig,
)
from pgai_orm.embedders import create_embedder
from pgai_orm.sqlalchemy import vectorizer_relationship
from processors.chunking import chunker_for
from processors.formatting import formatter_for

IDENTIFIER = re.compile(r"\b[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)+\b")
#: The three modes with their defaults, then the keyword_match alternatives behind the defaults
MODES: dict[str, dict[str, Any]] = {
    "vector": {"mode": "vector"},
    "keyword": {"mode": "keyword"},
    "hybrid": {"mode": "hybrid"},
    "keyword, websearch": {"mode": "keyword", "keyword_match": "websearch"},
    "hybrid, any word": {"mode": "hybrid", "keyword_match": "any"},
    "hybrid, all words": {"mode": "hybrid", "keyword_match": "all"},
}
MODELS = {"local": EmbeddingLocalConfig(), "minilm": EmbeddingLocalConfig(model="all-MiniLM-L6-v2")}


@dataclass(frozen=True)
class Query:
    kind: str  # "paraphrase" or "identifier"
    text: str
    relevant: int  # the document's id


def _paragraphs(text_: str) -> list[str]:
    return [p.strip() for p in re.split(r"\n\s*\n", text_) if p.strip()]


def build_dataset(docs: list[Document], per_kind: int) -> tuple[list[tuple[int, str, str]],
                                                                 list[Query]]:
    """``(rows, queries)``: the table's ``(id, title, content)`` and the labelled queries."""
    rows: list[tuple[int, str, str]] = []
    summaries: dict[int, str] = {}
    for doc_id, doc in enumerate(docs, 1):
        content = doc.content
        member = not doc.title.startswith(("Module ", "Language reference: "))
        parts = _paragraphs(doc.content)
        if member and len(parts) >= 2:
            summary, body = " ".join(parts[0].split()), "\n\n".join(parts[1:])
            if 4 <= len(summary.split()) <= 40 and len(body) >= 200:
                summaries[doc_id], content = summary, body
        rows.append((doc_id, doc.title, content))
    frequency = Counter(ident for _, _, content in rows
                        for ident in set(IDENTIFIER.findall(content)))
    identifiers: dict[int, str] = {}
    for doc_id, _, content in rows:
        if doc_id in summaries:
            for ident in IDENTIFIER.findall(content):
                if len(ident) >= 8 and frequency[ident] == 1:
                    identifiers[doc_id] = ident
                    break
    titles = {doc_id: title for doc_id, title, _ in rows}
    queries: list[Query] = []
    for kind, texts in (("paraphrase", summaries), ("identifier", identifiers)):
        targets = sorted(texts, key=lambda i: titles[i])
        step = max(1, len(targets) // per_kind)
        queries += [Query(kind, texts[i], i) for i in targets[::step][:per_kind]]
    return rows, queries


def doc_model(dimensions: int) -> Any:
    """The ORM class of the searched table, made per model (the store's size differs)."""
    namespace = {
        "__tablename__": "docs",
        "__annotations__": {"id": Mapped[int], "title": Mapped[str], "content": Mapped[str]},
        "id": mapped_column(primary_key=True),
        "content_embeddings": vectorizer_relationship(dimensions=dimensions),
    }
    base: Any = type("DocsBase", (DeclarativeBase,), {})
    return type("Doc", (base,), namespace)


def vectorizer_config(embedding: EmbeddingLocalConfig) -> VectorizerConfig:
    """The demo migration's vectorizer (infra/demo_migration), with the keyword index."""
    return VectorizerConfig(
        embedding=embedding,
        chunking=ChunkingRecursiveCharacterTextSplitterConfig(
            chunk_column="content", chunk_size=800, chunk_overlap=100,
            separators=("\n\n", "\n", ". ", " ")),
        formatting=FormattingPythonTemplateConfig(template="$title - $chunk"),
        indexing=IndexingHnswConfig(),
        text_indexing=TextIndexingFullTextConfig(),
    )


def build_store(engine: Engine, rows: list[tuple[int, str, str]], config: VectorizerConfig,
                doc: Any) -> int:
    """Table, vectorizer (through the Alembic operation) and store rows; the chunk count."""
    register_operations()
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE docs (id int PRIMARY KEY, title text NOT NULL, "
                          "content text NOT NULL)"))
        op: Any = Operations(MigrationContext.configure(conn))
        op.create_vectorizer(source="docs", embedding=config.embedding, chunking=config.chunking,
                             formatting=config.formatting, indexing=config.indexing,
                             text_indexing=config.text_indexing)
    chunk = chunker_for(config.chunking)
    fmt = formatter_for(config.formatting)
    embedder = create_embedder(config.embedding)
    store = doc.content_embeddings
    chunks = [(doc_id, seq, piece, fmt(piece, {"title": title, "content": content}))
              for doc_id, title, content in rows for seq, piece in enumerate(chunk(content))]
    with Session(engine) as session:
        session.add_all(doc(id=i, title=t, content=c) for i, t, c in rows)
        session.flush()
        for start in range(0, len(chunks), 256):
            batch = chunks[start:start + 256]
            vectors = embedder.embed_sync([formatted for *_, formatted in batch])
            session.add_all(store(id=doc_id, chunk_seq=seq, chunk=piece, embedding=vector)
                            for (doc_id, seq, piece, _), vector in zip(batch, vectors, strict=True))
        session.commit()
    with engine.begin() as conn:
        conn.execute(text("ANALYZE docs, docs_embedding_store"))
    return len(chunks)


def evaluate(engine: Engine, doc: Any, queries: list[Query],
             options: dict[str, Any]) -> dict[str, Any]:
    """recall@5, MRR@10 and latency of one mode, overall and per query kind."""
    store = doc.content_embeddings
    per_kind: dict[str, list[tuple[bool, float]]] = {}
    latencies: list[float] = []
    with Session(engine) as session:
        store.search(session, "warm up", limit=10, group_by_parent=True, **options)
        for query in queries:
            started = time.perf_counter()
            hits = store.search(session, query.text, limit=10, group_by_parent=True, **options)
            latencies.append((time.perf_counter() - started) * 1000)
            ranked = [h.id for h in hits]
            rank = ranked.index(query.relevant) + 1 if query.relevant in ranked else None
            per_kind.setdefault(query.kind, []).append(
                (rank is not None and rank <= 5, 1 / rank if rank else 0.0))
            session.rollback()  # a fresh snapshot per query, as separate requests would have
    result: dict[str, Any] = {"latency_ms": percentiles(latencies)}
    everything = [r for results in per_kind.values() for r in results]
    for kind, results in [("all", everything), *sorted(per_kind.items())]:
        result[kind] = {"queries": len(results),
                        "recall@5": sum(hit for hit, _ in results) / len(results),
                        "mrr@10": sum(rr for _, rr in results) / len(results)}
    return result


@contextmanager
def postgres() -> Iterator[str]:
    """``DATABASE_URL``'s server, else an embedded Postgres of its own."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    from infra.postgres import EmbeddedPostgres

    server = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="vz-bench-")) / "postgres")
    try:
        yield server.start()
    finally:
        server.stop()


def available(model: str) -> bool:
    return model == "local" or importlib.util.find_spec("sentence_transformers") is not None


def run_model(server_url: str, name: str, rows: list[tuple[int, str, str]],
              queries: list[Query], say: Callable[[str], None]) -> dict[str, Any]:
    """One model in a database of its own: build the store, then every mode's figures."""
    config = vectorizer_config(MODELS[name])
    doc = doc_model(config.embedding.dimensions)
    with pgadmin.temporary_database(server_url, prefix="bench") as url:
        engine = create_engine(sqlalchemy_url(url))
        try:
            return _measure(engine, name, rows, queries, config, doc, say)
        finally:
            engine.dispose()


def _measure(engine: Engine, name: str, rows: list[tuple[int, str, str]], queries: list[Query],
             config: VectorizerConfig, doc: Any, say: Callable[[str], None]) -> dict[str, Any]:
    started = time.perf_counter()
    chunks = build_store(engine, rows, config, doc)
    say(f"{name}: {len(rows)} documents, {chunks} chunks stored in "
        f"{time.perf_counter() - started:.1f}s")
    modes = {label: evaluate(engine, doc, queries, options) for label, options in MODES.items()}
    return {"model": repr(config.embedding), "chunks": chunks, "modes": modes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=200, help="queries of each kind")
    parser.add_argument("--models", default="local,minilm",
                        help="comma-separated: local (wordllama), minilm (quality extra)")
    args = parser.parse_args()
    rows, queries = build_dataset(load_corpus(), args.queries)
    kinds = Counter(q.kind for q in queries)
    print(f"{len(rows)} documents; {kinds['paraphrase']} paraphrase and "
          f"{kinds['identifier']} identifier queries")
    results: dict[str, Any] = {"machine": machine(), "documents": len(rows),
                               "queries": dict(kinds), "models": {}, "skipped": []}
    with postgres() as url:
        for name in args.models.split(","):
            if not available(name):
                print(f"{name}: skipped (pip install -e '.[quality]' to include it)")
                results["skipped"].append(name)
                continue
            results["models"][name] = run_model(url, name, rows, queries, print)
    for name, model in results["models"].items():
        table = []
        for label, mode in model["modes"].items():
            table.append([label, mode["all"]["recall@5"], mode["all"]["mrr@10"],
                          mode["paraphrase"]["recall@5"], mode["identifier"]["recall@5"],
                          mode["latency_ms"]["p50"], mode["latency_ms"]["p95"]])
        print_table(["mode", "recall@5", "MRR@10", "R@5 paraphrase", "R@5 identifier",
                     "p50 ms", "p95 ms"], table,
                    title=f"{name} ({model['model']}, {model['chunks']} chunks)")
    print(f"\nwrote {write_json('search_quality', results)}")


if __name__ == "__main__":
    main()

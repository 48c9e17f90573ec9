"""``vectorizer demo``: the whole pipeline on this machine, narrated for a newcomer.

No Docker, no API key, no network: the embedded stack (PostgreSQL 18 + pgvector, a Tansu
Kafka-protocol broker), a real Alembic migration (``infra/demo_migration``) that declares a
vectorizer with the offline model, ``vectorizer connector`` and ``vectorizer worker`` as real
subprocesses, and a corpus of real text that ships with CPython (``infra.corpus``). Then it
searches through the ORM, changes and deletes rows and measures how long the store takes to
follow, and stops everything it started (``--keep-running`` leaves it up and says how to connect).

The services are launched exactly as a user would launch them (the ``vectorizer`` CLI, settings
through ``DATABASE_URL``/``KAFKA_BOOTSTRAP_SERVERS``) by :mod:`infra.services`, so the demo
exercises the same code paths as a deployment; the benchmarks use that module too.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click
import psycopg
from psycopg import sql

from infra import pgadmin
from infra.corpus import Document, describe_corpus, load_corpus
from infra.errors import InfraError
from infra.services import PipelineServices, record, stop_recorded
from infra.stack import EmbeddedStack
from infra.urls import libpq_url, sqlalchemy_url
from pgai_orm.errors import InvariantError
from pgai_orm.runtime.waiting import wait_until

DEMO_DATABASE = "vectorizer_demo"

QUERIES = (
    "handling errors with try, except and finally",
    "reading and writing JSON data",
    "running tasks concurrently with threads",
    "how do for loops and iterators work",
)
#: Exact identifiers (where keywords shine), then words both rankings agree on; both are in
#: the first 40 documents (``--documents 40``).
HYBRID_QUERIES = (
    "add_argument store_true",
    "configuration file sections and options",
)


def say(text: str = "") -> None:
    """One line of narration (stdout; progress bars go to stderr)."""
    click.echo(text)


# -- database steps -----------------------------------------------------------------------------

def fresh_database(server_url: str) -> str:
    """Drop (with its replication slots) and recreate the demo database; return its URL."""
    pgadmin.drop_database(server_url, DEMO_DATABASE)
    return pgadmin.create_database(server_url, DEMO_DATABASE)


def apply_migration(database_url: str) -> None:
    """``alembic upgrade head`` on the shipped demo project, as a user would run it."""
    from alembic import command
    from alembic.config import Config

    from infra.demo_migration import SCRIPT_LOCATION

    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPT_LOCATION))
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(database_url).replace("%", "%%"))
    command.upgrade(cfg, "head")


@dataclass(frozen=True)
class DemoVectorizer:
    id: int
    version: int
    name: str
    store: str
    view: str
    publication: str


def read_vectorizer(conn: psycopg.Connection) -> DemoVectorizer:
    row = conn.execute(
        "SELECT id, config_version, name, target_schema || '.' || target_table,"
        "       view_schema || '.' || view_table, publication_name"
        "  FROM vectorizer.vectorizers WHERE source_table = 'blog_posts'"
    ).fetchone()
    if row is None:
        raise InvariantError("the demo migration created no vectorizer")
    return DemoVectorizer(*row)


def insert_documents(conn: psycopg.Connection, docs: list[Document], start: datetime,
                     batch: int = 25) -> Iterator[int]:
    """Insert in small committed batches (yielding the count) so the stream starts at once."""
    for offset in range(0, len(docs), batch):
        part = docs[offset: offset + batch]
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO blog_posts (id, title, content, published_at) VALUES (%s, %s, %s, %s)",
                [(offset + i + 1, d.title, d.content, start + timedelta(hours=offset + i))
                 for i, d in enumerate(part)])
        yield len(part)


def embedded_counts(conn: psycopg.Connection, vz: DemoVectorizer) -> tuple[int, int]:
    """(rows whose chunks are stored, chunks in the store) of the serving version."""
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE cardinality(chunk_hashes) > 0),"
        "       coalesce(sum(cardinality(chunk_hashes)), 0)"
        "  FROM vectorizer.applied_state WHERE vectorizer_id = %s AND version = %s",
        (vz.id, vz.version)).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def applied_lsn(conn: psycopg.Connection, vz: DemoVectorizer, post_id: int) -> str | None:
    row = conn.execute(
        "SELECT lsn::text FROM vectorizer.applied_state"
        " WHERE vectorizer_id = %s AND version = %s AND pk = %s::jsonb",
        (vz.id, vz.version, json.dumps({"id": post_id}))).fetchone()
    return row[0] if row else None


def stored_text(conn: psycopg.Connection, vz: DemoVectorizer, post_id: int) -> tuple[int, str]:
    schema, table = vz.store.split(".", 1)
    query = sql.SQL(
        "SELECT count(*), coalesce(string_agg(chunk, ' ' ORDER BY chunk_seq), '')"
        " FROM {} WHERE id = %s").format(sql.Identifier(schema, table))
    row = conn.execute(query, (post_id,)).fetchone()
    return (int(row[0]), str(row[1])) if row else (0, "")


def wait_for(condition: Callable[[], bool], timeout: float, services: PipelineServices,
             what: str, interval: float = 0.02) -> float:
    """Poll ``condition`` until true; return the seconds it took (fail clearly on timeout).

    A service that exited fails the wait at once, with its log tail.
    """
    def holds() -> bool:
        if condition():
            return True
        services.check_alive()
        return False

    started = time.monotonic()
    if not wait_until(holds, timeout, interval):
        raise click.ClickException(f"timed out after {timeout:.0f}s waiting for {what}")
    return time.monotonic() - started


# -- the narrated steps ---------------------------------------------------------------------------

def show_search(session: Any, model: Any, query: str, limit: int = 5) -> list[Any]:
    # one hit per post: a long post has several close chunks, and a top five of one post
    # repeated says less than five posts
    results = model.content_embeddings.search(session, query, limit=limit, group_by_parent=True)
    say(f'\n  search: "{query}"')
    if not results:
        say("    (no results)")
    for rank, hit in enumerate(results, 1):
        snippet = " ".join(hit.chunk.split())[:70]
        say(f"    {rank}. distance {hit.distance:.3f}  #{hit.parent.id:<4} {hit.parent.title}")
        say(f"       {snippet}...")
    return list(results)


def show_hybrid_search(session: Any, model: Any, query: str, limit: int = 5) -> list[Any]:
    """Keyword and vector rankings fused (RRF), one hit per post, with the chunks that matched."""
    results = model.content_embeddings.search(session, query, mode="hybrid", limit=limit,
                                              group_by_parent=True, chunks_per_parent=2)
    say(f'\n  hybrid search (keywords + vectors), one hit per post: "{query}"')
    if not results:
        say("    (no results)")
    for rank, hit in enumerate(results, 1):
        say(f"    {rank}. score {hit.score:.4f}  #{hit.id:<4} {hit.parent.title}"
            f"  (best {len(hit.chunks)} of its chunks)")
        say(f"       {' '.join(hit.chunk.split())[:70]}...")
    return list(results)


def load_and_embed(conn: psycopg.Connection, vz: DemoVectorizer, docs: list[Document],
                   services: PipelineServices, timeout: float) -> float:
    """Insert the corpus while showing two progress bars: rows inserted and rows embedded."""
    from tqdm import tqdm

    started = time.monotonic()
    base = datetime(2024, 1, 1)
    with tqdm(total=len(docs), desc="inserted into blog_posts", unit="row", position=0,
              file=sys.stderr, dynamic_ncols=True) as inserted, \
         tqdm(total=len(docs), desc="embedded into the store ", unit="row", position=1,
              file=sys.stderr, dynamic_ncols=True) as embedded:
        def refresh() -> int:
            rows, chunks = embedded_counts(conn, vz)
            embedded.n = rows
            embedded.set_postfix(chunks=chunks, refresh=False)
            embedded.refresh()
            return rows

        def all_embedded() -> bool:
            if refresh() >= len(docs):
                return True
            services.check_alive()
            return False

        for count in insert_documents(conn, docs, base):
            inserted.update(count)
            refresh()
        if not wait_until(all_embedded, started + timeout - time.monotonic(), 0.2):
            raise click.ClickException(
                f"only {embedded.n} of {len(docs)} rows embedded after {timeout:.0f}s; "
                f"see the logs in {services.log_dir}")
    return time.monotonic() - started


def follow_changes(conn: psycopg.Connection, session_factory: Any, model: Any,
                   vz: DemoVectorizer, services: PipelineServices, timeout: float) -> None:
    """Update one post and delete another; time how long the store takes to follow each."""
    from sqlalchemy import select

    query = "brewing green tea at the right water temperature"
    with session_factory() as session:
        before = show_search(session, model, query, limit=3)
        target = before[-1].parent.id if before else 1
        old_title = session.execute(select(model.title).where(model.id == target)).scalar_one()
    new_title = f"{old_title} (now with a tea recipe)"
    new_content = ("To brew green tea, heat the water to about 80 degrees Celsius, never boiling, "
                   "and steep the leaves for two minutes. Hotter water makes the tea bitter. "
                   "Green tea leaves can be steeped two or three times.")
    say(f"\n  UPDATE post #{target} ('{old_title}'): new title and content about green tea.")
    lsn_before = applied_lsn(conn, vz, target)
    with conn.transaction():
        conn.execute("UPDATE blog_posts SET title = %s, content = %s WHERE id = %s",
                     (new_title, new_content, target))
    took = wait_for(lambda: applied_lsn(conn, vz, target) != lsn_before
                    and "green tea" in stored_text(conn, vz, target)[1],
                    timeout, services, f"the update of post #{target} to reach the store")
    say(f"  -> the store had the new chunks {took * 1000:.0f} ms after the commit.")
    with session_factory() as session:
        after = show_search(session, model, query, limit=3)
    if after and after[0].parent.id == target:
        say(f"  post #{target} is now the best match.")

    doomed = after[0].parent.id if after else target
    say(f"\n  DELETE post #{doomed}.")
    with conn.transaction():
        conn.execute("DELETE FROM blog_posts WHERE id = %s", (doomed,))
    took = wait_for(lambda: stored_text(conn, vz, doomed)[0] == 0, timeout, services,
                    f"the delete of post #{doomed} to reach the store")
    say(f"  -> its chunks left the store {took * 1000:.0f} ms after the commit.")
    with session_factory() as session:
        gone = show_search(session, model, query, limit=3)
    if all(hit.parent.id != doomed for hit in gone):
        say(f"  post #{doomed} no longer appears in the results.")


@contextmanager
def _narrated_step(number: int, text: str) -> Iterator[None]:
    say(f"\n[{number}] {text}")
    started = time.monotonic()
    yield
    say(f"    done in {time.monotonic() - started:.1f}s")


def run_demo(state_dir: Path, documents: int | None, workers: int, keep_running: bool,
             timeout: float) -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.orm import sessionmaker

    from infra.demo_migration.models import BlogPost

    state_dir = state_dir.absolute()
    stopped = stop_recorded(state_dir)
    if stopped:
        say(f"stopped the services of an earlier demo: {', '.join(stopped)}")
    stack = EmbeddedStack(state_dir)
    services: PipelineServices | None = None
    engine = None
    keep = False
    try:
        with _narrated_step(1, f"Starting PostgreSQL 18 + pgvector and a Kafka-protocol broker "
                               f"(Tansu) on this machine, data in {state_dir}"):
            if stack.is_running():
                stack.down()  # the broker keeps topics in memory: a clean start empties them
            info = stack.up()
            say(f"    PostgreSQL: {info.database_url}")
            say(f"    Kafka:      {info.kafka_bootstrap_servers}")

        with _narrated_step(2, f"Creating database '{DEMO_DATABASE}' and applying the Alembic "
                               "migration infra/demo_migration (alembic upgrade head)"):
            database_url = fresh_database(info.database_url)
            apply_migration(database_url)
            conn = psycopg.connect(libpq_url(database_url), autocommit=True)
            vz = read_vectorizer(conn)
            say("    created table blog_posts (id, title, content, published_at)")
            say(f"    created vectorizer '{vz.name}': offline model wordllama (256 dimensions), "
                "recursive splitter on content, template '$title - $chunk'")
            say(f"    its embedding store {vz.store} (HNSW index), view {vz.view}, "
                f"publication {vz.publication}")

        with _narrated_step(3, f"Starting the connector (reads the WAL, publishes to Kafka) and "
                               f"{workers} worker(s) (chunk, embed, write the store)"):
            services = PipelineServices(database_url, info.kafka_bootstrap_servers,
                                        state_dir / "logs", workers, mark=str(state_dir))
            services.start()
            for service in services.services:
                say(f"    {service.name}: pid {service.pid}, log {service.log_path}")

        docs = load_corpus(documents)
        with _narrated_step(4, f"Loading {len(docs)} documents: {describe_corpus()}. "
                               "Each insert travels WAL -> connector -> Kafka -> worker -> store"):
            took = load_and_embed(conn, vz, docs, services, timeout)
            rows, chunks = embedded_counts(conn, vz)
            say(f"    {rows} posts are searchable as {chunks} chunks, "
                f"{rows / took:.0f} posts/s end to end")

        engine = create_engine(sqlalchemy_url(database_url))
        factory = sessionmaker(engine)
        with _narrated_step(5, "Semantic search through the ORM: "
                               "BlogPost.content_embeddings.search(session, text, limit=5, "
                               "group_by_parent=True)"):
            say("    (the query is embedded with the vectorizer's own model; smaller distance = closer)")
            with factory() as session:
                for query in QUERIES:
                    show_search(session, BlogPost, query)
                say("\n    mode=\"hybrid\" fuses that ranking with a full-text one (the store's "
                    "keyword index): exact names count too; higher score = better")
                for query in HYBRID_QUERIES:
                    show_hybrid_search(session, BlogPost, query)

        with _narrated_step(6, "Changing the source table: the store follows every commit"):
            follow_changes(conn, factory, BlogPost, vz, services, timeout)
        conn.close()

        if keep_running:
            keep = True
            record(state_dir, services, database=DEMO_DATABASE)
            say("\n[7] Everything keeps running (--keep-running). Look at it with:")
            say(f"    vectorizer status --state-dir {state_dir}   # rows, chunks, lag, errors")
            say("  or, from any shell or tool, connect with:")
            say(f"    export DATABASE_URL={database_url}")
            say(f"    export KAFKA_BOOTSTRAP_SERVERS={info.kafka_bootstrap_servers}")
            say(f"    psql {database_url} -c 'SELECT count(*) FROM {vz.store}'")
            say("    vectorizer status          # with the two exports above")
            say(f"    stop it all: vectorizer demo --stop --state-dir {state_dir}")
    finally:
        if engine is not None:
            engine.dispose()
        if not keep:
            say("\n[7] Stopping the workers, the connector, the broker and PostgreSQL")
            if services is not None:
                services.stop()
            try:
                stack.down()
            except InfraError as exc:
                say(f"    could not stop the stack cleanly: {exc}")
            say("    all stopped. Run `vectorizer demo --keep-running` to keep it up and explore.")


def stop_demo(state_dir: Path) -> None:
    """``vectorizer demo --stop``: end what a ``--keep-running`` demo left running."""
    state_dir = state_dir.absolute()
    stopped = stop_recorded(state_dir)
    EmbeddedStack(state_dir).down()
    say(f"stopped {', '.join([*stopped, 'postgres', 'broker'])}")


@click.command(name="demo")
@click.option("--documents", type=click.IntRange(min=1), default=None,
              help="How many documents to load (default: all, several hundred).")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Worker processes (`vectorizer worker`) to start.")
@click.option("--keep-running", is_flag=True,
              help="Leave the stack, connector and workers running and print how to connect.")
@click.option("--stop", is_flag=True, help="Stop what an earlier --keep-running demo left running.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path(".state/demo"), show_default=True,
              help="The demo's own stack (data, logs); separate from `vectorizer dev`.")
@click.option("--timeout", type=float, default=300.0, show_default=True,
              help="Seconds to wait for the pipeline at each step before giving up.")
def demo_command(documents: int | None, workers: int, keep_running: bool, stop: bool,
                 state_dir: Path, timeout: float) -> None:
    """The whole pipeline on this machine: no Docker, no API key, no network."""
    if stop:
        stop_demo(state_dir)
        return
    # SIGTERM (a CI timeout, `kill`) must stop the services too: they run in their own sessions
    # and would outlive the demo. SystemExit unwinds through run_demo's cleanup.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        run_demo(state_dir, documents, workers, keep_running, timeout)
    except InfraError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc

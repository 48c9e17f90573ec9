"""`vectorizer worker` against a real Postgres and broker, with events produced per the contract.

The workers run as separate processes (`vectorizer worker`, a supervisor where it has several), exactly as in
production. The events are produced with kafka-python the way ``docs/architecture.md``
specifies (``tests.support.worker.Source``), from rows that really are in the source table, so
re-reads of unchanged TOAST values hit real data. Every wait polls a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest
from kafka import KafkaConsumer
from psycopg import sql

from pgai_orm.names import consumer_group
from processors.app import (
    committed_offsets,
    fetch_high_watermarks,
)
from tests.fake_providers._server import Fault
from tests.fake_providers.openai_server import FakeOpenAIServer
from tests.support.configs import local_config, openai_config
from tests.support.events import row_change
from tests.support.vectorizers import install_catalog
from tests.support.worker import (
    TEXT,
    WAIT_S,
    Source,
    make_source,
    start_worker,
    stop_worker,
    wait_for,
    worker,
)


@pytest.fixture
def database(fresh_database_url: str) -> str:
    """A fresh database per test: the supervisor serves every vectorizer of its database."""
    install_catalog(fresh_database_url)
    return fresh_database_url


def applied_lsns(source: Source) -> dict[int, int]:
    return {pk["id"]: int(lsn) for pk, lsn in source.sql(
        "SELECT pk, (lsn - '0/0'::pg_lsn)::bigint FROM vectorizer.applied_state"
        " WHERE vectorizer_id = %s", (source.vectorizer_id,))}


# --------------------------------------------------------------------------------------------


def test_store_follows_inserts_updates_deletes_and_truncate(database: str, kafka_bootstrap_servers: str) -> None:
    source = make_source(database, kafka_bootstrap_servers, local_config())
    for i in range(1, 21):
        source.upsert(i, title=f"post {i}", content=TEXT * (1 + i % 3))
    source.flush()
    with worker(source):
        wait_for(source.store_matches_source, "the initial rows to be embedded")
        # content change, title change (content arrives as unchanged TOAST -> re-read),
        # an update of a column the vectorizer does not read, a delete
        source.upsert(1, op="update", content="A new text. " + TEXT)
        source.upsert(2, op="update", toast=("content",), title="a better title")
        source.upsert(3, op="update", views=42)
        source.delete(4)
        source.flush()
        wait_for(source.store_matches_source, "updates and the delete to reach the store")
        assert 4 not in {r[0] for r in source.store_rows()}

        # redelivery of old events changes nothing: every one is at or below the applied LSN
        before = (source.store_rows(), applied_lsns(source))
        source.lsn -= 500
        for i in range(5, 10):
            source.send_row(i, "update", {**source.row(i), "content": "stale"})
        source.flush()
        source.lsn += 1000
        source.upsert(30, title="marker", content=TEXT)
        source.flush()
        wait_for(lambda: 30 in applied_lsns(source), "a marker row behind the stale events")
        after = (source.store_rows(), applied_lsns(source))
        assert [r for r in after[0] if r[0] != 30] == before[0]
        assert {k: v for k, v in after[1].items() if k != 30} == before[1]

        # the database drops the worker's connections: it reconnects and retries the batch
        source.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                   " WHERE datname = current_database() AND pid <> pg_backend_pid()")
        source.upsert(31, title="after reconnect", content=TEXT)
        source.flush()
        wait_for(lambda: 31 in applied_lsns(source), "the worker to reconnect")

        source.truncate()
        source.upsert(40, title="after truncate", content=TEXT)
        source.flush()
        wait_for(lambda: {r[0] for r in source.store_rows()} == {40}, "truncate to empty the store")
        assert source.store_matches_source()


def embedded_inputs(server: FakeOpenAIServer) -> int:
    return sum(len(body["input"]) for body in server.embedding_requests())


def test_only_changed_chunks_are_embedded_and_failures_are_recorded(
        database: str, kafka_bootstrap_servers: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeOpenAIServer() as server:
        monkeypatch.setenv("PROCESSORS_TEST_KEY", server.api_key)
        source = make_source(database, kafka_bootstrap_servers, openai_config(server.base_url, "PROCESSORS_TEST_KEY"))
        for i in range(1, 6):
            source.upsert(i, title=f"post {i}", content=TEXT)
        source.flush()
        with worker(source, env={"PROCESSORS_TEST_KEY": server.api_key}):
            wait_for(lambda: len(applied_lsns(source)) == 5, "five rows applied")
            calls, inputs = len(server.embedding_requests()), embedded_inputs(server)
            chunks = len(source.store_rows())
            assert inputs == chunks  # identical chunks of different rows differ by title

            # a column the vectorizer does not read: a new LSN, no embedding call, same store
            store_before = source.store_rows()
            source.upsert(1, op="update", views=7)
            source.flush()
            wait_for(lambda: applied_lsns(source)[1] == source.lsn, "the unrelated update")
            assert len(server.embedding_requests()) == calls
            assert source.store_rows() == store_before

            # an appended sentence: only the chunks whose text changed are embedded; a 429 on
            # the way is retried (bounded, with backoff) and leaves no error behind
            server.add_fault(Fault(status=429, times=1, headers={"retry-after-ms": "50"}))
            source.upsert(2, op="update", content=TEXT + "One more sentence at the end.")
            source.flush()
            wait_for(lambda: applied_lsns(source)[2] == source.lsn, "the content update")
            assert len(server.embedding_requests()) == calls + 2  # the 429 and its retry
            new_inputs = len(server.embedding_requests()[-1]["input"])
            assert 0 < new_inputs < len([r for r in source.store_rows() if r[0] == 2])
            assert not source.sql("SELECT 1 FROM vectorizer.errors")

            # a template column missing from the row, and a provider rejecting a row for good
            source.send_row(3, "update", {"id": 3, "content": TEXT, "views": 0})
            source.flush()
            wait_for(lambda: source.sql("SELECT step, message FROM vectorizer.errors"
                                        " WHERE vectorizer_id = %s", (source.vectorizer_id,)),
                     "the format error")
            server.add_fault(Fault(status=400, times=2, body={"error": {"message": "bad input"}}))
            source.upsert(4, op="update", content="Rejected text. " + TEXT)
            source.upsert(5, op="update", views=3)
            source.flush()
            errors = wait_for(lambda: (e := source.sql(
                "SELECT pk, step, message FROM vectorizer.errors WHERE vectorizer_id = %s"
                " ORDER BY pk", (source.vectorizer_id,))) and len(e) == 2 and e,
                "the embedding error")
            assert [(pk["id"], step) for pk, step, _ in errors] == [(3, "format"), (4, "embed")]
            assert all(server.api_key not in message for _, _, message in errors)
            wait_for(lambda: applied_lsns(source)[5] == source.lsn, "the row after the failure")
            assert {r[0] for r in source.store_rows()} == {1, 2, 5}

            dead = dead_letters(source, 2)
            assert sorted((orjson.loads(k)["id"], v["step"]) for k, v in dead) == [(3, "format"), (4, "embed")]
            assert all(server.api_key not in orjson.dumps(v).decode() for _, v in dead)

            # a later good update of the failed rows clears their errors
            source.upsert(3, op="update", title="back", content=TEXT)
            source.upsert(4, op="update", content=TEXT)
            source.flush()
            wait_for(lambda: not source.sql("SELECT 1 FROM vectorizer.errors WHERE vectorizer_id = %s",
                                            (source.vectorizer_id,)), "the errors to be cleared")
            wait_for(source.store_matches_source, "the store to match the source")
            wait_for(lambda: caught_up(source), "the group to commit everything")

            # every event delivered again (an at-least-once producer resending after a crash):
            # no duplicate chunk, no embedding call, no LSN moves
            calls, store_before, lsns = (len(server.embedding_requests()), source.store_rows(),
                                         applied_lsns(source))
            source.resend_everything()
            wait_for(lambda: caught_up(source), "the redelivered events to be consumed")
            assert len(server.embedding_requests()) == calls
            assert source.store_rows() == store_before
            assert applied_lsns(source) == lsns


def group(source: Source) -> str:
    database = source.sql("SELECT current_database()")[0][0]
    return consumer_group(source.prefix, database, source.vectorizer_id, 1)


def caught_up(source: Source) -> bool:
    """The version's group committed every offset up to the topic's high-water marks."""
    async def check() -> bool:
        marks = await fetch_high_watermarks(source.servers, source.topic)
        committed = await committed_offsets(source.servers, group(source), source.topic)
        return marks is not None and all(committed.get(p, 0) >= o for p, o in marks.items())
    return asyncio.run(check())


def dead_letters(source: Source, count: int) -> list[tuple[bytes, dict[str, Any]]]:
    consumer = KafkaConsumer(source.topic + ".dlq", bootstrap_servers=source.servers,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=500)
    found: list[tuple[bytes, dict[str, Any]]] = []
    try:
        deadline = time.monotonic() + WAIT_S
        while len(found) < count and time.monotonic() < deadline:
            for message in consumer:
                found.append((message.key, orjson.loads(message.value)))
    finally:
        consumer.close()
    return found


def test_two_workers_a_crash_and_rebalances_lose_and_duplicate_nothing(
        database: str, kafka_bootstrap_servers: str, tmp_path: Path) -> None:
    source = make_source(database, kafka_bootstrap_servers, local_config(), partitions=4)
    for i in range(1, 151):
        source.upsert(i, title=f"post {i}", content=TEXT * (1 + i % 2))
    source.flush()
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    first = start_worker(source, "--batch-size", "16", "--loglevel", "info", log=log_a)
    try:
        wait_for(lambda: len(applied_lsns(source)) >= 20, "the first worker to make progress")
        with worker(source, "--batch-size", "16", "--loglevel", "info", log=log_b):
            for i in range(151, 301):
                source.upsert(i, title=f"post {i}", content=TEXT)
            for i in range(1, 301, 7):
                source.upsert(i, op="update", content="Edited. " + TEXT)
            source.flush()
            wait_for(lambda: "embedded=" in log_b.read_text(), "the second worker to get partitions")
            # a crash: the first worker dies without committing anything more, and comes back
            first.kill()
            first.wait()
            first = start_worker(source, "--batch-size", "16", "--loglevel", "info", log=log_a)
            for i in range(301, 351):
                source.upsert(i, title=f"post {i}", content=TEXT)
            source.flush()
            wait_for(lambda: len(applied_lsns(source)) >= 330, "progress after the crash")
            stop_worker(first)  # a clean leave: its partitions move to the other worker
            for i in range(351, 401):
                source.upsert(i, title=f"post {i}", content=TEXT)
            source.flush()
            wait_for(lambda: len(applied_lsns(source)) == 400, "every row applied", timeout=90)
            wait_for(lambda: caught_up(source), "the group to commit everything")
            assert source.store_matches_source()
            assert "embedded=" in log_a.read_text()
    finally:
        stop_worker(first)


def test_reembedding_replays_the_topic_and_activates_the_new_version(
        database: str, kafka_bootstrap_servers: str) -> None:
    source = make_source(database, kafka_bootstrap_servers, local_config())
    for i in range(1, 31):
        source.upsert(i, title=f"post {i}", content=TEXT)
    source.flush()
    with worker(source):
        wait_for(source.store_matches_source, "version 1 to be built")
        name = source.sql("SELECT name FROM vectorizer.vectorizers WHERE id = %s",
                          (source.vectorizer_id,))[0][0]
        new_config = local_config(dimensions=128)
        source.sql("SELECT vectorizer.alter_vectorizer(%s, %s::jsonb, NULL, NULL, 128)",
                   (name, orjson.dumps({"embedding": new_config["embedding"]}).decode()))
        source.upsert(31, title="written while building", content=TEXT)
        source.flush()
        wait_for(lambda: source.sql("SELECT config_version FROM vectorizer.vectorizers WHERE id = %s",
                                    (source.vectorizer_id,))[0][0] == 2, "version 2 to be activated")
        dims = source.sql(sql.SQL("SELECT DISTINCT vector_dims(embedding) FROM {}")
                          .format(sql.Identifier(source.store_table())).as_string())
        assert dims == [(128,)]
        wait_for(lambda: source.store_matches_source(new_config), "version 2 to match the source")
        source.upsert(32, title="after the switch", content=TEXT)
        source.flush()
        wait_for(lambda: source.store_matches_source(new_config), "the live store to follow")
        statuses = source.sql("SELECT version, status FROM vectorizer.config_versions"
                              " WHERE vectorizer_id = %s ORDER BY version", (source.vectorizer_id,))
        assert statuses == [(1, "retired"), (2, "active")]


def test_a_change_that_can_never_be_applied_is_isolated_recorded_and_skipped(
        database: str, kafka_bootstrap_servers: str) -> None:
    """A key that cannot be cast to the store's key type fails its whole batch on every try;
    the worker applies the batch in halves until that record stands alone, records it and goes
    on with every other row, without restarting."""
    source = make_source(database, kafka_bootstrap_servers, local_config(), partitions=1)
    for i in range(1, 9):
        source.upsert(i, title=f"post {i}", content=TEXT)
    # one record whose key the store cannot hold ("x" is no integer), amid good ones
    source._send(row_change("insert", source._next_lsn(), {"id": "x"},
                            {"id": "x", "title": "bad", "content": TEXT}, table=source.table))
    for i in range(9, 13):
        source.upsert(i, title=f"post {i}", content=TEXT)
    source.flush()
    with worker(source, "--batch-size", "64") as process:
        wait_for(source.store_matches_source, "every good row to be embedded around the bad one")
        errors = wait_for(lambda: source.sql(
            "SELECT pk, step, message FROM vectorizer.errors WHERE vectorizer_id = %s",
            (source.vectorizer_id,)), "the skipped change to be recorded")
        assert [(pk, step) for pk, step, _ in errors] == [({"id": "x"}, "store")]
        assert "could not be applied" in errors[0][2] and "InvalidTextRepresentation" in errors[0][2]
        # later changes flow as usual, and the worker never had to restart
        started = psutil.Process(process.pid).create_time()
        source.upsert(20, title="after", content=TEXT)
        source.flush()
        wait_for(lambda: 20 in applied_lsns(source), "a change after the skipped one")
        assert process.poll() is None and psutil.Process(process.pid).create_time() == started
        assert source.store_matches_source()


def test_the_supervisor_of_several_worker_processes_restarts_one_that_dies(
        database: str, kafka_bootstrap_servers: str, tmp_path: Path) -> None:
    """`--concurrency 2`: two worker processes, each serving every vectorizer (the processes do
    not multiply with the vectorizers); one killed is restarted and nothing is lost."""
    prefix = f"t{uuid.uuid4().hex[:6]}"  # one prefix: one worker serves all three
    sources = [make_source(database, kafka_bootstrap_servers, local_config(), partitions=2,
                           prefix=prefix) for _ in range(3)]
    for source in sources:
        for i in range(1, 41):
            source.upsert(i, title=f"post {i}", content=TEXT)
        source.flush()
    log = tmp_path / "worker.log"
    with worker(sources[0], "--concurrency", "2", "--loglevel", "info", log=log) as process:
        children = wait_for(lambda: len(c := psutil.Process(process.pid).children()) == 2 and c,
                            "two worker processes")
        for source in sources:
            wait_for(source.store_matches_source, "every vectorizer to be built")
        assert len(psutil.Process(process.pid).children()) == 2
        children[0].kill()
        wait_for(lambda: len(c := psutil.Process(process.pid).children()) == 2 and
                 children[0].pid not in {p.pid for p in c},
                 "the supervisor to restart the killed worker process")
        for source in sources:
            for i in range(41, 61):
                source.upsert(i, title=f"post {i}", content=TEXT)
            source.flush()
        for source in sources:
            wait_for(source.store_matches_source, "every vectorizer to follow after the restart")
    assert "exited with" in log.read_text() and "restarting in" in log.read_text()


@pytest.mark.parametrize("provider", ["local", "openai"])
def test_keys_rewritten_in_consecutive_batches_end_as_the_source_says(
        database: str, kafka_bootstrap_servers: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, provider: str) -> None:
    """Tiny batches over a few keys: a batch is planned while the one before it is embedded or
    commits (local model: one embedding at a time; a provider: two, the next planned beside
    them), against applied state that batch has not written yet, so plans go stale (the same
    text back again, a delete, a re-insert); the store still ends as the source."""
    with FakeOpenAIServer() as server:
        monkeypatch.setenv("PROCESSORS_TEST_KEY", server.api_key)
        config = (local_config() if provider == "local"
                  else openai_config(server.base_url, "PROCESSORS_TEST_KEY"))
        _rewrite_keys_in_consecutive_batches(database, kafka_bootstrap_servers, tmp_path, config,
                                             {"PROCESSORS_TEST_KEY": server.api_key})


def _rewrite_keys_in_consecutive_batches(database: str, kafka_bootstrap_servers: str,
                                         tmp_path: Path, config: dict[str, Any],
                                         env: dict[str, str]) -> None:
    source = make_source(database, kafka_bootstrap_servers, config)
    log = tmp_path / "worker.log"
    texts = [TEXT, "A second text entirely. " + TEXT, "Third. " + TEXT * 2]
    for i in range(1, 7):
        source.upsert(i, title=f"post {i}", content=texts[0])
    for n in range(60):
        key = 1 + n % 6
        if n % 11 == 10:
            source.delete(key)
            source.upsert(key, title=f"again {key}", content=texts[n % 3])
        else:
            source.upsert(key, op="update", content=texts[n % 3], title=f"post {key} v{n}")
    for n in range(24):  # one key only: every batch is planned before the one before commits
        source.upsert(1, op="update", content=texts[n % 3], title=f"post 1 w{n % 2}")
    source.flush()
    with worker(source, "--batch-size", "3", "--log-level", "info", log=log, env=env):
        wait_for(source.store_matches_source, "every key to end as its last change left it")
    assert "batch plan went stale" in log.read_text()  # the path under test was taken

"""pgai's worker flags: ``--once``, ``--vectorizer NAME`` / ``--vectorizer-id ID``,
``--exit-on-error``.

`vectorizer worker` runs as a separate process against the real Postgres and broker; the events
are produced the way the connector produces them (:mod:`tests.support.worker`). Every wait polls
with a deadline; a worker that should exit by itself is waited for, never killed first.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from pathlib import Path

import pytest

from processors.offsets import committed_offsets, fetch_high_watermarks
from tests.support.configs import local_config
from tests.support.vectorizers import install_catalog
from tests.support.worker import TEXT, Source, make_source, start_worker, stop_worker, wait_for, worker

CONFIG = local_config(dimensions=64)
#: seconds a --once run may take here: start-up, a group join (2 s session), the rows
ONCE_TIMEOUT_S = 60.0


@pytest.fixture
def database(fresh_database_url: str) -> str:
    install_catalog(fresh_database_url)
    return fresh_database_url


def name_of(source: Source) -> str:
    return str(source.sql("SELECT name FROM vectorizer.vectorizers WHERE id = %s",
                          (source.vectorizer_id,))[0][0])


def run_once(source: Source, *flags: str, log: Path) -> int:
    """`vectorizer worker --once` to its end; its exit status."""
    process = start_worker(source, "--once", "--log-level", "info", *flags, log=log)
    try:
        return process.wait(timeout=ONCE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        stop_worker(process)
        raise AssertionError(f"--once did not exit within {ONCE_TIMEOUT_S:.0f} s:\n"
                             f"{log.read_text(errors='replace')[-3000:]}") from None


def bad_row(source: Source, id_: int) -> None:
    """A change the template cannot format (no ``title``): recorded as a ``format`` error."""
    source.send_row(id_, "insert", {"id": id_, "content": TEXT, "views": 0})


def error_keys(source: Source) -> list[int]:
    return [r[0]["id"] for r in source.sql(
        "SELECT pk FROM vectorizer.errors WHERE vectorizer_id = %s AND pk IS NOT NULL ORDER BY id",
        (source.vectorizer_id,))]


def group_behind(source: Source, version: int = 1) -> int:
    """Events the version's consumer group has not committed (high-water marks - committed)."""
    from pgai_orm.names import consumer_group

    database = source.sql("SELECT current_database()")[0][0]
    group = consumer_group(source.prefix, database, source.vectorizer_id, version)

    async def measure() -> int:
        marks = await fetch_high_watermarks(source.servers, source.topic) or {}
        committed = await committed_offsets(source.servers, group, source.topic)
        return sum(max(0, m - committed.get(p, 0)) for p, m in marks.items())

    return asyncio.run(measure())


def test_once_processes_what_is_pending_then_exits_with_0_or_1_when_rows_failed(
        database: str, kafka_bootstrap_servers: str, tmp_path: Path) -> None:
    source = make_source(database, kafka_bootstrap_servers, CONFIG)
    for i in range(1, 6):
        source.upsert(i, title=f"post {i}", content=TEXT)
    source.flush()
    log = tmp_path / "worker.log"

    assert run_once(source, log=log) == 0, log.read_text()[-3000:]
    assert source.store_matches_source()
    assert group_behind(source) == 0  # everything it read is committed

    # a second run: the new rows and one that cannot be embedded
    source.upsert(6, title="post 6", content=TEXT)
    bad_row(source, 7)
    source.upsert(8, title="post 8", content=TEXT)
    source.flush()
    assert run_once(source, log=log) == 1
    assert source.store_matches_source()  # the good rows are in; row 7 is not in the source
    assert error_keys(source) == [7]
    assert group_behind(source) == 0
    assert "--once: caught up; 1 row(s) failed" in log.read_text()

    # nothing pending: a third run exits 0 at once, and so does one on a paused vectorizer
    assert run_once(source, log=log) == 0
    source.sql("SELECT vectorizer.disable_vectorizer(%s)", (name_of(source),))
    source.upsert(9, title="post 9", content=TEXT)
    source.flush()
    assert run_once(source, log=log) == 0
    assert 9 not in {r[0] for r in source.store_rows()}


def test_once_under_a_supervisor_ends_when_every_worker_process_did(
        database: str, kafka_bootstrap_servers: str, tmp_path: Path) -> None:
    source = make_source(database, kafka_bootstrap_servers, CONFIG, partitions=2)
    for i in range(1, 9):
        source.upsert(i, title=f"post {i}", content=TEXT)
    source.flush()
    log = tmp_path / "worker.log"
    assert run_once(source, "--concurrency", "2", log=log) == 0, log.read_text()[-3000:]
    assert source.store_matches_source()


def test_vectorizer_flags_serve_only_the_named_ones(
        database: str, kafka_bootstrap_servers: str, tmp_path: Path) -> None:
    prefix = f"t{uuid.uuid4().hex[:6]}"  # one worker sees both sources
    first = make_source(database, kafka_bootstrap_servers, CONFIG, prefix=prefix)
    second = make_source(database, kafka_bootstrap_servers, CONFIG, prefix=prefix)
    for source in (first, second):
        for i in range(1, 4):
            source.upsert(i, title=f"post {i}", content=TEXT)
        source.flush()
    log = tmp_path / "worker.log"

    assert run_once(first, "--vectorizer", name_of(first), log=log) == 0
    assert first.store_matches_source()
    assert second.store_rows() == []

    assert run_once(first, "--vectorizer-id", str(second.vectorizer_id), log=log) == 0
    assert second.store_matches_source()

    assert run_once(first, "--vectorizer", "no_such_vectorizer", log=log) == 2
    assert "--vectorizer no_such_vectorizer: no such vectorizer" in log.read_text()


def test_exit_on_error_ends_the_worker_at_the_first_failed_row_after_committing(
        database: str, kafka_bootstrap_servers: str, tmp_path: Path) -> None:
    source = make_source(database, kafka_bootstrap_servers, CONFIG)
    log = tmp_path / "worker.log"
    with worker(source, "--exit-on-error", log=log) as process:
        source.upsert(1, title="post 1", content=TEXT)
        source.flush()
        wait_for(lambda: source.store_matches_source() and source.store_rows(), "the good row")
        assert process.poll() is None  # no error yet: it goes on
        bad_row(source, 2)
        source.flush()
        wait_for(lambda: process.poll() is not None, "the worker to exit at the failed row")
    assert process.returncode == 1, log.read_text()[-3000:]
    assert error_keys(source) == [2]  # recorded as always
    assert group_behind(source) == 0  # and the batch that held it was committed
    assert "--exit-on-error: 1 row(s) could not be embedded" in log.read_text()

"""A worker that cannot start says why: in `vectorizer errors`, `vectorizer status`, the metrics
and one log line, and the reason goes away once a worker of that version starts.

Real Postgres and broker; `vectorizer worker` runs as a separate process
(:mod:`tests.support.worker`); the OpenAI embedder talks to the tests' fake OpenAI server.
Every wait polls with a deadline.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from infra.ops.commands import errors_command, status_command
from infra.ports import free_port
from pgai_orm.catalog import errors as catalog_errors
from tests.fake_providers.openai_server import FakeOpenAIServer
from tests.integration.test_metrics_logs import scrape, value
from tests.support.configs import OPENAI_KEY_ENV, local_config, openai_config
from tests.support.vectorizers import create_vectorizer, install_catalog
from tests.support.worker import TEXT, Source, make_source, start_worker, stop_worker, wait_for, worker

#: what the recorded reason must say: the cause, the variable, and who needs it
FIX = f"set the environment variable {OPENAI_KEY_ENV} for `vectorizer worker`"


@pytest.fixture
def database(fresh_database_url: str) -> str:
    install_catalog(fresh_database_url)
    return fresh_database_url


def start_rows(source: Source) -> list[tuple[Any, ...]]:
    return source.sql("SELECT pk, message, details FROM vectorizer.errors"
                      " WHERE vectorizer_id = %s AND step = 'start'", (source.vectorizer_id,))


def cli(command: Any, *args: str) -> str:
    result = CliRunner().invoke(command, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def vectorizer_status(source: Source) -> dict[str, Any]:
    report = json.loads(cli(status_command, "--database-url", source.url, "--json"))
    (found,) = [vz for vz in report["vectorizers"] if vz["source"] == f"public.{source.table}"]
    return found


def test_a_worker_without_its_api_key_reports_why_until_it_has_one(
        database: str, kafka_bootstrap_servers: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(OPENAI_KEY_ENV, raising=False)  # the worker inherits this environment
    with FakeOpenAIServer() as server:
        source = make_source(database, kafka_bootstrap_servers, openai_config(server.base_url))
        for i in range(1, 4):
            source.upsert(i, title=f"post {i}", content=TEXT)
        source.flush()
        log = tmp_path / "worker.log"
        port = free_port()
        process = start_worker(source, "--metrics-port", str(port),
                               env={"PYTHONUNBUFFERED": "1"}, log=log)
        try:
            # several failed starts (the supervisor's backoff: 1 s, 2 s, ...), one row
            rows = wait_for(lambda: (r := start_rows(source)) and r[0][2]["attempts"] >= 2 and r,
                            "two failed starts recorded as one start error")
            assert len(rows) == 1
            pk, message, details = rows[0]
            assert pk is None and FIX in message and "openai" in message
            assert details["error"] == "MissingApiKeyError"

            listed = cli(errors_command, "--database-url", source.url)
            assert "start" in listed and FIX in listed  # in full, not cut to one short cell
            status = vectorizer_status(source)
            assert status["errors"] == 1
            assert [v["start_error"] for v in status["versions"]] == [message]
            assert f"version 1 cannot start: {message}" in cli(
                status_command, "--database-url", source.url)

            name = source.sql("SELECT name FROM vectorizer.vectorizers WHERE id = %s",
                              (source.vectorizer_id,))[0][0]
            labels = {"vectorizer": name, "version": "1"}  # the label is the vectorizer's name
            wait_for(lambda: (s := scrape(port)) is not None
                     and (value(s, "vectorizer_worker_errors_total", step="start", **labels)
                          or 0) >= 2, "the failed starts in the worker's metrics")
            # the supervisor logs each failed start as one line with the reason
            def reasons() -> list[str]:
                return [line for line in log.read_text(errors="replace").splitlines()
                        if "cannot start:" in line]

            wait_for(lambda: len(reasons()) >= 2, "two failed starts in the supervisor's log")
            assert all(FIX in line and "next try in" in line for line in reasons())
            assert len(start_rows(source)) == 1
            assert not server.embedding_requests()
            assert process.poll() is None  # the supervisor keeps trying
        finally:
            stop_worker(process)
        assert "Traceback" not in log.read_text(errors="replace")

        # with the key, the next worker starts: the reason goes and the rows get embedded
        monkeypatch.setenv(OPENAI_KEY_ENV, server.api_key)  # for the expected vectors, here
        with worker(source, env={OPENAI_KEY_ENV: server.api_key}):
            wait_for(lambda: not start_rows(source), "the start error to be cleared")
            wait_for(source.store_matches_source, "the rows to be embedded")
        status = vectorizer_status(source)
        assert status["errors"] == 0
        assert [v["start_error"] for v in status["versions"]] == [None]
        assert "cannot start" not in cli(status_command, "--database-url", source.url)
        assert cli(errors_command, "--database-url", source.url).strip() == "no errors recorded"


def test_start_errors_are_one_row_per_version_and_go_with_the_version(database: str) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE start_posts (id int PRIMARY KEY, title text, content text)")
    vectorizer_id = create_vectorizer(database, "start_posts", local_config())

    def rows() -> list[tuple[Any, ...]]:
        with psycopg.connect(database, autocommit=True) as conn:
            return conn.execute("SELECT version, message, details->>'attempts' FROM"
                                " vectorizer.errors WHERE step = 'start' ORDER BY id").fetchall()

    # many processes failing at the same moment (several per machine, several machines)
    def fail() -> None:
        with psycopg.connect(database, autocommit=True) as conn:
            catalog_errors.record_start_error(conn, vectorizer_id, 1, "no key", {"host": "h"})

    threads = [threading.Thread(target=fail) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert rows() == [(1, "no key", "8")]

    with psycopg.connect(database, autocommit=True) as conn:
        # another cause replaces the old one
        assert catalog_errors.record_start_error(conn, vectorizer_id, 1, "no extra")
        assert not catalog_errors.record_start_error(conn, vectorizer_id, 1, "no extra")
        # a version no worker serves (retired, or never there) loses its start error
        catalog_errors.record_start_error(conn, vectorizer_id, 7, "no key")
        assert catalog_errors.clear_stale_start_errors(conn) == 1
        assert set(catalog_errors.start_errors(conn)) == {(vectorizer_id, 1)}
    assert rows() == [(1, "no extra", "2")]

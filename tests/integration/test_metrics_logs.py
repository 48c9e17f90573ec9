"""Operations: the Prometheus endpoints and the JSON logs of the connector and the workers.

Real Postgres, real broker, and `vectorizer connector` / `vectorizer worker` started as separate
processes the way users run them (`python -m connector.cli`, `python -m processors.cli`), with
`--metrics-port` and `--log-format json`. The endpoints are scraped over HTTP and parsed with
prometheus_client's text-format parser; every log line must parse as JSON and none may hold
the API key that sits in the processes' environment. Every wait polls with a deadline.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql

from infra.ports import free_port
from infra.services import DEV_SESSION_TIMEOUT_S
from pgai_orm.runtime.logs import JsonFormatter, TextFormatter
from tests.support.configs import local_config
from tests.support.worker import TEXT, Source, make_source, stop_worker, wait_for

ROOT = Path(__file__).resolve().parents[2]
API_KEY_MARKER = "sk-test-MARKER-7f3a9c1e5b"
PASSWORD_MARKER = "pw-MARKER-2b8d"


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
    """Every sample of the endpoint as {(name, sorted labels): value}; None while it is not up."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float | None:
    """The sum of the samples called ``name`` whose labels include ``labels``; None if none."""
    found = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls)]
    return sum(found) if found else None


def json_lines(path: Path) -> list[dict[str, Any]]:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            raise AssertionError(f"not a JSON line in {path.name}: {line!r}") from None
    return parsed


@pytest.fixture
def source(fresh_database_url: str, kafka_bootstrap_servers: str) -> Source:
    return make_source(fresh_database_url, kafka_bootstrap_servers, local_config(), partitions=2,
                       create_topic=False)


def with_password(url: str) -> str:
    """The URL with a password the processes must never log. The embedded cluster trusts
    127.0.0.1 and never asks for it; a URL that has a password of its own is left alone."""
    scheme, rest = url.split("://", 1)
    userinfo, host = rest.split("@", 1) if "@" in rest else ("postgres", rest)
    if ":" in userinfo:
        return url
    return f"{scheme}://{userinfo}:{PASSWORD_MARKER}@{host}"


def test_metrics_endpoints_and_json_logs(source: Source, tmp_path: Path) -> None:
    insert = sql.SQL("INSERT INTO {} (id, title, content) VALUES (%s, %s, %s)").format(
        sql.Identifier(source.table)).as_string()
    for i in range(1, 11):  # before the connector: these come through the snapshot
        source.sql(insert, (i, f"post {i}", TEXT))
    # A password the processes must not log: only used when the server asks (trust auth: not).
    url = with_password(source.url)
    env = {**os.environ, "OPENAI_API_KEY": API_KEY_MARKER, "PYTHONUNBUFFERED": "1",
           "DATABASE_URL": url, "KAFKA_BOOTSTRAP_SERVERS": source.servers}
    connector_port, worker_port = free_port(), free_port()
    connector_log, worker_log = tmp_path / "connector.log", tmp_path / "worker.log"
    with connector_log.open("ab") as clog, worker_log.open("ab") as wlog:
        connector = subprocess.Popen(
            [sys.executable, "-m", "connector.cli", "--topic-prefix", source.prefix,
             "--partitions", str(source.partitions), "--catalog-poll", "0.2",
             "--metrics-port", str(connector_port)],
            cwd=ROOT, stdout=clog, stderr=subprocess.STDOUT,
            env={**env, "VECTORIZER_LOG_FORMAT": "json"})
        worker = subprocess.Popen(
            [sys.executable, "-m", "processors.cli", "--topic-prefix", source.prefix,
             "--session-timeout", str(DEV_SESSION_TIMEOUT_S), "--batch-within", "0.2", "--poll-interval", "0.5",
             "--without-web", "--loglevel", "info", "--log-format", "json"],
            cwd=ROOT, stdout=wlog, stderr=subprocess.STDOUT,
            env={**env, "VECTORIZER_WORKER_METRICS_PORT": str(worker_port)})
        try:
            name = source.sql("SELECT name FROM vectorizer.vectorizers WHERE id = %s",
                              (source.vectorizer_id,))[0][0]
            labels = {"vectorizer": name, "version": "1"}  # the label is the vectorizer's name
            wait_for(lambda: (s := scrape(worker_port)) is not None
                     and (value(s, "vectorizer_worker_rows_applied_total", **labels) or 0) >= 10,
                     "the snapshot's rows in the worker's metrics")
            for i in range(11, 14):  # through the stream
                source.sql(insert, (i, f"post {i}", TEXT))
            source.sql(sql.SQL("UPDATE {} SET views = 1 WHERE id = 1").format(
                sql.Identifier(source.table)).as_string())

            def worker_caught_up() -> Any:
                s = scrape(worker_port)
                if s is None or (value(s, "vectorizer_worker_rows_applied_total", **labels) or 0) < 13:
                    return None
                return s if (value(s, "vectorizer_worker_events_consumed_total", **labels) or 0) >= 14 else None

            samples = wait_for(worker_caught_up, "the streamed rows in the worker's metrics")
            assert value(samples, "vectorizer_worker_chunks_embedded_total", **labels) >= 13
            assert value(samples, "vectorizer_worker_embedding_calls_total", **labels) >= 1
            assert value(samples, "vectorizer_worker_chunks_reused_total", **labels) is not None
            assert value(samples, "vectorizer_worker_events_skipped_total", **labels) is not None
            assert value(samples, "vectorizer_worker_batch_store_seconds_count", **labels) >= 1
            assert value(samples, "vectorizer_worker_apps", **labels) == 1
            assert value(samples, "vectorizer_worker_processes") == 1
            applied = source.sql("SELECT max((lsn - '0/0'::pg_lsn)::bigint) FROM"
                                 " vectorizer.applied_state WHERE vectorizer_id = %s",
                                 (source.vectorizer_id,))[0][0]
            assert value(samples, "vectorizer_worker_last_applied_lsn", **labels) == applied
            wait_for(lambda: (s := scrape(worker_port)) is not None
                     and value(s, "vectorizer_worker_consumer_lag", **labels) == 0,
                     "the consumer lag to be measured as 0")

            csamples = wait_for(scrape_when(connector_port, "vectorizer_connector_events_total",
                                            minimum=14), "the connector's event counters")
            assert value(csamples, "vectorizer_connector_events_total", source="snapshot") == 10
            assert value(csamples, "vectorizer_connector_events_total", source="stream") >= 4
            assert value(csamples, "vectorizer_connector_active") == 1
            assert value(csamples, "vectorizer_connector_slot_lag_bytes") is not None
            assert value(csamples, "vectorizer_connector_confirmed_lsn") > 0
            assert value(csamples, "vectorizer_connector_snapshot_rows") == 10
        finally:
            stop_worker(worker)
            stop_worker(connector)
    assert worker.returncode == 0 and connector.returncode == 0

    for path in (connector_log, worker_log):
        text = path.read_text(errors="replace")
        assert API_KEY_MARKER not in text and PASSWORD_MARKER not in text, path.name
        lines = json_lines(path)
        assert lines, f"{path.name} is empty"
        for line in lines:
            assert {"ts", "level", "logger", "message"} <= set(line), line
    progress = [line for line in json_lines(connector_log)
                if line["logger"] == "connector.progress" and line.get("finished")]
    assert progress and progress[-1]["rows"] == 10 and progress[-1]["table"].endswith(source.table)
    batches = [line for line in json_lines(worker_log) if line["message"].startswith("batch ")]
    assert batches, "no batch lines in the worker log"
    assert all(b["vectorizer"] == source.vectorizer_id and b["version"] == 1 for b in batches)
    assert any(b["lsn"] and b["partitions"] for b in batches)
    # the supervisor's own lines are JSON too
    assert any(line["logger"] == "processors.worker" for line in json_lines(worker_log))


def scrape_when(port: int, name: str, minimum: float) -> Any:
    def check() -> Any:
        s = scrape(port)
        return s if s is not None and (value(s, name) or 0) >= minimum else None
    return check


def test_formatters_scrub_secrets_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the processes rely on, in-process: key values and URL passwords never come out."""
    monkeypatch.setenv("SOME_PROVIDER_API_KEY", API_KEY_MARKER)
    record = logging.LogRecord(
        "test", logging.ERROR, __file__, 1, "request with key %s to %s failed",
        (API_KEY_MARKER, f"postgresql://app:{PASSWORD_MARKER}@db:5432/app"), None)
    record.header = {"Authorization": f"Bearer {API_KEY_MARKER}"}
    try:
        raise RuntimeError(f"bad key {API_KEY_MARKER}")
    except RuntimeError:
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    data = orjson.loads(line)
    assert API_KEY_MARKER not in line and PASSWORD_MARKER not in line
    assert data["message"] == "request with key *** to postgresql://app:***@db:5432/app failed"
    assert data["header"] == {"Authorization": "Bearer ***"}
    assert "RuntimeError: bad key ***" in data["exc"]
    text = TextFormatter().format(record)
    assert API_KEY_MARKER not in text and PASSWORD_MARKER not in text

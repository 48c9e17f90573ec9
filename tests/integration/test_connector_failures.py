"""A connector that cannot reach the database or the broker says so in one line per try, with a
growing delay, and says at start what it waits for; the SQLAlchemy URL form works.

Each test starts ``python -m connector.cli`` against a port nothing listens on and polls its log
with a deadline; no test asserts a timing beyond "the delays grow".
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from infra.ports import free_port
from infra.urls import sqlalchemy_url
from tests.support.polling import wait_for

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


@contextmanager
def connector(tmp_path: Path, url: str, servers: str, *extra: str) -> Iterator[Path]:
    log = tmp_path / "connector.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "connector.cli", "--database-url", url,
             "--kafka-bootstrap-servers", servers, "--poll-interval", "0.2", *extra],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            yield log
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert proc.returncode is not None


def retries(log: Path) -> list[float]:
    return [float(d) for d in re.findall(r"; retrying in (\d+) s", log.read_text(errors="replace"))]


def test_an_unreachable_database_is_one_line_per_try_with_backoff(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://postgres:secret@127.0.0.1:{free_port()}/app"
    with connector(tmp_path, url, "127.0.0.1:1") as log:
        wait_for(lambda: len(retries(log)) >= 3, "three tries of the database", timeout=60)
        text = log.read_text(errors="replace")
    assert "connector starting: waiting for the database 127.0.0.1:" in text
    assert "Traceback" not in text and "secret" not in text, text
    lines = [line for line in text.splitlines() if "cannot reach the database" in line]
    assert len(lines) >= 3 and all("DATABASE_URL" in line for line in lines), text
    delays = retries(log)
    assert delays[0] <= 2 and delays[2] > delays[0], delays  # exponential, jittered by 10 %


def test_a_dead_broker_names_kafka_bootstrap_servers(tmp_path: Path, fresh_database_url: str) -> None:
    servers = f"127.0.0.1:{free_port()}"
    with connector(tmp_path, sqlalchemy_url(fresh_database_url), servers, "--max-retry-delay", "2") as log:
        def said() -> bool:
            text = log.read_text(errors="replace")
            return ("no vectorizer in database" in text
                    or f"cannot reach the Kafka broker {servers}" in text)

        wait_for(said, "the connector to say what it waits for", timeout=90)
        text = log.read_text(errors="replace")
    assert "connector active on slot" in text, text  # the SQLAlchemy URL form works
    assert "Traceback" not in text, text
    for line in text.splitlines():
        if "cannot reach the Kafka broker" in line:
            assert "KAFKA_BOOTSTRAP_SERVERS" in line, line

"""End to end: Postgres -> connector process -> Kafka -> `vectorizer worker` process -> store.

Rows written before the connector starts reach the store through its initial snapshot, later
ones through the replication stream; the store must equal what the source implies, chunk for
chunk, after inserts, updates (an out-of-line TOAST value left unchanged included), deletes and
a truncate.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from psycopg import sql

from tests.support.configs import local_config
from tests.support.worker import TEXT, Source, make_source, stop_worker, wait_for, worker

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def connector_log(tmp_path: Path) -> Path:
    return tmp_path / "connector.log"


@pytest.fixture
def source(fresh_database_url: str, kafka_bootstrap_servers: str) -> Source:
    return make_source(fresh_database_url, kafka_bootstrap_servers, local_config(), partitions=3,
                       create_topic=False, external_content=True)


def start_connector(source: Source, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "connector.cli", "--database-url", source.url,
         "--bootstrap-servers", source.servers, "--topic-prefix", source.prefix,
         "--partitions", str(source.partitions), "--catalog-poll", "0.2", "--broker-check", "1"],
        cwd=ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT, env=dict(os.environ),
    )


def table_sql(source: Source, query: str, *params: object) -> None:
    source.sql(sql.SQL(query).format(t=sql.Identifier(source.table)).as_string(), params or None)


def test_connector_and_worker_keep_the_store_equal_to_the_source(
        source: Source, connector_log: Path, tmp_path: Path) -> None:
    for i in range(1, 26):  # before the connector: these arrive through the snapshot
        table_sql(source, "INSERT INTO {t} (id, title, content) VALUES (%s, %s, %s)",
                  i, f"post {i}", TEXT * (1 + i % 3))
    process = start_connector(source, connector_log)
    try:
        worker_log = tmp_path / "worker.log"
        with worker(source, "--loglevel", "info", log=worker_log):
            wait_for(source.store_matches_source, "the snapshot to be embedded", timeout=90)
            big = "Long text that Postgres stores out of line. " * 400  # > 2 KB: TOAST
            table_sql(source, "INSERT INTO {t} (id, title, content) VALUES (100, 'big', %s)", big)
            table_sql(source, "UPDATE {t} SET content = 'Brand new content. ' || content WHERE id = 1")
            table_sql(source, "UPDATE {t} SET title = 'renamed' WHERE id = 100")  # content: unchanged TOAST
            table_sql(source, "UPDATE {t} SET views = views + 1 WHERE id = 2")
            table_sql(source, "DELETE FROM {t} WHERE id = 3")
            wait_for(source.store_matches_source, "streamed changes to reach the store", timeout=90)
            assert re.search(r"rereads=[1-9]", worker_log.read_text())  # the title update: no content
            table_sql(source, "TRUNCATE {t}")
            table_sql(source, "INSERT INTO {t} (id, title, content) VALUES (200, 'after', %s)", TEXT)
            wait_for(lambda: {r[0] for r in source.store_rows()} == {200}, "the truncate", timeout=90)
            assert source.store_matches_source()
    except AssertionError:
        print(connector_log.read_text()[-4000:])
        raise
    finally:
        stop_worker(process)

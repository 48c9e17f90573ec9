"""Kill -9, Postgres and broker restarts, provider outages: the store ends equal to the source.

Every fault happens during a seeded load of inserts, updates and deletes; afterwards the store is
audited against the source table (chunk texts per key and chunk_seq, embedding dimensions):
lost, duplicated and stale must all be 0.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from infra.broker import TansuBroker
from infra.faults import Load, inject, make_pipeline
from infra.pgadmin import create_database
from infra.postgres import EmbeddedPostgres
from tests.fake_providers._server import Fault
from tests.fake_providers.openai_server import FakeOpenAIServer
from tests.support.configs import OPENAI_KEY_ENV, local_config, openai_config

pytestmark = pytest.mark.reliability


def test_kill9_and_restarts_lose_duplicate_and_stale_nothing(
        restartable_postgres: EmbeddedPostgres, restartable_broker: TansuBroker,
        tmp_path: Path) -> None:
    url = create_database(restartable_postgres.url, "faults")
    pipeline = make_pipeline(url, restartable_broker.bootstrap_servers, tmp_path,
                             local_config(dimensions=64))
    load = Load(pipeline, random.Random(20261124))
    load.run(30)  # before the connector: these come through the snapshot
    pipeline.start()
    injected: list[str] = []
    try:
        pipeline.wait_clean("the snapshot to be embedded")
        inject(load, [
            ("kill -9 connector", pipeline.kill_connector),
            ("kill -9 worker", pipeline.kill_worker),
            ("kill -9 connector", pipeline.kill_connector),
            ("kill -9 worker", pipeline.kill_worker),
            ("postgres immediate restart", lambda: restartable_postgres.restart(mode="immediate")),
        ], writes_between=20, record=injected)
        audit = pipeline.wait_clean("the store to recover from process and database faults")
        assert audit.rows_checked == len(load.ids)

        def broker_restart() -> None:
            restartable_broker.restart()
            load.delete_some(3)  # before the connector notices: these deletes' events are lost

        inject(load, [("broker restart (all topics lost)", broker_restart)],
               writes_between=20, record=injected)
        audit = pipeline.wait_clean("the store to recover from the broker losing everything",
                                    timeout=120)
        assert audit.rows_checked == len(load.ids)
        assert (audit.lost, audit.duplicated, audit.stale) == (0, 0, 0)
        assert len(injected) == 6
    finally:
        pipeline.stop()


def test_provider_500s_429_storms_and_timeouts_are_retried_to_completion(
        fresh_database_url: str, kafka_bootstrap_servers: str, tmp_path: Path) -> None:
    with FakeOpenAIServer() as server:
        config = openai_config(server.base_url)
        pipeline = make_pipeline(fresh_database_url, kafka_bootstrap_servers, tmp_path, config,
                                 env={OPENAI_KEY_ENV: server.api_key})
        pipeline.extra_worker_args = ("--embedding-timeout", "1")
        load = Load(pipeline, random.Random(7))
        load.run(10)
        pipeline.start()
        try:
            pipeline.wait_clean("the first rows")
            server.add_fault(Fault(status=500, times=3, body={"error": {"message": "boom"}}))
            load.run(10)
            pipeline.wait_clean("recovery after a run of 500s")
            server.add_fault(Fault(status=429, times=4, headers={"retry-after-ms": "50"},
                                   body={"error": {"message": "rate limited"}}))
            load.run(10)
            pipeline.wait_clean("recovery after a 429 storm")
            # two requests that hang: the 1 s --embedding-timeout makes them transient errors
            timeouts_before = len(server.requests)
            server.add_fault(Fault(delay=30, times=2))
            load.run(10)
            # (each hangs 30 s: recovering well before that shows the timeout was applied)
            pipeline.wait_clean("recovery after provider timeouts", timeout=25)
            assert len(server.requests) >= timeouts_before + 3  # 2 timed out, then answered
            assert not pipeline.sql("SELECT step, message FROM vectorizer.errors")
        finally:
            pipeline.stop()

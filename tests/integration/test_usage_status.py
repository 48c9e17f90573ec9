"""What a backfill cost is visible: tokens and requests per version, provider and model are
recorded with each batch's commit (``vectorizer.usage``) and shown by `vectorizer status`, in
text and ``--json``, and counted in the worker's Prometheus metrics.

Real Postgres and broker; `vectorizer worker` is a separate process; the OpenAI embedder talks
to the tests' OpenAI-compatible server, whose own count of tokens is the reference.
"""

from __future__ import annotations

import pytest

from infra.ops.commands import status_command
from infra.ports import free_port
from tests.fake_providers.openai_server import FakeOpenAIServer
from tests.integration.test_metrics_logs import scrape, value
from tests.integration.test_worker_start_errors import cli, vectorizer_status
from tests.support.configs import OPENAI_KEY_ENV, openai_config
from tests.support.vectorizers import install_catalog
from tests.support.worker import TEXT, make_source, wait_for, worker


@pytest.fixture
def database(fresh_database_url: str) -> str:
    install_catalog(fresh_database_url)
    return fresh_database_url


def test_a_backfill_shows_its_tokens_and_requests(
        database: str, kafka_bootstrap_servers: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeOpenAIServer() as server:
        monkeypatch.setenv(OPENAI_KEY_ENV, server.api_key)  # for the expected vectors, here
        source = make_source(database, kafka_bootstrap_servers, openai_config(server.base_url))
        for i in range(1, 21):
            source.upsert(i, title=f"post {i}", content=TEXT * (1 + i % 3))
        source.flush()
        port = free_port()
        with worker(source, "--metrics-port", str(port),
                    env={OPENAI_KEY_ENV: server.api_key}):
            wait_for(lambda: source.sql("SELECT count(*) FROM vectorizer.applied_state WHERE"
                                        " vectorizer_id = %s", (source.vectorizer_id,))[0][0] == 20,
                     "every row to be applied")
            # before the check below, which embeds the expected vectors through the same server
            requests = len(server.embedding_requests())
            assert source.store_matches_source()
            usage = wait_for(lambda: vectorizer_status(source)["usage"], "usage in the status")
            (row,) = usage
            assert row["provider"] == "openai" and row["model"] == "text-embedding-3-small"
            assert row["version"] == 1 and row["requests"] == requests >= 1
            assert row["tokens"] > 0 and row["rate_limited"] == 0
            text = cli(status_command, "--database-url", source.url)
            assert (f"version 1 usage: {row['tokens']:,} tokens in {requests:,} requests to"
                    " openai text-embedding-3-small") in text
            name = vectorizer_status(source)["name"]
            labels = {"vectorizer": name, "version": "1", "provider": "openai",
                      "model": "text-embedding-3-small"}
            samples = wait_for(lambda: scrape(port), "the worker's metrics")
            assert value(samples, "vectorizer_embedding_tokens_total",
                         **labels) == row["tokens"]
            assert value(samples, "vectorizer_embedding_requests_total",
                         **labels) == requests

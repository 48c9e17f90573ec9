"""Prometheus metrics of ``vectorizer worker`` (``--metrics-port``), across its worker processes.

The supervisor serves one endpoint for all the faust processes it runs, with prometheus_client's
multiprocess mode: when ``--metrics-port`` is set it creates a fresh temporary directory, passes
it to every child as ``PROMETHEUS_MULTIPROC_DIR`` (which makes prometheus_client keep each
child's values in memory-mapped files there), and answers scrapes by summing those files
(:class:`prometheus_client.multiprocess.MultiProcessCollector`). Counters of a child that exited
stay in the sum, so they never go backwards when a child is restarted; the lag gauge counts live
children only. Without ``--metrics-port`` the children get no such directory and their metrics
stay in memory, unread. The directory is removed when the supervisor exits.

Why these: events consumed vs. rows applied vs. skipped says whether the worker keeps up and
how much is redelivery; chunks embedded vs. reused and embedding calls say what the provider is
billed for; errors by step say what to fix (``start`` counts worker processes that exited
because they cannot start, e.g. without their API key); the store latency histogram says
whether Postgres is the bottleneck; the last applied LSN and the consumer lag say how far
behind the store is.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

__all__ = ["MULTIPROC_ENV", "SupervisorMetrics", "WorkerMetrics", "metrics_enabled"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# No _created series (a timestamp per counter that no dashboard reads): Prometheus naming guide.
disable_created_metrics()
PREFIX = "vectorizer_worker_"
LABELS = ("vectorizer", "version")
#: Seconds: a store transaction is a few ms idle and up to seconds for big batches on a busy DB.
STORE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def metrics_enabled() -> bool:
    """True in a child whose supervisor serves metrics (it set the multiprocess directory)."""
    return bool(os.environ.get(MULTIPROC_ENV))


class WorkerMetrics:
    """The metrics of one faust child (one vectorizer config version)."""

    def __init__(self, vectorizer_id: int, version: int,
                 registry: CollectorRegistry | None = None, *, name: str | None = None) -> None:
        # A registry of its own: in multiprocess mode values go to the files whatever registry
        # holds them; without it nothing reads them, and tests may build several in one process.
        self.registry = registry or CollectorRegistry()
        # the label is the vectorizer's name (what dashboards and `vectorizer status` show);
        # the numeric id only where a caller has no name
        self.labels = {"vectorizer": name or str(vectorizer_id), "version": str(version)}

        def counter(name: str, doc: str) -> Any:
            return Counter(PREFIX + name, doc, LABELS, registry=self.registry).labels(**self.labels)

        self.events_consumed = counter(
            "events_consumed", "Events read from the topic and processed in committed batches")
        self.events_skipped = counter(
            "events_skipped", "Row changes skipped: at or below the row's applied LSN (redelivered"
            " or stale) or below a truncate")
        self.events_skipped_foreign = counter(
            "events_skipped_foreign", "Events skipped because another catalog instance wrote them:"
            " an earlier incarnation of the database (dropped and re-created) or another Postgres"
            " server writing to the same topic")
        self.rows_applied = counter(
            "rows_applied", "Source rows written to the store (upserts and deletes)")
        self.chunks_embedded = counter("chunks_embedded", "Chunks sent to the embedding model")
        self.chunks_reused = counter(
            "chunks_reused", "Chunks whose stored vector was reused (same formatted text)")
        self.embedding_calls = counter("embedding_calls", "Calls of the embedding provider")
        self._errors = Counter(
            PREFIX + "errors", "Rows recorded as failed (vectorizer.errors and the DLQ), by step;"
            " step start: worker processes that could not start (no API key, ...)",
            (*LABELS, "step"), registry=self.registry)
        self.store_seconds = Histogram(
            PREFIX + "batch_store_seconds",
            "Seconds to commit one batch to the store (its transaction, with retries)",
            LABELS, buckets=STORE_BUCKETS, registry=self.registry).labels(**self.labels)
        self.last_applied_lsn = Gauge(
            PREFIX + "last_applied_lsn",
            "Highest source LSN in a batch committed to the store", LABELS,
            registry=self.registry, multiprocess_mode="max").labels(**self.labels)
        self.consumer_lag = Gauge(
            PREFIX + "consumer_lag",
            "Events in the topic not yet committed by this version's consumer group, over the"
            " partitions assigned to this machine's workers (high-water mark - committed offset)",
            LABELS, registry=self.registry, multiprocess_mode="livesum").labels(**self.labels)
        self.apps = Gauge(
            PREFIX + "apps", "faust apps serving this config version (one per worker process"
            " that serves it)", LABELS, registry=self.registry,
            multiprocess_mode="livesum").labels(**self.labels)
        # What the provider billed, for a backfill's cost: the version label keeps the series of
        # two versions of one vectorizer apart (in multiprocess mode equal series would collide)
        usage_labels = (*LABELS, "provider", "model")
        self._embedding_tokens = Counter(
            "vectorizer_embedding_tokens", "Tokens billed by the embedding provider (its usage,"
            " else the worker's estimate)", usage_labels, registry=self.registry)
        self._embedding_requests = Counter(
            "vectorizer_embedding_requests", "Requests the embedding provider answered",
            usage_labels, registry=self.registry)
        self._embedding_rate_limited = Counter(
            "vectorizer_embedding_rate_limited", "429 answers of the embedding provider (each"
            " retried after its Retry-After)", usage_labels, registry=self.registry)
        self._lsn = 0
        #: what the engine records in vectorizer.worker_progress and counts for --once and
        #: --exit-on-error: rows recorded as failed in this process (start failures apart),
        #: and when (wall clock) a committed batch last raised the applied LSN
        self.rows_failed = 0
        self.applied_at: float | None = None

    @property
    def applied_lsn(self) -> int | None:
        """The highest source LSN this process committed for the version (None: none yet)."""
        return self._lsn or None

    @classmethod
    def of(cls, vectorizer_id: int, version: int, name: str | None = None) -> WorkerMetrics:
        """The metrics of one version in this process, created once: an app restarted by the
        engine goes on counting where the previous one stopped."""
        key = (vectorizer_id, version)
        metrics = _BY_VERSION.get(key)
        if metrics is None or (name and metrics.labels["vectorizer"] != name):
            metrics = _BY_VERSION[key] = cls(vectorizer_id, version, name=name)
        return metrics

    def errors(self, steps: Iterable[str]) -> None:
        for step in steps:
            self._errors.labels(**self.labels, step=step).inc()
            if step != "start":
                self.rows_failed += 1

    def embedding_usage(self, provider: str, model: str, *, tokens: int, requests: int,
                        rate_limited: int = 0) -> None:
        """Add one batch's usage (``BatchReport.tokens``, ``.requests``, ``.rate_limited``)."""
        labels = {**self.labels, "provider": provider, "model": model}
        for counter, value in ((self._embedding_tokens, tokens),
                               (self._embedding_requests, requests),
                               (self._embedding_rate_limited, rate_limited)):
            if value:
                counter.labels(**labels).inc(value)

    def embedded(self, chunks: int, calls: int) -> None:
        self.chunks_embedded.inc(chunks)
        self.embedding_calls.inc(calls)

    def committed(self, *, events: int, skipped: int, rows: int, reused: int, seconds: float,
                  lsn: int | None) -> None:
        self.events_consumed.inc(events)
        self.events_skipped.inc(skipped)
        self.rows_applied.inc(rows)
        self.chunks_reused.inc(reused)
        self.store_seconds.observe(seconds)
        if lsn is not None and lsn > self._lsn:
            self._lsn = lsn
            self.applied_at = time.time()
            self.last_applied_lsn.set(lsn)


_BY_VERSION: dict[tuple[int, int], WorkerMetrics] = {}


class _SupervisorCollector(Collector):
    """The supervisor's own numbers, read from it at scrape time."""

    def __init__(self, processes: Callable[[], int], restarts: Callable[[], int]) -> None:
        self._processes = processes
        self._restarts = restarts

    def collect(self) -> Iterable[Any]:
        yield GaugeMetricFamily(PREFIX + "processes", "Worker processes running under this"
                                " supervisor (each serves every config version)",
                                value=self._processes())
        yield CounterMetricFamily(PREFIX + "restarts", "Worker processes restarted after they"
                                  " exited on their own", value=self._restarts())


class SupervisorMetrics:
    """Owns the multiprocess directory and the HTTP endpoint of one supervisor."""

    def __init__(self, port: int, processes: Callable[[], int], restarts: Callable[[], int],
                 addr: str = "0.0.0.0", directory: str | None = None) -> None:
        self.directory = directory or tempfile.mkdtemp(prefix="vectorizer-worker-metrics-")
        self.registry = CollectorRegistry()
        MultiProcessCollector(self.registry, path=self.directory)
        self.registry.register(_SupervisorCollector(processes, restarts))
        self.server, self.thread = start_http_server(port, addr=addr, registry=self.registry)

    def child_env(self) -> dict[str, str]:
        return {MULTIPROC_ENV: self.directory}

    def child_exited(self, pid: int) -> None:
        """Drop the exited child's live gauges (its counters stay in the sums)."""
        mark_process_dead(pid, self.directory)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        shutil.rmtree(self.directory, ignore_errors=True)

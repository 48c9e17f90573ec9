"""``vectorizer worker``: run the processors of every vectorizer config version in the catalog.

The command is a small supervisor. It polls the catalog and keeps ``--concurrency`` faust
worker processes per config version that is ``active`` or ``building``, each in that version's
consumer group (see ``processors.app`` for why one process per version). A new vectorizer or a
new version gets its workers within one poll interval; a retired or dropped version loses them;
a worker that dies is restarted after a short backoff. Kafka spreads the partitions of each
group over all of that group's workers, on this machine and on others running the same command.

A worker process that cannot start (its embedder needs an API key that is not in the
environment, an optional extra is not installed, the stored config does not load) records why
in ``vectorizer.errors`` (step ``start``, no key; one row per version while it keeps failing)
and exits with :data:`EXIT_START_FAILED`; the supervisor logs that reason in one line and tries
again with the same backoff. The first process of the version that starts deletes the error.

With ``--metrics-port`` the supervisor serves Prometheus metrics of all its children on that one
port (``processors.metrics`` explains the multiprocess mode); ``--log-format`` applies to the
supervisor and is passed on to every child.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import click
import psycopg

from pgai_orm.catalog import catalog_exists, ensure_catalog
from pgai_orm.catalog import errors as catalog_errors
from pgai_orm.catalog.versions import served_versions
from pgai_orm.configuration import ConfigurationError
from pgai_orm.embedders.errors import MissingApiKeyError
from pgai_orm.errors import InvariantError, VectorizerError
from pgai_orm.runtime.logs import (
    LOG_FORMATS,
    install_json_hooks,
    logging_config,
    scrub,
    setup_logging,
)
from pgai_orm.runtime.processes import stop_process
from processors.metrics import MULTIPROC_ENV, SupervisorMetrics, WorkerMetrics, metrics_enabled

if TYPE_CHECKING:
    import faust

logger = logging.getLogger("processors.worker")

GroupKey = tuple[int, int]  # (vectorizer_id, version)

#: Exit status of a worker process that cannot start (sysexits' EX_CONFIG); its reason is in
#: ``vectorizer.errors`` (step ``start``).
EXIT_START_FAILED = 78


def desired_versions(database_url: str, *, check_catalog: bool = True) -> set[GroupKey]:
    """The config versions that need processors: every ``active`` and ``building`` one.

    With ``check_catalog`` a catalog older than this code is upgraded first (a no-op when it is
    current), so no worker ever runs against a catalog that lacks a column it writes; the
    supervisor asks for that only until it succeeded once.
    """
    with psycopg.connect(database_url, autocommit=True) as conn:
        if not catalog_exists(conn):
            return set()
        if check_catalog:
            ensure_catalog(conn)
        return served_versions(conn)


def record_missing_sources(database_url: str) -> list[str]:
    """Record a ``source`` error for each vectorizer whose source table was dropped, once
    (:func:`pgai_orm.catalog.errors.record_missing_sources`); returns the new messages. Also
    forgets the ``start`` errors of versions no longer served (retired or dropped)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        if not catalog_exists(conn):
            return []
        catalog_errors.clear_stale_start_errors(conn)
        return (catalog_errors.record_missing_sources(conn)
                + catalog_errors.record_schema_errors(conn))


def start_error(database_url: str, key: GroupKey) -> catalog_errors.StartError | None:
    """The ``start`` error recorded for one version, if any (None also when unreadable)."""
    try:
        with psycopg.connect(database_url, autocommit=True) as conn:
            return catalog_errors.start_errors(conn).get(key)
    except psycopg.Error:
        return None


@dataclass
class _Child:
    key: GroupKey
    slot: int
    process: subprocess.Popen[bytes]
    web_port: int | None


@dataclass
class Supervisor:
    """Starts, stops and restarts one faust worker process per (version, slot)."""

    child_args: list[str]
    database_url: str
    concurrency: int = 1
    poll_interval: float = 5.0
    web_port: int | None = None
    metrics_port: int | None = None
    children: dict[tuple[GroupKey, int], _Child] = field(default_factory=dict)
    _restart_at: dict[tuple[GroupKey, int], float] = field(default_factory=dict)
    _failures: dict[tuple[GroupKey, int], int] = field(default_factory=dict)
    _stopping: bool = False
    _metrics: SupervisorMetrics | None = None
    _restarts: int = 0
    _catalog_checked: bool = False

    def running(self) -> dict[GroupKey, int]:
        """Children alive per config version (for the metrics endpoint)."""
        while True:  # called from the HTTP thread while the main loop may change the dict
            try:
                children = list(self.children.values())
                break
            except RuntimeError:
                continue
        counts: dict[GroupKey, int] = {}
        for child in children:
            if child.process.returncode is None:
                counts[child.key] = counts.get(child.key, 0) + 1
        return counts

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop(MULTIPROC_ENV, None)  # never write into a directory someone else set
        if self._metrics is not None:
            env.update(self._metrics.child_env())
        return env

    def _reaped(self, child: _Child) -> None:
        if self._metrics is not None:
            self._metrics.child_exited(child.process.pid)

    def _free_web_port(self) -> int | None:
        if self.web_port is None:
            return None
        used = {c.web_port for c in self.children.values()}
        port = self.web_port
        while port in used:
            port += 1
        return port

    def _spawn(self, key: GroupKey, slot: int) -> None:
        port = self._free_web_port()
        args = [sys.executable, "-m", "processors.cli", *self.child_args,
                "--version-group", f"{key[0]}:{key[1]}"]
        args += ["--web-port", str(port)] if port is not None else ["--without-web"]
        process = subprocess.Popen(args, env=self._child_env())
        self.children[(key, slot)] = _Child(key, slot, process, port)
        logger.info("started worker pid %d for vectorizer %d version %d (slot %d)",
                    process.pid, key[0], key[1], slot)

    def _stop(self, child: _Child) -> None:
        if child.process.poll() is None:
            stop_process(child.process.pid, 30, process=child.process)
        self._reaped(child)
        logger.info("stopped worker pid %d (vectorizer %d version %d)",
                    child.process.pid, child.key[0], child.key[1])

    def reconcile(self) -> None:
        """Make the running processes match the catalog."""
        try:
            wanted = desired_versions(self.database_url, check_catalog=not self._catalog_checked)
            self._catalog_checked = self._catalog_checked or bool(wanted)
            for message in record_missing_sources(self.database_url):
                logger.error(message)
        except psycopg.Error as exc:
            logger.warning("cannot read the catalog (%s); keeping the current workers", exc)
            return
        for ident, child in list(self.children.items()):
            if child.key not in wanted:
                self._stop(child)
                del self.children[ident]
            elif child.process.poll() is not None:
                self._reaped(child)
                self._restarts += 1
                del self.children[ident]
                failures = self._failures.get(ident, 0) + 1
                self._failures[ident] = failures
                delay = min(2.0 ** (failures - 1), 60.0)
                self._restart_at[ident] = time.monotonic() + delay
                self._log_exit(child, delay)
        now = time.monotonic()
        for key in sorted(wanted):
            for slot in range(self.concurrency):
                ident = (key, slot)
                if ident not in self.children and self._restart_at.get(ident, 0) <= now:
                    self._spawn(key, slot)

    def _log_exit(self, child: _Child, delay: float) -> None:
        """One line per exited process; for one that could not start, the recorded reason."""
        fields = {"vectorizer": child.key[0], "version": child.key[1],
                  "exit_status": child.process.returncode}
        if child.process.returncode != EXIT_START_FAILED:
            logger.warning("worker pid %d exited with %s; restarting in %.0f s",
                           child.process.pid, child.process.returncode, delay, extra=fields)
            return
        error = start_error(self.database_url, child.key)
        if error is None:  # it could not write the catalog either: it logged the reason itself
            logger.error("worker for vectorizer %d version %d cannot start (reason in its log"
                         " above); next try in %.0f s", child.key[0], child.key[1], delay,
                         extra=fields)
            return
        logger.error("vectorizer %s version %d cannot start: %s (next try in %.0f s; see"
                     " `vectorizer errors`)", error.name, error.version, error.message, delay,
                     extra=fields)

    def run(self) -> None:
        def stop(signum: int, frame: object) -> None:
            self._stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        if self.metrics_port:
            self._metrics = SupervisorMetrics(self.metrics_port, self.running, lambda: self._restarts)
            logger.info("serving Prometheus metrics on port %d", self.metrics_port)
        try:
            while not self._stopping:
                self.reconcile()
                deadline = time.monotonic() + self.poll_interval
                while not self._stopping and time.monotonic() < deadline:
                    time.sleep(0.1)
        finally:
            for child in self.children.values():
                if child.process.poll() is None:
                    child.process.terminate()
            for child in self.children.values():
                self._stop(child)
            if self._metrics is not None:
                self._metrics.close()


def start_failure_message(exc: BaseException, config: dict[str, object] | None = None) -> str:
    """One line saying why a worker process cannot start and what fixes it; never a secret.

    ``config`` is the version's stored config (for the embedder's name).
    """
    embedding = (config or {}).get("embedding")
    implementation = embedding.get("implementation") if isinstance(embedding, dict) else None
    if isinstance(exc, MissingApiKeyError):
        embedder = f"the {implementation} embedder" if implementation else "the embedder"
        message = (f"{embedder} needs an API key: set the environment variable {exc.variable}"
                   " for `vectorizer worker` and restart it")
    elif isinstance(exc, ConfigurationError):  # stored by an older or newer version of the code
        message = (f"its stored config does not load: {exc}; change it with"
                   " op.alter_vectorizer")
    elif isinstance(exc, VectorizerError):  # our own messages name the problem and the fix
        message = str(exc)
    else:  # a bug or an environment problem: the process's log has the traceback
        message = f"{type(exc).__name__}: {exc} (traceback in the worker's log)"
    return scrub(" ".join(message.split()))


def _record_start_failure(database_url: str, vectorizer_id: int, version: int,
                          message: str, exc: BaseException) -> None:
    """Write the ``start`` error and count it in the metrics; log it when the catalog is away."""
    if metrics_enabled():
        WorkerMetrics(vectorizer_id, version).errors(["start"])
    details = {"error": type(exc).__name__, "host": socket.gethostname(), "pid": os.getpid()}
    try:
        with psycopg.connect(database_url, autocommit=True) as conn:
            catalog_errors.record_start_error(conn, vectorizer_id, version, message, details)
    except psycopg.Error as db_exc:
        logger.error("cannot start: %s (and cannot record it in vectorizer.errors: %s)",
                     message, " ".join(str(db_exc).split()))


def _clear_start_error_once_running(app: faust.App, database_url: str, vectorizer_id: int,
                                    version: int) -> None:
    """When the app has started, delete the version's ``start`` error: it can start now."""
    from psycopg import AsyncConnection

    async def forget_start_error() -> None:
        try:
            async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
                await conn.execute(catalog_errors.CLEAR_START_ERROR_SQL, (vectorizer_id, version))
        except psycopg.Error as exc:
            logger.warning("could not clear the start error of this version: %s",
                           " ".join(str(exc).split()))

    app.task(forget_start_error)


def _run_version(vectorizer_id: int, version: int, settings: object, loglevel: str,
                 log_format: str = "text") -> None:
    """Child mode: one faust worker for one config version, until SIGTERM.

    A version whose app cannot be built (no API key, a missing extra, a config this code cannot
    load) is recorded as a ``start`` error and the process exits with :data:`EXIT_START_FAILED`.
    """
    fields = {"vectorizer": vectorizer_id, "version": version}  # on every line of this process
    setup_logging(log_format, loglevel, fields)
    import faust

    from processors.app import WorkerSettings, create_app, load_spec

    if not isinstance(settings, WorkerSettings):
        raise InvariantError(f"worker settings of type {type(settings).__name__}")
    spec, topic = load_spec(settings.database_url, vectorizer_id, version, settings.topic_prefix)
    try:
        app = create_app(spec, topic, settings)
    except Exception as exc:  # whatever it is, the version cannot run: say why
        message = start_failure_message(exc, dict(spec.config))
        if not isinstance(exc, VectorizerError):
            logger.error("cannot start: %s", message, exc_info=True)
        else:
            logger.debug("cannot start: %s", message)
        _record_start_failure(settings.database_url, vectorizer_id, version, message, exc)
        logging.shutdown()
        raise SystemExit(EXIT_START_FAILED) from None
    _clear_start_error_once_running(app, settings.database_url, vectorizer_id, version)
    # faust configures logging itself when it starts: hand it the same setup; quiet in JSON
    # mode, so its banner and spinner never mix plain text into the JSON lines
    worker = faust.Worker(app, loglevel=loglevel, redirect_stdouts=False,
                          logging_config=logging_config(log_format, loglevel, fields),
                          quiet=log_format == "json")
    if log_format == "json":
        worker.spinner = None  # it draws on a terminal stdout (docker run -t) between the lines
        install_json_hooks()
    worker.execute_from_commandline()


@click.command(name="worker")
@click.option("--database-url", envvar="DATABASE_URL", required=True,
              help="PostgreSQL URL of the database holding the vectorizers [env DATABASE_URL].")
@click.option("--kafka-bootstrap-servers", "--bootstrap-servers", "bootstrap_servers", envvar="KAFKA_BOOTSTRAP_SERVERS",
              required=True, help="host:port[,host:port] [env KAFKA_BOOTSTRAP_SERVERS].")
@click.option("--topic-prefix", envvar="VECTORIZER_TOPIC_PREFIX", default="vectorizer",
              show_default=True, help="Prefix of the connector's topics.")
@click.option("--web-port", type=int, default=None,
              help="faust web port of the first worker process (the next ones count up).")
@click.option("--without-web", is_flag=True, help="Run no faust web server (the default).")
@click.option("--concurrency", type=int, default=1, show_default=True,
              help="Worker processes per config version on this machine.")
@click.option("--batch-size", type=int, default=256, show_default=True,
              help="Events per batch (stream.take).")
@click.option("--batch-within", type=float, default=1.0, show_default=True,
              help="Seconds to wait for a batch to fill.")
@click.option("--session-timeout", type=float, default=30.0, show_default=True,
              envvar="VECTORIZER_SESSION_TIMEOUT",
              help="Kafka group session timeout in seconds (2-3 s against the embedded broker).")
@click.option("--poll-interval", type=float, default=5.0, show_default=True,
              help="Seconds between catalog polls for new or retired versions.")
@click.option("--metrics-port", envvar="VECTORIZER_WORKER_METRICS_PORT", type=click.IntRange(min=0),
              default=None, help="Serve Prometheus metrics of this supervisor and all its worker"
              " processes on this port; 0 or unset: off [env VECTORIZER_WORKER_METRICS_PORT].")
@click.option("--fetch-max-wait-ms", envvar="VECTORIZER_FETCH_MAX_WAIT_MS",
              type=click.IntRange(0, 60_000), default=100, show_default=True,
              help="Longest a fetch waits on an idle partition (faust hard-codes 1500; the "
              "embedded broker holds every fetch that long) [env VECTORIZER_FETCH_MAX_WAIT_MS].")
@click.option("--embedding-timeout", envvar="VECTORIZER_EMBEDDING_TIMEOUT",
              type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              help="Seconds one request to a remote embedding provider may take; a slower one "
              "is a transient error, retried with backoff [env VECTORIZER_EMBEDDING_TIMEOUT].")
@click.option("--loglevel", default="info", show_default=True)
@click.option("--log-format", envvar="VECTORIZER_LOG_FORMAT", type=click.Choice(LOG_FORMATS),
              default="text", show_default=True,
              help="text lines, or one JSON object per line [env VECTORIZER_LOG_FORMAT].")
@click.option("--version-group", default=None, hidden=True,
              help="Internal: run the faust worker of one version, given as ID:VERSION.")
def worker_command(database_url: str, bootstrap_servers: str, topic_prefix: str,
                   web_port: int | None, without_web: bool, concurrency: int, batch_size: int,
                   batch_within: float, session_timeout: float, poll_interval: float,
                   metrics_port: int | None, fetch_max_wait_ms: int, embedding_timeout: float,
                   loglevel: str,
                   log_format: str, version_group: str | None) -> None:
    """Embed every change of every vectorizer's source table into its embedding store."""
    if concurrency < 1:
        raise click.BadParameter("must be >= 1", param_hint="--concurrency")
    # Read by processors.faust_transport in this process and, inherited, in every child.
    os.environ["VECTORIZER_FETCH_MAX_WAIT_MS"] = str(fetch_max_wait_ms)
    if version_group is not None:
        from processors.app import WorkerSettings

        vectorizer_id, version = (int(x) for x in version_group.split(":"))
        settings = WorkerSettings(
            database_url=database_url, bootstrap_servers=bootstrap_servers,
            topic_prefix=topic_prefix, batch_size=batch_size, batch_within=batch_within,
            session_timeout=session_timeout, web_port=None if without_web else web_port,
            embedding_timeout=embedding_timeout,
        )
        _run_version(vectorizer_id, version, settings, loglevel, log_format)
        return
    setup_logging(log_format, loglevel)
    # the URL may hold a password: children get it through the environment, not argv (ps)
    os.environ["DATABASE_URL"] = database_url
    os.environ["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap_servers
    child_args = [
        "--topic-prefix", topic_prefix, "--batch-size", str(batch_size),
        "--batch-within", str(batch_within), "--session-timeout", str(session_timeout),
        "--embedding-timeout", str(embedding_timeout),
        "--loglevel", loglevel, "--log-format", log_format,
    ]
    Supervisor(child_args, database_url, concurrency, poll_interval,
               None if without_web else web_port, metrics_port or None).run()

if __name__ == "__main__":
    worker_command(prog_name="vectorizer worker", auto_envvar_prefix=None)

"""``vectorizer worker``: embed every change of every vectorizer's source table into its store.

A worker process serves *every* config version that is ``active`` or ``building``, with one
faust app per version on its one event loop (``processors.engine`` says why), so the number of
processes does not grow with the number of vectorizers. Kafka spreads the partitions of each
version's consumer group over the processes of that group, on this machine and on others
running the same command.

With ``--concurrency 1`` (the default) the command *is* that worker process, like pgai's worker:
no second interpreter, and a crash ends the command (run it under a process manager that
restarts it: the compose file's ``restart:``, systemd, Kubernetes). With ``--concurrency N`` it
is a small supervisor of N worker processes, which restarts one that died after a backoff
(1 s, doubling, at most 60 s; reset once it ran for a minute). The supervisor imports neither
faust nor a model. The ``vectorizer`` command imports a subcommand's module only when it runs
(``infra.cli``), so ``vectorizer worker`` holds this command's imports and none of the others'.

With ``--metrics-port`` the command serves Prometheus metrics of all its worker processes on that
one port (``processors.metrics`` explains the multiprocess mode); ``--log-format`` applies to
every process.

pgai's run-control flags: ``--once`` processes what is pending and exits (0, or 1 when rows
failed), ``--vectorizer NAME`` / ``--vectorizer-id ID`` (repeatable) serve only those
vectorizers, ``--exit-on-error`` ends the command at the first row error with status 1, after
committing what was done (``processors.engine`` implements them). Under a supervisor, a worker
process that exits under ``--once`` is not restarted, and the command ends when all did; under
``--exit-on-error`` the first that exits with an error stops the others.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click

from pgai_orm.errors import InvariantError
from pgai_orm.runtime.backoff import Backoff
from pgai_orm.runtime.logs import setup_logging
from pgai_orm.runtime.options import (
    database_url_option,
    kafka_option,
    log_format_option,
    log_level_option,
    metrics_port_option,
    option,
)
from pgai_orm.runtime.processes import stop_process

if TYPE_CHECKING:
    from processors.app import WorkerSettings
    from processors.metrics import SupervisorMetrics

logger = logging.getLogger("processors.worker")

#: The environment variable that hands the fetch wait (ms) to processors.faust_transport.
FETCH_MAX_WAIT_ENV = "VECTORIZER_FETCH_MAX_WAIT_MS"
#: Seconds before restarting a worker process that exited; doubles up to the cap.
FIRST_RESTART_S = 1.0
MAX_RESTART_S = 60.0
#: A worker process that ran this long before it exited starts the backoff over.
STABLE_AFTER_S = 60.0
#: Seconds a worker process gets to drain its batches and commit when stopped.
STOP_TIMEOUT_S = 30.0


@dataclass
class _Child:
    slot: int
    process: subprocess.Popen[bytes]
    started: float


@dataclass
class Supervisor:
    """Keeps ``concurrency`` worker processes running; each serves every config version."""

    child_args: list[str]
    concurrency: int = 1
    metrics_port: int | None = None
    web_port: int | None = None
    children: dict[int, _Child] = field(default_factory=dict)
    restarts: int = 0
    #: ``--once``: a worker process that exits is done (not restarted); ``--exit-on-error``: one
    #: that exits with an error stops the others; either way ``exit_status`` is the first error
    once: bool = False
    exit_on_error: bool = False
    exit_status: int = 0
    _done: set[int] = field(default_factory=set)
    _restart_at: dict[int, float] = field(default_factory=dict)
    _backoff: dict[int, Backoff] = field(default_factory=dict)
    _stopping: bool = False
    _metrics: SupervisorMetrics | None = None

    def running(self) -> int:
        """Worker processes alive (for the metrics endpoint; read from its thread)."""
        return sum(1 for c in list(self.children.values()) if c.process.returncode is None)

    def _child_env(self) -> dict[str, str]:
        from processors.metrics import MULTIPROC_ENV

        env = dict(os.environ)
        env.pop(MULTIPROC_ENV, None)  # never write into a directory someone else set
        if self._metrics is not None:
            env.update(self._metrics.child_env())
        return env

    def _spawn(self, slot: int) -> None:
        args = [sys.executable, "-m", "processors.cli", *self.child_args, "--engine"]
        if self.web_port is not None:  # room for 100 versions per process
            args += ["--web-port", str(self.web_port + 100 * slot)]
        else:
            args += ["--without-web"]
        process = subprocess.Popen(args, env=self._child_env())
        self.children[slot] = _Child(slot, process, time.monotonic())
        logger.info("started worker process %d (pid %d)", slot, process.pid)

    def _reaped(self, child: _Child) -> None:
        if self._metrics is not None:
            self._metrics.child_exited(child.process.pid)

    def check(self) -> None:
        """Restart the worker processes that exited, after their backoff."""
        now = time.monotonic()
        for slot, child in list(self.children.items()):
            status = child.process.poll()
            if status is None:
                continue
            self._reaped(child)
            del self.children[slot]
            if self.once or (self.exit_on_error and status != 0):
                self._done.add(slot)
                # killed by a signal: the shell's 128 + signal number
                self.exit_status = self.exit_status or (status if status >= 0 else 128 - status)
                if status != 0 and self.exit_on_error:
                    logger.error("worker process %d (pid %d) exited with %s: stopping the others"
                                 " (--exit-on-error)", slot, child.process.pid, status)
                    self._stopping = True
                continue
            self.restarts += 1
            stable = now - child.started >= STABLE_AFTER_S
            backoff = self._backoff.setdefault(
                slot, Backoff(FIRST_RESTART_S, MAX_RESTART_S, jitter=0))
            if stable:
                backoff.reset()
            delay = backoff.next_delay()
            self._restart_at[slot] = now + delay
            logger.warning("worker process %d (pid %d) exited with %s; restarting in %.0f s",
                           slot, child.process.pid, status, delay,
                           extra={"exit_status": status})
        for slot in range(self.concurrency):
            if (slot not in self.children and slot not in self._done
                    and self._restart_at.get(slot, 0.0) <= now and not self._stopping):
                self._spawn(slot)
        if self.once and len(self._done) == self.concurrency:
            self._stopping = True

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT (or, with ``once``, until every process is done);
        the exit status for the command."""

        def stop(signum: int, frame: object) -> None:
            self._stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        if self.metrics_port:
            from processors.metrics import SupervisorMetrics

            self._metrics = SupervisorMetrics(self.metrics_port, self.running,
                                              lambda: self.restarts)
            logger.info("serving Prometheus metrics on port %d", self.metrics_port)
        try:
            while not self._stopping:
                self.check()
                deadline = time.monotonic() + 0.5
                while not self._stopping and time.monotonic() < deadline:
                    time.sleep(0.05)
        finally:
            for child in self.children.values():  # all at once: each drains in parallel
                if child.process.poll() is None:
                    child.process.terminate()
            for child in self.children.values():
                if child.process.poll() is None:
                    stop_process(child.process.pid, STOP_TIMEOUT_S, process=child.process)
                self._reaped(child)
            if self._metrics is not None:
                self._metrics.close()
        return self.exit_status


@dataclass(frozen=True)
class RunControl:
    """pgai's run-control flags: which vectorizers, ``--once``, ``--exit-on-error``."""

    names: tuple[str, ...] = ()
    ids: tuple[int, ...] = ()
    once: bool = False
    exit_on_error: bool = False

    def args(self) -> list[str]:
        """The flags again, for a worker process (the supervisor's command line)."""
        args: list[str] = []
        for name in self.names:
            args += ["--vectorizer", name]
        for vectorizer_id in self.ids:
            args += ["--vectorizer-id", str(vectorizer_id)]
        args += ["--once"] if self.once else []
        args += ["--exit-on-error"] if self.exit_on_error else []
        return args


def _run_engine(settings: WorkerSettings, poll_interval: float, loglevel: str,
                log_format: str, control: RunControl = RunControl()) -> None:
    """Worker-process mode: the engine (every served version's app) until SIGTERM, or until it
    finished by itself (``--once``, ``--exit-on-error``): then exit with its status."""
    import mode

    from pgai_orm.runtime.logs import install_json_hooks, logging_config
    from processors.engine import Engine

    setup_logging(log_format, loglevel)
    engine = Engine(settings, poll_interval=poll_interval, only=control.ids or None,
                    names=control.names or None, once=control.once,
                    exit_on_error=control.exit_on_error)
    # mode configures logging itself when it starts: hand it the same setup
    worker = mode.Worker(engine, loglevel=loglevel, redirect_stdouts=False,
                         logging_config=logging_config(log_format, loglevel),
                         quiet=True)
    # the engine finished by itself: stop exactly as on SIGTERM (mode's handler waits for the
    # graceful stop, in which each app commits what it did, before it closes the loop)
    def finish() -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    engine.on_finished = finish
    if log_format == "json":
        install_json_hooks()
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if not exc.code and engine.exit_status:
            raise SystemExit(engine.exit_status) from None
        raise


@click.command(name="worker")
@database_url_option()
@kafka_option(hidden_aliases=("--bootstrap-servers",))
@option("--topic-prefix", envvar="VECTORIZER_TOPIC_PREFIX", default="vectorizer",
        show_default=True, help="Prefix of the connector's topics.")
@option("--web-port", type=int, default=None,
        help="faust web port of the first config version served (the next ones count up;"
        " the next process starts after the ports of the first).")
@option("--without-web", is_flag=True, help="Run no faust web server (the default).")
@option("--concurrency", type=click.IntRange(min=1), default=1, show_default=True,
        help="Worker processes on this machine, each serving every config version (1: this"
        " process is the worker; more: a supervisor restarts any that dies).")
@option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True,
        help="Most events per batch.")
@option("--batch-within", type=click.FloatRange(min=0), default=1.0, show_default=True,
        help="Longest a batch waits for more events after its first; a batch is cut sooner"
        " when the stream goes quiet.")
@option("--session-timeout", type=float, default=30.0, show_default=True,
        envvar="VECTORIZER_SESSION_TIMEOUT",
        help="Kafka group session timeout in seconds (2-3 s against the embedded broker).")
@option("--poll-interval", type=float, default=5.0, show_default=True,
        help="Seconds between catalog polls for new or retired versions.")
@metrics_port_option("worker")
@option("--fetch-max-wait", envvar="VECTORIZER_FETCH_MAX_WAIT",
        type=click.FloatRange(0, 60), default=0.1, show_default=True,
        help="Longest a fetch waits on an idle partition, in seconds (faust hard-codes 1.5; the"
        " embedded broker holds every fetch that long).")
@option("--fetch-max-wait-ms", "fetch_max_wait_ms", type=click.IntRange(0, 60_000), default=None,
        hidden=True, help="Old spelling of --fetch-max-wait, in milliseconds.")
@option("--embedding-timeout", envvar="VECTORIZER_EMBEDDING_TIMEOUT",
        type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
        help="Seconds one request to a remote embedding provider may take; a slower one "
        "is a transient error, retried with backoff.")
@log_level_option(hidden_aliases=("--loglevel",))
@log_format_option()
@option("--vectorizer", "names", multiple=True, metavar="NAME",
        help="Serve only the vectorizer of this name (repeatable; default: all). With"
        " --vectorizer-id, a vectorizer either names is served.")
@option("--vectorizer-id", "-i", "ids", multiple=True, type=click.IntRange(min=1), metavar="ID",
        help="Serve only the vectorizer of this id (repeatable; pgai's flag).")
@option("--once", is_flag=True,
        help="Process what is pending now, then exit: 0, or 1 when rows failed (for cron).")
@option("--exit-on-error", is_flag=True,
        help="Exit with status 1 at the first row that cannot be embedded (after committing"
        " what was done) instead of recording it and going on.")
@option("--engine", "engine_mode", is_flag=True, hidden=True,
        help="Internal: be one worker process (the supervisor starts these).")
def worker_command(database_url: str, bootstrap_servers: str, topic_prefix: str,
                   web_port: int | None, without_web: bool, concurrency: int, batch_size: int,
                   batch_within: float, session_timeout: float, poll_interval: float,
                   metrics_port: int | None, fetch_max_wait: float,
                   fetch_max_wait_ms: int | None, embedding_timeout: float, log_level: str,
                   log_format: str, names: tuple[str, ...], ids: tuple[int, ...], once: bool,
                   exit_on_error: bool, engine_mode: bool) -> None:
    """Embed every change of every vectorizer's source table into its embedding store."""
    loglevel = log_level.lower()
    wait_ms = fetch_max_wait_ms if fetch_max_wait_ms is not None else round(fetch_max_wait * 1000)
    # Read by processors.faust_transport in this process and, inherited, in every child.
    os.environ[FETCH_MAX_WAIT_ENV] = str(wait_ms)
    port = None if without_web else web_port
    # the URL may hold a password: children get it through the environment, not argv (ps)
    os.environ["DATABASE_URL"] = database_url
    os.environ["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap_servers
    args = child_args(topic_prefix=topic_prefix, batch_size=batch_size, batch_within=batch_within,
                      session_timeout=session_timeout, poll_interval=poll_interval,
                      fetch_max_wait_ms=wait_ms, embedding_timeout=embedding_timeout,
                      loglevel=loglevel, log_format=log_format)
    control = RunControl(names, ids, once, exit_on_error)
    args += control.args()
    if engine_mode or concurrency == 1:
        # first: nothing may import prometheus_client before its directory is set
        close_metrics = _serve_own_metrics(metrics_port) if metrics_port and not engine_mode \
            else None
        from processors.app import WorkerSettings
        from processors.interpreter import set_worker_switch_interval

        try:
            set_worker_switch_interval()  # before the model thread exists
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        settings = WorkerSettings(
            database_url=database_url, bootstrap_servers=bootstrap_servers,
            topic_prefix=topic_prefix, batch_size=batch_size, batch_within=batch_within,
            session_timeout=session_timeout, web_port=port, embedding_timeout=embedding_timeout,
        )
        try:
            _run_engine(settings, poll_interval, loglevel, log_format, control)
        finally:
            if close_metrics is not None:
                close_metrics()
        return
    setup_logging(log_format, loglevel)
    logger.info("worker supervisor: %d worker processes, each serving every vectorizer",
                concurrency)
    status = Supervisor(args, concurrency, metrics_port or None, port, once=once,
                        exit_on_error=exit_on_error).run()
    if status:
        sys.exit(status)


def child_args(**options: Any) -> list[str]:
    """The settings every worker process gets on its command line (no secret among them):
    ``--name value`` for each option, underscores as dashes (``loglevel`` is ``--log-level``)."""
    args: list[str] = []
    for name, value in options.items():
        flag = "--log-level" if name == "loglevel" else "--" + name.replace("_", "-")
        args += [flag, str(value)]
    return args


def _serve_own_metrics(port: int) -> Callable[[], None]:
    """Serve this process's metrics when it is the whole worker (``--concurrency 1``).

    prometheus_client picks where values live when it is first imported, so the multiprocess
    directory is set before anything imports it (this module does not), exactly as a supervisor
    sets it for its children; the same endpoint then serves the same series either way.
    """
    if "prometheus_client" in sys.modules:
        raise InvariantError("prometheus_client was imported before its directory was set")
    directory = tempfile.mkdtemp(prefix="vectorizer-worker-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    from processors.metrics import SupervisorMetrics

    metrics = SupervisorMetrics(port, lambda: 1, lambda: 0, directory=directory)
    logger.info("serving Prometheus metrics on port %d", port)
    return metrics.close


if __name__ == "__main__":
    worker_command(prog_name="vectorizer worker", auto_envvar_prefix=None)

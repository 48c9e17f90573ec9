"""``vectorizer worker``: run the processors of every vectorizer config version in the catalog.

The command is a small supervisor. It polls the catalog and keeps ``--concurrency`` faust
worker processes per config version that is ``active`` or ``building``, each in that version's
consumer group (see ``processors.app`` for why one process per version). A new vectorizer or a
new version gets its workers within one poll interval; a retired or dropped version loses them;
a worker that dies is restarted after a short backoff. Kafka spreads the partitions of each
group over all of that group's workers, on this machine and on others running the same command.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import click
import psycopg

from pgai_orm.catalog import catalog_exists

logger = logging.getLogger("processors.worker")

GroupKey = tuple[int, int]  # (vectorizer_id, version)


def desired_versions(database_url: str) -> set[GroupKey]:
    """The config versions that need processors: every ``active`` and ``building`` one."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        if not catalog_exists(conn):
            return set()
        rows = conn.execute(
            "SELECT vectorizer_id, version FROM vectorizer.config_versions"
            " WHERE status IN ('active', 'building')"
        ).fetchall()
    return {(int(a), int(b)) for a, b in rows}


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
    children: dict[tuple[GroupKey, int], _Child] = field(default_factory=dict)
    _restart_at: dict[tuple[GroupKey, int], float] = field(default_factory=dict)
    _failures: dict[tuple[GroupKey, int], int] = field(default_factory=dict)
    _stopping: bool = False

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
        process = subprocess.Popen(args)
        self.children[(key, slot)] = _Child(key, slot, process, port)
        logger.info("started worker pid %d for vectorizer %d version %d (slot %d)",
                    process.pid, key[0], key[1], slot)

    def _stop(self, child: _Child) -> None:
        if child.process.poll() is None:
            child.process.terminate()
            try:
                child.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
        logger.info("stopped worker pid %d (vectorizer %d version %d)",
                    child.process.pid, child.key[0], child.key[1])

    def reconcile(self) -> None:
        """Make the running processes match the catalog."""
        try:
            wanted = desired_versions(self.database_url)
        except psycopg.Error as exc:
            logger.warning("cannot read the catalog (%s); keeping the current workers", exc)
            return
        for ident, child in list(self.children.items()):
            if child.key not in wanted:
                self._stop(child)
                del self.children[ident]
            elif child.process.poll() is not None:
                logger.warning("worker pid %d exited with %s; restarting",
                               child.process.pid, child.process.returncode)
                del self.children[ident]
                failures = self._failures.get(ident, 0) + 1
                self._failures[ident] = failures
                self._restart_at[ident] = time.monotonic() + min(2.0 ** (failures - 1), 60.0)
        now = time.monotonic()
        for key in sorted(wanted):
            for slot in range(self.concurrency):
                ident = (key, slot)
                if ident not in self.children and self._restart_at.get(ident, 0) <= now:
                    self._spawn(key, slot)

    def run(self) -> None:
        def stop(signum: int, frame: object) -> None:
            self._stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
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


def _run_version(vectorizer_id: int, version: int, settings: object, loglevel: str) -> None:
    """Child mode: one faust worker for one config version, until SIGTERM."""
    import faust

    from processors.app import WorkerSettings, create_app, load_spec

    assert isinstance(settings, WorkerSettings)
    spec, topic = load_spec(settings.database_url, vectorizer_id, version, settings.topic_prefix)
    app = create_app(spec, topic, settings)
    worker = faust.Worker(app, loglevel=loglevel, redirect_stdouts=False)
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
@click.option("--loglevel", default="info", show_default=True)
@click.option("--version-group", default=None, hidden=True,
              help="Internal: run the faust worker of one version, given as ID:VERSION.")
def worker_command(database_url: str, bootstrap_servers: str, topic_prefix: str,
                   web_port: int | None, without_web: bool, concurrency: int, batch_size: int,
                   batch_within: float, session_timeout: float, poll_interval: float,
                   loglevel: str, version_group: str | None) -> None:
    """Embed every change of every vectorizer's source table into its embedding store."""
    if concurrency < 1:
        raise click.BadParameter("must be >= 1", param_hint="--concurrency")
    if version_group is not None:
        from processors.app import WorkerSettings

        vectorizer_id, version = (int(x) for x in version_group.split(":"))
        settings = WorkerSettings(
            database_url=database_url, bootstrap_servers=bootstrap_servers,
            topic_prefix=topic_prefix, batch_size=batch_size, batch_within=batch_within,
            session_timeout=session_timeout, web_port=None if without_web else web_port,
        )
        _run_version(vectorizer_id, version, settings, loglevel)
        return
    logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(name)s %(message)s")
    # the URL may hold a password: children get it through the environment, not argv (ps)
    os.environ["DATABASE_URL"] = database_url
    os.environ["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap_servers
    child_args = [
        "--topic-prefix", topic_prefix, "--batch-size", str(batch_size),
        "--batch-within", str(batch_within), "--session-timeout", str(session_timeout),
        "--loglevel", loglevel,
    ]
    Supervisor(child_args, database_url, concurrency, poll_interval,
               None if without_web else web_port).run()


#: What ``infra.cli`` registers under ``vectorizer`` (``vectorizer worker``).
cli = worker_command

if __name__ == "__main__":
    worker_command(prog_name="vectorizer worker", auto_envvar_prefix=None)

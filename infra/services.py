"""The pipeline's services as subprocesses: ``vectorizer connector`` and ``vectorizer worker``.

The demo and the benchmarks (``bench/e2e.py``, ``bench/vs_pgai.py``) start the services exactly
as a user would (the ``vectorizer`` CLI, settings through ``DATABASE_URL`` /
``KAFKA_BOOTSTRAP_SERVERS``), so they exercise the code paths of a deployment. Each service runs
in its own process group with its own log file; stopping one stops the whole group (a worker
supervisor's faust children too). Every process started here carries :data:`DEMO_MARK_ENV` in
its environment, so a test (or a person) can find leftovers, and :func:`stop_recorded` stops
only processes that carry the mark of its state directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import click
import psutil

from pgai_orm.runtime.processes import stop_group

#: Where ``record`` keeps the pids of services left running (``vectorizer demo --keep-running``).
DEMO_STATE_FILE = "demo.json"
#: Set on every process started here, so a test (or a person) can find leftovers.
DEMO_MARK_ENV = "VECTORIZER_DEMO_STATE_DIR"
#: Runs the ``vectorizer`` click group with the interpreter of this process, wherever the
#: console script was installed (or not).
_LAUNCH = "import sys; from infra.cli import main; sys.exit(main(prog_name='vectorizer'))"
#: The worker's session timeout against the embedded broker (the demo's, the tests' and the
#: benchmarks' dev settings). Tansu answers a new group's first JoinGroup after half the session
#: timeout rounded up to whole seconds (measured: 0.5-2 s -> 1 s, 2.5-4 s -> 2 s, 6 s -> 3 s), so
#: 2 s is the longest timeout with the shortest join; heartbeats go every tenth of it.
DEV_SESSION_TIMEOUT_S = 2
#: The worker's dev settings: that timeout, a 1 s catalog poll and a 0.2 s batch window.
DEV_WORKER_ARGS = ("--session-timeout", str(DEV_SESSION_TIMEOUT_S), "--poll-interval", "1",
                   "--batch-within", "0.2")
#: Seconds a service gets after SIGTERM to finish its batch and commit.
STOP_TIMEOUT_S = 45.0


@dataclass
class Service:
    """A ``vectorizer <subcommand>`` subprocess with its log file, in its own process group."""

    name: str
    args: list[str]
    log_path: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            # start_new_session: Ctrl-C in the terminal reaches only the demo, which then stops
            # the services in order; the group lets stop() reap a supervisor's children too.
            self.process = subprocess.Popen(
                [sys.executable, "-c", _LAUNCH, *self.args], stdout=log, stderr=subprocess.STDOUT,
                env=self.env, start_new_session=True)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM and wait (workers finish their batch and commit), then kill what is left."""
        if self.process is None:
            return
        stop_group(self.process.pid, timeout, self.process)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "<no log>"


@dataclass
class PipelineServices:
    """The connector and ``workers`` worker supervisors against one database and broker."""

    database_url: str
    bootstrap_servers: str
    log_dir: Path
    workers: int = 1
    mark: str = ""
    extra_worker_args: tuple[str, ...] = DEV_WORKER_ARGS
    services: list[Service] = field(default_factory=list)

    def _env(self) -> dict[str, str]:
        # A private temp dir: faust keeps per-group data under it, and two demos (or a demo and
        # the tests) on one machine must not share or delete each other's.
        tmp = self.log_dir / "tmp"
        (tmp / "vectorizer-faust").mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update({"DATABASE_URL": self.database_url,
                    "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
                    "VECTORIZER_SESSION_TIMEOUT": str(DEV_SESSION_TIMEOUT_S),
                    "TMPDIR": str(tmp),
                    DEMO_MARK_ENV: self.mark or str(self.log_dir)})
        return env

    def start(self) -> None:
        env = self._env()
        self.services.append(Service("connector", ["connector"], self.log_dir / "connector.log", env))
        for i in range(self.workers):
            self.services.append(Service(f"worker-{i + 1}", ["worker", *self.extra_worker_args],
                                         self.log_dir / f"worker-{i + 1}.log", env))
        for service in self.services:
            service.start()

    def check_alive(self) -> None:
        """Raise with the log tail when a service exited (a demo must not hang on a dead one)."""
        for service in self.services:
            if not service.running():
                code = service.process.returncode if service.process else None
                raise click.ClickException(
                    f"{service.name} exited with status {code}; the end of {service.log_path}:\n"
                    f"{service.log_tail()}")

    def stop(self) -> None:
        # Workers first: they commit what they hold; the connector then stops publishing.
        for service in reversed(self.services):
            service.stop()

    def pids(self) -> dict[str, int]:
        return {s.name: s.pid for s in self.services if s.pid is not None}


def record(state_dir: Path, services: PipelineServices, database: str | None = None) -> None:
    """Write the pids of ``services`` to ``state_dir``, for a later :func:`stop_recorded`, and
    the name of the database they serve, for :func:`recorded_database`."""
    data: dict[str, object] = {"services": services.pids()}
    if database is not None:
        data["database"] = database
    (state_dir / DEMO_STATE_FILE).write_text(json.dumps(data) + "\n")


def recorded_database(state_dir: Path) -> str | None:
    """The database a recorded run (the demo) serves on the stack in ``state_dir``, if any: the
    operator commands given only ``--state-dir`` report on it, not on the server's default
    ``postgres`` database."""
    try:
        name = json.loads((state_dir / DEMO_STATE_FILE).read_text()).get("database")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) and name else None


def stop_recorded(state_dir: Path) -> list[str]:
    """Stop services an earlier run left (pids in ``demo.json``) that carry our mark."""
    path = state_dir / DEMO_STATE_FILE
    try:
        recorded = json.loads(path.read_text()).get("services", {})
    except (OSError, ValueError):
        return []
    stopped = []
    for name, pid in recorded.items():
        try:
            proc = psutil.Process(int(pid))
            ours = proc.environ().get(DEMO_MARK_ENV) == str(state_dir)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if ours:
            stop_group(int(pid), STOP_TIMEOUT_S)
            stopped.append(name)
    path.unlink(missing_ok=True)
    return stopped

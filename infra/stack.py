"""The embedded dev stack: one PostgreSQL and one broker, recorded in ``<state_dir>/stack.json``.

The state file lets separate CLI invocations (``up`` now, ``down`` later) find the processes:
``up`` reuses what is recorded when the pids are alive and the ports answer, and starts what is
not. After ``down`` the file keeps the ports, so the next ``up`` comes back on the same
addresses when they are still free (exported ``DATABASE_URL`` values stay valid). A file lock
serializes concurrent ``up``/``down`` calls on the same state dir.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from infra.broker import TansuBroker
from infra.postgres import EmbeddedPostgres

STATE_DIR_ENV = "VECTORIZER_STATE_DIR"
STATE_FILE = "stack.json"


def default_state_dir() -> Path:
    """``$VECTORIZER_STATE_DIR``, else ``.state/`` under the current directory."""
    return Path(os.environ.get(STATE_DIR_ENV) or Path.cwd() / ".state").absolute()


@dataclass(frozen=True)
class StackInfo:
    """Where the running stack can be reached."""

    database_url: str
    kafka_bootstrap_servers: str

    def env(self) -> dict[str, str]:
        """The environment variables the rest of the project (and the tests) read."""
        return {"DATABASE_URL": self.database_url, "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap_servers}


@dataclass(frozen=True)
class ServiceStatus:
    """One line of ``vectorizer dev status``."""

    name: str
    running: bool
    pid: int | None
    address: str | None


class EmbeddedStack:
    """PostgreSQL + Tansu under one state dir; ``postgres`` and ``broker`` are usable alone."""

    def __init__(self, state_dir: Path | None = None, *, pg_port: int | None = None,
                 kafka_port: int | None = None, pg_bin_dir: Path | None = None,
                 broker_binary: Path | None = None) -> None:
        self.state_dir = Path(state_dir).absolute() if state_dir is not None else default_state_dir()
        self._state_path = self.state_dir / STATE_FILE
        recorded = self._read_state()
        self.postgres = EmbeddedPostgres(
            self.state_dir / "postgres", port=pg_port or recorded.get("postgres", {}).get("port"),
            bin_dir=pg_bin_dir, strict_port=pg_port is not None,
        )
        broker_state = recorded.get("broker", {})
        self.broker = TansuBroker(
            self.state_dir / "broker.log", port=kafka_port or broker_state.get("port"),
            binary=broker_binary, pid=broker_state.get("pid"), strict_port=kafka_port is not None,
        )

    # -- state file ------------------------------------------------------------------------

    def _read_state(self) -> dict[str, dict[str, int]]:
        try:
            return dict(json.loads(self._state_path.read_text()))
        except (OSError, ValueError):
            return {}

    def _write_state(self) -> None:
        state = {
            "postgres": {"pid": self.postgres.pid, "port": self.postgres.port},
            "broker": {"pid": self.broker.pid, "port": self.broker.port},
        }
        tmp = self._state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self._state_path)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with (self.state_dir / ".lock").open("w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- lifecycle -------------------------------------------------------------------------

    def up(self) -> StackInfo:
        """Start whatever is not running (idempotent) and return the connection settings."""
        self.postgres.check_binaries()  # fail before starting anything
        self.broker.check_binary()
        with self._locked():
            try:
                self.postgres.start()
                self.broker.start()
            finally:
                self._write_state()
            return self.info()

    def info(self) -> StackInfo:
        """Connection settings of the running stack (raises if a service never got a port)."""
        return StackInfo(self.postgres.url, self.broker.bootstrap_servers)

    def is_running(self) -> bool:
        return self.postgres.is_running() and self.broker.is_running()

    def down(self) -> list[str]:
        """Drop all logical slots, stop both services; return the names of the dropped slots."""
        with self._locked():
            dropped = self.postgres.drop_logical_slots()
            try:
                self.broker.stop()
            finally:
                self.postgres.stop()
                self._write_state()  # pids become null; the ports stay as the next up's preference
            return dropped

    def status(self) -> list[ServiceStatus]:
        """What runs, with pids and addresses (addresses only for running services)."""
        pg_pid, broker_pid = self.postgres.pid, self.broker.pid
        return [
            ServiceStatus("postgres", pg_pid is not None, pg_pid, self.postgres.url if pg_pid else None),
            ServiceStatus("broker", broker_pid is not None, broker_pid,
                          self.broker.bootstrap_servers if broker_pid else None),
        ]

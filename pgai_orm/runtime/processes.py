"""Stopping processes: SIGTERM, wait with a deadline, SIGKILL, wait until gone.

One implementation for every process the project stops: the dev stack's PostgreSQL and
broker, the ``vectorizer`` services the demo and the benchmarks start in their own process
groups, and the faust children of the worker supervisor. The SIGTERM comes first so a worker
can finish its batch and commit; whatever is left at the deadline gets SIGKILL.

A process this interpreter started should be passed as its ``Popen`` object: it is then
signalled through it (never a pid the kernel has given to someone else since it exited) and
waiting on it reaps it, where a zombie would otherwise look alive.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import psutil

from pgai_orm.errors import VectorizerError
from pgai_orm.runtime.waiting import wait_until

__all__ = ["KILL_WAIT_S", "ProcessStopError", "exited", "pid_alive", "stop_group", "stop_process"]

#: How long a process may take to disappear after SIGKILL before it is reported.
KILL_WAIT_S = 5.0


class ProcessStopError(VectorizerError, RuntimeError):
    """A process could not be signalled, or it did not exit even after SIGKILL."""


def pid_alive(pid: int | None, name_hint: str, cmdline_hint: str) -> bool:
    """True when ``pid`` runs and is the process we mean: its executable's name contains
    ``name_hint`` and ``cmdline_hint`` (a data dir, a listener URL) is among its arguments.
    Guards against pid reuse and against other stacks' processes.
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


def exited(pid: int, process: subprocess.Popen[bytes] | None = None) -> bool:
    """Whether ``pid`` is gone: reaped (when ``process`` is given), absent, or a zombie."""
    if process is not None:
        return process.poll() is not None
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def _send(pid: int, sig: signal.Signals, process: subprocess.Popen[bytes] | None) -> bool:
    """Send ``sig``; False when the process is already gone."""
    try:
        if process is not None:
            if process.poll() is not None:
                return False
            process.send_signal(sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        return False
    except PermissionError as exc:
        raise ProcessStopError(f"not allowed to signal pid {pid}: {exc}") from exc
    return True


def stop_process(pid: int, timeout: float = 10.0, *, process: subprocess.Popen[bytes] | None = None,
                 group: bool = False, graceful: bool = True) -> None:
    """Stop ``pid``: SIGTERM, wait up to ``timeout`` seconds, SIGKILL, wait until it is gone.

    ``group``: ``pid`` leads its own process group (started with ``start_new_session=True``).
    SIGTERM still goes to the leader alone (a supervisor stops its children in its own order),
    but SIGKILL goes to the whole group, also when the leader exited in time, so nothing it
    started outlives it. ``graceful=False`` skips SIGTERM: a crash, for fault injection.

    Raises :class:`ProcessStopError` when not allowed to signal ``pid``, or when it is still
    there :data:`KILL_WAIT_S` seconds after SIGKILL.
    """
    def gone() -> bool:
        return exited(pid, process)

    if graceful and _send(pid, signal.SIGTERM, process):
        wait_until(gone, timeout)
    if group:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass  # no group left, or not ours any more: the leader is checked below
    elif not gone():
        _send(pid, signal.SIGKILL, process)
    if not wait_until(gone, KILL_WAIT_S):
        raise ProcessStopError(f"pid {pid} did not exit after SIGTERM and SIGKILL")


def stop_group(pid: int, timeout: float = 10.0, process: subprocess.Popen[bytes] | None = None) -> None:
    """:func:`stop_process` of the process group that ``pid`` leads (``group=True``)."""
    stop_process(pid, timeout, process=process, group=True)

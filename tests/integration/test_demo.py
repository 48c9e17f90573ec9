"""``vectorizer demo`` end to end, as a newcomer runs it: a subprocess, its output, its exit.

The demo starts its own embedded stack, connector and worker, so this test needs nothing from
the session fixtures; it proves the README's first command works on this machine and leaves
nothing running behind it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

from infra.services import DEMO_MARK_ENV

LAUNCH = "import sys; from infra.cli import main; sys.exit(main(prog_name='vectorizer'))"
RESULT_LINE = re.compile(r"^\s+(\d+)\. distance (-?\d+\.\d+)\s+#(\d+)\s+(.+)$")


@pytest.fixture
def state_dir() -> Iterator[Path]:
    # under /tmp: PostgreSQL runs as an unprivileged user that cannot reach pytest's tmp root
    path = Path(tempfile.mkdtemp(prefix="vz-demo-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def processes_marked(mark: str) -> list[psutil.Process]:
    """Every live process that inherited the demo's mark or names its state dir."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if proc.pid == os.getpid() or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            cmdline = " ".join(proc.info["cmdline"] or ())
            if mark in cmdline or proc.environ().get(DEMO_MARK_ENV) == mark:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


Hit = tuple[int, float, int, str]  # rank, distance, post id, title


def searches(output: str) -> list[tuple[str, list[Hit]]]:
    """Every printed search in order: ``(query, [(rank, distance, post id, title), ...])``."""
    result: list[tuple[str, list[Hit]]] = []
    for line in output.splitlines():
        header = re.match(r'^\s+search: "(.+)"$', line)
        if header:
            result.append((header.group(1), []))
            continue
        hit = RESULT_LINE.match(line)
        if hit and result:
            result[-1][1].append((int(hit.group(1)), float(hit.group(2)), int(hit.group(3)),
                                  hit.group(4).strip()))
    return result


@pytest.mark.timeout(300)
def test_demo_runs_end_to_end_and_cleans_up(state_dir: Path) -> None:
    env = dict(os.environ)
    env[DEMO_MARK_ENV] = str(state_dir)  # inherited by everything the demo starts
    for var in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS"):
        env.pop(var, None)  # the demo must not need them
    try:
        done = subprocess.run(
            [sys.executable, "-c", LAUNCH, "demo", "--documents", "40", "--workers", "1",
             "--state-dir", str(state_dir), "--timeout", "120"],
            env=env, capture_output=True, text=True, timeout=240)
    finally:
        leftovers = processes_marked(str(state_dir))
        for proc in leftovers:  # never leave a stack behind, even when the assertions fail
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
    output = done.stdout
    assert done.returncode == 0, f"stdout:\n{output}\nstderr:\n{done.stderr[-4000:]}"
    assert not leftovers, f"processes left running: {[p.info for p in leftovers]}"

    # the narration a newcomer follows
    assert "Loading 40 documents" in output
    assert "standard library" in output
    assert re.search(r"40 posts are searchable as \d+ chunks", output), output

    # ranked results with distances and titles, nearest first
    found = searches(output)
    assert len(found) == 7, output  # four queries, then the tea query before/after update/delete
    for query, hits in found:
        assert hits, f"no results for {query!r}"
        assert [h[0] for h in hits] == list(range(1, len(hits) + 1))
        distances = [h[1] for h in hits]
        assert distances == sorted(distances), f"{query!r} is not ranked by distance"
        assert all(h[3] for h in hits)
    assert len(dict(found)["reading and writing JSON data"]) == 5

    # the update and the delete reached the store, with measured delays
    update = re.search(r"UPDATE post #(\d+) .*\n.*the store had the new chunks (\d+) ms", output)
    assert update, output
    tea = [hits for query, hits in found if query.startswith("brewing green tea")]
    assert len(tea) == 3
    assert tea[1][0][2] == int(update.group(1)), "the updated post should now match best"
    delete = re.search(r"DELETE post #(\d+)\.\n.*its chunks left the store (\d+) ms", output)
    assert delete, output
    assert all(hit[2] != int(delete.group(1)) for hit in tea[2])
    assert "all stopped" in output


def run_cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", LAUNCH, *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.timeout(300)
def test_kept_demo_serves_status_errors_and_replay(state_dir: Path) -> None:
    """``--keep-running``, then the operator commands against it, then ``--stop``."""
    env = dict(os.environ)
    env[DEMO_MARK_ENV] = str(state_dir)
    for var in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS"):
        env.pop(var, None)
    try:
        demo = run_cli("demo", "--documents", "20", "--workers", "1", "--keep-running",
                       "--state-dir", str(state_dir), "--timeout", "120", env=env, timeout=240)
        assert demo.returncode == 0, demo.stdout + demo.stderr[-4000:]
        exports = dict(re.findall(r"export (\w+)=(\S+)", demo.stdout))
        assert set(exports) == {"DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS"}
        assert processes_marked(str(state_dir)), "--keep-running left nothing running"
        # the closing hint works as printed, without the exports: the demo's own database
        hint = f"vectorizer status --state-dir {state_dir.absolute()}"
        assert hint in demo.stdout
        by_state_dir = run_cli("status", "--json", "--state-dir", str(state_dir), env=env)
        assert by_state_dir.returncode == 0, by_state_dir.stderr
        assert json.loads(by_state_dir.stdout)["database"] == "vectorizer_demo"
        env.update(exports)

        status = run_cli("status", "--json", env=env)
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert report["kafka"] == "ok"
        assert [s["active"] for s in report["slots"]] == [True]
        (vz,) = report["vectorizers"]
        assert vz["source_rows"] == 19  # 20 loaded, one deleted by the demo
        assert vz["connector"]["state"] == "streaming" and vz["connector"]["slot"]
        (version,) = vz["versions"]
        assert version["status"] == "active" and version["rows_with_chunks"] == 19
        assert version["consumer_lag"] == 0 and version["chunks"] > 0
        assert version["rows_per_s_last_minute"] > 0  # the demo's rows were applied just now

        errors = run_cli("errors", vz["name"], env=env)
        assert errors.returncode == 0 and "no errors recorded" in errors.stdout
        missing = run_cli("errors", "no_such_vectorizer", env=env)
        assert missing.returncode != 0 and "does not exist" in missing.stderr

        replay = run_cli("replay", vz["name"], "--wait", "--timeout", "90", env=env)
        assert replay.returncode == 0, replay.stdout + replay.stderr
        assert "version 2 serves queries now" in replay.stdout
        after = json.loads(run_cli("status", "--json", env=env).stdout)["vectorizers"][0]
        assert after["serving_version"] == 2
        assert [(v["version"], v["status"], v["chunks"]) for v in after["versions"]] == [
            (2, "active", version["chunks"])]

        stop = run_cli("demo", "--stop", "--state-dir", str(state_dir), env=env)
        assert stop.returncode == 0, stop.stderr
    finally:
        leftovers = processes_marked(str(state_dir))
        for proc in leftovers:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
    assert not leftovers, f"processes left running after --stop: {[p.info for p in leftovers]}"


def test_status_without_services(fresh_database_url: str) -> None:
    """Before any connector or worker ran: the catalog's view, no slot, lag said to be missing."""
    from infra.demo import apply_migration
    from infra.ops.render import render_report
    from infra.ops.report import add_consumer_lags, read_report
    from infra.ports import free_port

    empty = read_report(fresh_database_url)
    assert empty.vectorizers == [] and empty.slots == []
    assert "no vectorizers" in render_report(empty)

    apply_migration(fresh_database_url)
    with psycopg.connect(fresh_database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO blog_posts (id, title, content) VALUES (1, 'a', 'b'), (2, 'c', 'd')")
    report = read_report(fresh_database_url)
    (vz,) = report.vectorizers
    assert (vz.source, vz.source_rows, vz.errors, vz.serving_version) == ("public.blog_posts", 2, 0, 1)
    assert vz.connector.state == "not_seen"
    (version,) = vz.versions
    assert (version.status, version.rows_applied, version.chunks) == ("active", 0, 0)
    assert version.last_applied_lsn is None and version.rows_per_s_last_minute == 0

    add_consumer_lags(report, f"127.0.0.1:{free_port()}", timeout=5.0)  # nothing listens there
    assert report.kafka is not None and report.kafka.startswith("consumer lag unavailable")
    assert "consumer lag unavailable" in render_report(report)


def test_status_reads_the_database_from_a_config_file(fresh_database_url: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """``vectorizer --config FILE status --json``: the URL comes from the file alone; an
    environment variable set for one run wins over the file."""
    from click.testing import CliRunner

    from infra.cli import main
    from infra.demo import apply_migration

    apply_migration(fresh_database_url)
    config = tmp_path / "vectorizer.toml"
    config.write_text(f"database-url = {json.dumps(fresh_database_url)}\n")
    for name in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "VECTORIZER_STATE_DIR"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(main, ["--config", str(config), "status", "--json"])
    assert result.exit_code == 0, result.output
    (vz,) = json.loads(result.output)["vectorizers"]
    assert vz["source"] == "public.blog_posts"

    unreachable = "postgresql://nobody:s3cret@127.0.0.1:1/none"
    result = CliRunner().invoke(main, ["--config", str(config), "status", "--json"],
                                env={"DATABASE_URL": unreachable})
    # the environment's URL was used, not the file's; the error is one line, password hidden
    assert result.exit_code == 1
    assert "Error: cannot reach the database 127.0.0.1:1/none" in result.output
    assert "s3cret" not in result.output and "Traceback" not in result.output

"""Lifecycle events of a real database, in rounds under a mixed load, then an audit of the store.

    .venv/bin/python bench/lifecycle.py [--rounds 3] [--seed 1] [--writes 30]

Each round injects, at seeded random points of a burst of inserts/updates/deletes on one source
table with its connector and worker running as processes:

* the replication slot dropped while the connector is stopped, and while it was killed;
* a column added, a column the vectorizer does not read dropped, and one's type changed;
* the vectorizer dropped and created again (two migrations, with deletes in between), and both
  operations in one transaction;

then waits for the store to equal the source and audits every row and chunk. Prints the events
injected, rows checked, lost, duplicated and stale (all three must be 0), and writes
``bench/results/lifecycle.json``. Baseline: the same load with no event at all (the audit's
own floor: it must be clean too). ``infra/faults.py`` holds the load, the processes and the
audit, shared with the reliability tests.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from psycopg import sql

from bench.common import print_table, write_json
from infra.broker import TansuBroker
from infra.faults import (
    LOAD_CONFIG,
    Load,
    Pipeline,
    Tally,
    inject,
    make_pipeline,
    recreate_vectorizer,
)
from infra.pgadmin import create_database
from infra.postgres import EmbeddedPostgres
from pgai_orm.names import default_slot_name
from pgai_orm.runtime.waiting import wait_until


def drop_slot(pipeline: Pipeline) -> None:
    """Drop the connector's slot once no walsender holds it."""
    database = pipeline.sql("SELECT current_database()")[0][0]
    slot = default_slot_name(database)

    def dropped() -> bool:
        rows = pipeline.sql("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,))
        if not rows:
            return True
        if rows[0][0]:
            return False
        pipeline.sql("SELECT pg_drop_replication_slot(%s)", (slot,))
        return True

    if not wait_until(dropped, timeout=30, interval=0.1):
        raise TimeoutError(f"slot {slot} stays active")


def events(pipeline: Pipeline, load: Load, round_: int) -> list[tuple[str, Callable[[], None]]]:
    table = sql.Identifier(pipeline.table)
    column = sql.Identifier(f"note_{round_}")

    def slot_dropped_while_stopped() -> None:
        pipeline.stop_connector()
        load.run(5)
        load.delete_some(3)
        drop_slot(pipeline)
        pipeline.start_connector()

    def slot_dropped_after_kill() -> None:
        pipeline.kill_connector(restart=False)
        drop_slot(pipeline)
        load.delete_some(2)
        pipeline.start_connector()

    def add_column() -> None:
        pipeline.sql(sql.SQL("ALTER TABLE {} ADD COLUMN {} text DEFAULT 'n'").format(table, column))

    def drop_unread_column() -> None:
        pipeline.sql(sql.SQL("ALTER TABLE {} DROP COLUMN IF EXISTS {}").format(table, column))

    def type_change_of_unread_column() -> None:
        kind = "bigint" if round_ % 2 == 0 else "int"
        pipeline.sql(sql.SQL("ALTER TABLE {} ALTER COLUMN views TYPE " + kind).format(table))

    def recreated_in_two_migrations() -> None:
        recreate_vectorizer(pipeline, between=lambda: load.delete_some(3))

    def recreated_in_one_transaction() -> None:
        recreate_vectorizer(pipeline, between=None)
        load.delete_some(2)

    return [("slot dropped, connector stopped", slot_dropped_while_stopped),
            ("slot dropped, connector killed", slot_dropped_after_kill),
            ("column added", add_column),
            ("unread column dropped", drop_unread_column),
            ("type of an unread column changed", type_change_of_unread_column),
            ("vectorizer re-created (two migrations)", recreated_in_two_migrations),
            ("vectorizer re-created (one transaction)", recreated_in_one_transaction)]


def run(url: str, servers: str, root: Path, rounds: int, seed: int, writes: int,
        with_events: bool) -> dict[str, Any]:
    pipeline = make_pipeline(url, servers, root, LOAD_CONFIG)
    load = Load(pipeline, random.Random(seed))
    injected: list[str] = []
    tally = Tally()
    started = time.monotonic()
    try:
        load.run(writes)
        pipeline.start()
        pipeline.wait_clean("the snapshot", timeout=180)
        for round_ in range(rounds):
            todo = events(pipeline, load, round_) if with_events else []
            load.rng.shuffle(todo)
            if todo:
                inject(load, todo, writes, injected)
            else:
                load.run(writes * 6)
            audit = pipeline.settle(f"round {round_ + 1} to recover")
            tally.add(audit)
            print(f"round {round_ + 1}: rows {audit.rows_checked}, lost {audit.lost},"
                  f" duplicated {audit.duplicated}, stale {audit.stale}", flush=True)
    finally:
        pipeline.stop()
    return {"events injected": len(injected), "kinds": sorted(set(injected)),
            "writes": load.writes, "seconds": round(time.monotonic() - started, 1), **tally.as_dict()}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--writes", type=int, default=30, help="writes between two events")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="vz-lifecycle-"))
    postgres = EmbeddedPostgres(root / "postgres")
    broker = TansuBroker(root / "broker.log")
    postgres.start()
    broker.start()
    try:
        results = {}
        for name, with_events in (("baseline (no events)", False), ("lifecycle events", True)):
            url = create_database(postgres.url, f"lifecycle_{int(with_events)}")
            work = root / name.split()[0]
            work.mkdir()
            results[name] = run(url, broker.bootstrap_servers, work, args.rounds, args.seed,
                                args.writes, with_events)
    finally:
        broker.stop()
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)
    headers = ["run", "events injected", "writes", "rows checked", "lost", "duplicated", "stale",
               "seconds"]
    print_table(headers, [[name, *(r[h] for h in headers[1:])] for name, r in results.items()],
                title="store vs source after lifecycle events")
    print("events:", ", ".join(results["lifecycle events"]["kinds"]))
    write_json("lifecycle", {"args": vars(args), "results": results})
    bad = sum(r[k] for r in results.values() for k in ("lost", "duplicated", "stale"))
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

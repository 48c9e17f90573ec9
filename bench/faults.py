"""Fault injection at length: a seeded load with many kill -9s, Postgres and broker restarts and
provider outages, then an audit of the store against the source table.

    .venv/bin/python bench/faults.py [--rounds 4] [--seed 1] [--writes 40]

Each round injects, at seeded random points of a burst of inserts/updates/deletes: kill -9 of the
connector, kill -9 of the worker (the supervisor and its faust children), an immediate Postgres
restart, and (every other round) a broker restart that loses every topic; then the store is
audited. Prints faults injected, rows checked, lost, duplicated, stale. The same load and
faults (``infra/faults.py``) run, shorter, in tests/reliability/test_faults.py.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from infra.broker import TansuBroker
from infra.faults import LOAD_CONFIG, Load, Tally, inject, make_pipeline
from infra.pgadmin import create_database
from infra.postgres import EmbeddedPostgres


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--writes", type=int, default=40, help="writes between two faults")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="vz-faults-"))
    postgres = EmbeddedPostgres(root / "postgres")
    broker = TansuBroker(root / "broker.log")
    postgres.start()
    broker.start()
    injected: list[str] = []
    tally = Tally()
    pipeline = None
    try:
        url = create_database(postgres.url, "faults")
        pipeline = make_pipeline(url, broker.bootstrap_servers, root, LOAD_CONFIG)
        load = Load(pipeline, random.Random(args.seed))
        load.run(args.writes)
        pipeline.start()
        pipeline.wait_clean("the snapshot", timeout=180)
        for round_ in range(args.rounds):
            faults = [("kill -9 connector", pipeline.kill_connector),
                      ("kill -9 worker", pipeline.kill_worker),
                      ("postgres immediate restart", lambda: postgres.restart(mode="immediate"))]
            if round_ % 2 == 1:
                def broker_restart() -> None:
                    broker.restart()
                    load.delete_some(3)
                faults.append(("broker restart", broker_restart))
            load.rng.shuffle(faults)
            inject(load, faults, args.writes, injected)
            audit = pipeline.settle(f"round {round_ + 1} to recover")
            tally.add(audit)
            print(f"round {round_ + 1}: {', '.join(n for n, _ in faults)}: rows {audit.rows_checked},"
                  f" lost {audit.lost}, duplicated {audit.duplicated}, stale {audit.stale}", flush=True)
    finally:
        if pipeline is not None:
            pipeline.stop()
        broker.stop()
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(f"faults injected: {len(injected)} ({', '.join(sorted(set(injected)))})")
    for name, value in tally.as_dict().items():
        print(f"{name}: {value}")
    return 0 if tally.clean else 1


if __name__ == "__main__":
    sys.exit(main())

"""A seeded load of inserts/updates/deletes with faults injected at random moments.

Shared by test_faults.py (a few faults) and bench/faults.py (more rounds, prints the tally).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psycopg import sql

from tests.reliability.harness import TEXT, Pipeline, create_vectorizer, local_config, run_sql

WORDS = ("alpha", "beta", "gamma", "delta", "replication", "kafka", "vector", "chunk", "store")


def make_pipeline(url: str, servers: str, log_dir: Path, config: dict[str, Any] | None = None,
                  env: dict[str, str] | None = None) -> Pipeline:
    table = f"docs_{uuid.uuid4().hex[:8]}"
    run_sql(url, sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, title text, content text, views int"
                         " DEFAULT 0)").format(sql.Identifier(table)))
    config = config or local_config()
    vectorizer_id = create_vectorizer(url, "public", table, config, ["title"])
    return Pipeline(url, servers, "public", table, vectorizer_id, config,
                    f"r{uuid.uuid4().hex[:6]}", log_dir, env=env or {})


def text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) + ". " + \
        TEXT * rng.randint(0, 2)


@dataclass
class Load:
    """Seeded mixed writes; ``ids`` is the set of rows that exist."""

    pipeline: Pipeline
    rng: random.Random
    next_id: int = 1
    ids: set[int] = field(default_factory=set)
    writes: int = 0

    def one(self) -> None:
        p, rng = self.pipeline, self.rng
        t = sql.Identifier(p.table)
        roll = rng.random()
        if roll < 0.5 or len(self.ids) < 5:
            p.sql(sql.SQL("INSERT INTO {} (id, title, content) VALUES (%s, %s, %s)").format(t),
                  (self.next_id, f"doc {self.next_id}", text(rng)))
            self.ids.add(self.next_id)
            self.next_id += 1
        elif roll < 0.8:
            target = rng.choice(sorted(self.ids))
            if rng.random() < 0.7:
                p.sql(sql.SQL("UPDATE {} SET content = %s WHERE id = %s").format(t), (text(rng), target))
            else:
                p.sql(sql.SQL("UPDATE {} SET title = %s, views = views + 1 WHERE id = %s").format(t),
                      (f"title {rng.random():.4f}", target))
        else:
            target = rng.choice(sorted(self.ids))
            p.sql(sql.SQL("DELETE FROM {} WHERE id = %s").format(t), (target,))
            self.ids.discard(target)
        self.writes += 1

    def delete_some(self, n: int) -> None:
        """Delete ``n`` existing rows (right after a broker restart: their events are lost)."""
        for target in self.rng.sample(sorted(self.ids), min(n, len(self.ids))):
            self.pipeline.sql(sql.SQL("DELETE FROM {} WHERE id = %s")
                              .format(sql.Identifier(self.pipeline.table)), (target,))
            self.ids.discard(target)
            self.writes += 1

    def run(self, n: int) -> None:
        for _ in range(n):
            self.one()


def inject(load: Load, faults: list[tuple[str, Callable[[], None]]], writes_between: int,
           record: list[str]) -> None:
    """Between seeded bursts of writes, inject each fault at a random point of the burst."""
    for name, fault in faults:
        before = load.rng.randint(1, writes_between)
        load.run(before)
        fault()
        record.append(name)
        load.run(writes_between - before)

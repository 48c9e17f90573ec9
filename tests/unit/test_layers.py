"""The import direction of docs/architecture.md ("Module map"), checked on every import statement.

``pgai_orm`` is the ground: it imports none of the other packages. ``connector`` and
``processors`` stand on it and never import each other or ``infra``. ``infra`` may import all.
Benchmarks import nothing from ``tests``. Imports inside functions count too: a deferred import
is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: package -> top-level packages of this project it must never import
FORBIDDEN = {
    "pgai_orm": {"connector", "processors", "infra", "tests", "bench"},
    "connector": {"processors", "infra", "tests", "bench"},
    "processors": {"connector", "infra", "tests", "bench"},
    "infra": {"tests", "bench"},
    "bench": {"tests"},
}


def imported_packages(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every absolute import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name.split(".")[0]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_one_way(package: str) -> None:
    violations = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in sorted((ROOT / package).rglob("*.py"))
        # not the project's code: a virtual environment beside it (bench/.venv-pgai)
        if not any(part.startswith(".") for part in path.relative_to(ROOT).parts)
        for line, name in imported_packages(path)
        if name in FORBIDDEN[package]
    ]
    assert violations == []


def test_the_checker_sees_deferred_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from processors.app import x\n    import infra.cli\n")
    assert imported_packages(module) == [(2, "processors"), (3, "infra")]

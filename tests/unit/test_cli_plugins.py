"""The ``vectorizer`` command imports a plugin only when its command is used or listed."""

from __future__ import annotations

import subprocess
import sys

from infra.cli import PLUGIN_COMMANDS, main

PROBE = """
import sys
from infra.cli import main
try:
    main([{args}], prog_name="vectorizer", standalone_mode=False)
except SystemExit:
    pass
print("LOADED", sorted(m for m in ("connector.cli", "processors.cli", "infra.demo",
                                   "infra.ops.commands", "faust") if m in sys.modules))
"""


def _loaded(*args: str) -> str:
    code = PROBE.format(args=", ".join(repr(a) for a in args))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=60).stdout
    return next(line for line in out.splitlines() if line.startswith("LOADED"))


def test_a_subcommand_loads_only_its_own_module() -> None:
    assert _loaded("worker", "--help") == "LOADED ['processors.cli']"
    assert _loaded("connector", "--help") == "LOADED ['connector.cli']"


def test_the_group_help_lists_every_plugin() -> None:
    assert _loaded("--help") == ("LOADED ['connector.cli', 'infra.demo', 'infra.ops.commands',"
                                 " 'processors.cli']")
    assert set(PLUGIN_COMMANDS) <= set(main.load_all())


def test_every_plugin_is_registered_under_its_own_name() -> None:
    commands = main.load_all()
    for name in PLUGIN_COMMANDS:
        assert commands[name].name == name

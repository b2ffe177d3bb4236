"""The command line loads lazily: ``--help`` and ``list`` import neither torchvision nor dynamo (nor torch),
and each command module is imported only when that command runs. Properties, not timings (the
timings are in docs/performance.md)."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import click
import pytest

from ticketforge.cli.main import COMMANDS, all_commands
from ticketforge.errors import PluginError
from ticketforge.records import ComponentRecord, LazyFactory
from ticketforge.registry import build_registry

HEAVY = ("torch", "torchvision", "torch._dynamo")

# ``python -m ticketforge ARGS`` in this process, then which heavy modules it imported (on stderr: stdout
# is the command's own).
WRAPPER = """
import json, runpy, sys
sys.argv = ["ticketforge", *json.loads(sys.argv[1])]
try:
    runpy.run_module("ticketforge", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print("IMPORTED=" + json.dumps([m for m in {heavy} if m in sys.modules]), "CODE=" + str(code), file=sys.stderr)
""".format(heavy=HEAVY)


def imported_by(*args: str) -> tuple[list[str], str]:
    """The heavy modules ``ticketforge ARGS`` imports, and what it printed."""
    done = subprocess.run([sys.executable, "-c", WRAPPER, json.dumps(list(args))], capture_output=True, text=True,
                          timeout=300)
    line = next(ln for ln in done.stderr.splitlines() if ln.startswith("IMPORTED="))
    imported, code = line.removeprefix("IMPORTED=").split(" CODE=")
    assert code == "0", done.stderr
    return json.loads(imported), done.stdout


@pytest.mark.parametrize("args", [["--help"], ["-h"]])
def test_help_imports_no_torch(args):
    imported, out = imported_by(*args)
    assert imported == []
    assert all(f"  {name} " in out for name in COMMANDS)  # every command listed, none imported


@pytest.mark.parametrize("args", [["list"], ["list", "--json"], ["list", "models"]])
def test_list_imports_neither_torchvision_nor_dynamo(args):
    """Registration imports no component: every installed plugin's records, and no torch."""
    imported, out = imported_by(*args)
    assert imported == []
    assert "ddpm-unet" in out


def test_the_command_table_says_what_each_command_says():
    """``--help`` lists the commands from COMMANDS without importing them: the same lines as their own help."""
    commands = all_commands()
    assert set(commands) == set(COMMANDS)
    for name, command in commands.items():
        module, summary = COMMANDS[name]
        assert command.callback.__module__ == f"ticketforge.cli.{module}"
        assert inspect.cleandoc(command.help).split("\n\n")[0] == summary, f"COMMANDS[{name!r}] is out of date"
        for limit in (20, 45, 80, 200):
            assert click.Command(name, help=summary).get_short_help_str(limit) == command.get_short_help_str(limit)


def test_an_unknown_command_is_still_refused():
    from click.testing import CliRunner

    from ticketforge.cli.main import cli

    result = CliRunner().invoke(cli, ["nope"])
    assert result.exit_code == 2 and "No such command 'nope'" in result.output


def test_a_lazy_factory_is_its_target_when_called():
    factory = LazyFactory("ticketforge.builtins.schedules:UniformSchedule")
    assert list(inspect.signature(factory).parameters) == ["p", "within"]  # the contract mixins check the keywords
    assert type(factory(0.5)).__name__ == "UniformSchedule"
    assert LazyFactory("ticketforge_ddpm.spec:DDPMSpec.from_preset").resolve().__name__ == "from_preset"
    with pytest.raises(ValueError, match="package.module:attribute"):
        LazyFactory("ticketforge.builtins.schedules.UniformSchedule")


def test_a_lazy_factory_that_cannot_be_imported_is_one_error_naming_its_plugin():
    from ticketforge.hookspecs import hookimpl

    class Plugin:
        @hookimpl
        def ticketforge_scorers(self):
            return [ComponentRecord("gone", LazyFactory("ticketforge_no_such_module:Scorer"), "cannot be imported")]

    registry = build_registry(entry_points=False, plugins=[Plugin()])
    assert "gone" in registry.records("scorers")  # listed: its module is imported only when it is built
    with pytest.raises(PluginError, match=r"scorer 'gone' \(plugin Plugin\) cannot be loaded: "
                                          r"ModuleNotFoundError: No module named 'ticketforge_no_such_module'"):
        registry.create("scorers", "gone")


"""The random-prune baseline finds its ticket, and says how to make it when it is not there."""

from __future__ import annotations

import dataclasses
import re
import shlex

import pytest
from click.testing import CliRunner

import ticketforge.registry as registry_module
from ticketforge import Engine
from ticketforge.cli.main import cli
from ticketforge.errors import ConfigError, UsageError
from ticketforge.store import RunStore

RUN = ["run", "--model", "toy", "--schedule", "incremental", "--rounds", "3", "--steps-per-round", "20",
       "--device", "cpu", "--quiet", "--no-artifacts"]


def _counts(store: RunStore, k: int) -> dict[str, int]:
    return {n: int(m.sum()) for n, m in store.read_tensors(f"rounds/{k:04d}/masks.safetensors").items()}


def test_missing_ticket_stops_with_the_command_that_makes_it(registry, tmp_path, monkeypatch):
    monkeypatch.setattr(registry_module, "_registry", registry)
    monkeypatch.chdir(tmp_path)  # default run folders: runs/<model>-<schedule>[-<baseline>]-<hash>
    runner = CliRunner()
    result = runner.invoke(cli, [*RUN, "--baseline", "random-prune"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "random-prune round 1" in lines[0] and "does not exist yet" in lines[0], lines
    command = re.search(r"`([^`]+)`", lines[0]).group(1)
    assert command.startswith("ticketforge run ") and "--baseline" not in command
    (control_dir,) = (tmp_path / "runs").iterdir()
    assert RunStore(control_dir).finished_rounds() == [0]  # round 0 is kept: nothing lost
    made = runner.invoke(cli, [*shlex.split(command)[1:], "--quiet", "--no-artifacts"])  # the advice, as given
    assert made.exit_code == 0, made.output
    result = runner.invoke(cli, [*RUN, "--baseline", "random-prune"])  # the same command again
    assert result.exit_code == 0, result.output
    ticket_dir = next(d for d in (tmp_path / "runs").iterdir() if d != control_dir)
    for k in (1, 2, 3):
        assert _counts(RunStore(control_dir), k) == _counts(RunStore(ticket_dir), k)


def test_an_unfinished_ticket_round_and_a_foreign_ticket_are_refused(toy_config, registry, tmp_path):
    ticket = dataclasses.replace(toy_config, rounds=1, out=str(tmp_path / "ticket"))
    Engine(ticket, registry=registry).run()
    control = dataclasses.replace(toy_config, rounds=3, baseline="random-prune", out=str(tmp_path / "control"),
                                  ticket_run=ticket.out)
    with pytest.raises(UsageError, match=r"random-prune round 2 .* has finished rounds \[0, 1\]") as info:
        Engine(control, registry=registry).run()
    assert f"--out {ticket.out}" in str(info.value) or "the same command" in str(info.value)
    assert RunStore(control.out).finished_rounds() == [0, 1]
    other = dataclasses.replace(toy_config, rounds=1, p=30.0, out=str(tmp_path / "other"))
    Engine(other, registry=registry).run()
    with pytest.raises(ConfigError, match=r"has another config .*p: 30.0 -> 20.0"):
        Engine(dataclasses.replace(control, ticket_run=other.out, out=str(tmp_path / "c2")), registry=registry).run()

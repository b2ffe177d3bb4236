"""Launching several processes as the docs say: torchrun's options and the program's arguments kept apart,
and the long and short percent names.

The launches themselves (the docs' torchrun line and ``ticketforge run --nproc``, two gloo processes of
a ``ticketforge`` command of their own, hence of the installed DDPM plugin) are in
plugins/ticketforge-ddpm/tests/test_launch.py.
"""

from __future__ import annotations

import pytest
from doc_commands import parse_torchrun

from ticketforge.engine.launcher import torchrun_args

LAUNCHER = ["--standalone", "--nproc-per-node=2", "-m", "ticketforge"]


def test_torchrun_gets_its_own_options_only_and_the_program_its_arguments_unparsed():
    program = ["run", "--p", "40", "--nproc", "2", "--standalone", "--", "x"]
    args = torchrun_args(LAUNCHER, program)
    assert args.training_script_args == program and args.training_script_args is not program
    assert (args.module, args.training_script, args.nproc_per_node, args.standalone) == (True, "ticketforge", "2", True)
    # what it avoids: torchrun's parser given the whole line stops at an abbreviation of its own options
    with pytest.raises(AssertionError, match="ambiguous option: --(p|nproc) "):
        parse_torchrun([*LAUNCHER, *program])
    with pytest.raises(ValueError, match="end with the program"):
        torchrun_args([*LAUNCHER, "run"], program)


def test_long_and_short_percent_names_set_the_same_config(registry, monkeypatch, tmp_path):
    import json

    from click.testing import CliRunner

    import ticketforge.registry as registry_module
    from ticketforge.cli.main import cli

    monkeypatch.setattr(registry_module, "_registry", registry)
    runner, docs = CliRunner(), []
    for i, percents in enumerate((["--prune-percent", "30", "--prune-increment", "2"], ["--p", "30", "--q", "2"])):
        out = tmp_path / f"run{i}"
        result = runner.invoke(cli, ["run", "--model", "toy", "--schedule", "incremental", "--rounds", "1",
                                     "--steps-per-round", "4", "--device", "cpu", "--out", str(out), "--quiet",
                                     "--no-artifacts", *percents])
        assert result.exit_code == 0, result.output
        docs.append(json.loads(runner.invoke(cli, ["inspect", str(out), "--json"]).output))
    for doc in docs:
        assert (doc["config"]["p"], doc["config"]["q"]) == (30.0, 2.0)
        groups = doc["rounds"][1]["groups"]
        assert len(groups) >= 3  # so that q shows
        for j, group in enumerate(groups):  # within one weight of p + j*q percent
            assert group["sparsity"] == pytest.approx(0.30 + 0.02 * j, abs=1 / group["params"]), group
    assert docs[0]["rounds"][1]["mask_sha256"] == docs[1]["rounds"][1]["mask_sha256"]

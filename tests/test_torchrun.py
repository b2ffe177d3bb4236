"""Launching several processes as the docs say: the docs' torchrun line, and ``ticketforge run --nproc``.

Both run the DDPM plugin's tiny preset for two short rounds as two gloo processes on the CPU, with
the percentages written as documented, and check the sparsity and ``world_size`` the run recorded.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from doc_commands import DocCommand, doc_commands, dry_parse, parse_torchrun
from ticketforge.engine.launcher import torchrun_args
from ticketforge.store import RunStore

ROUNDS = 2
# a quick run: appended after a doc line's own flags (click keeps the last value of an option)
QUICK = ["--preset", "tiny", "--dataset", "mnist-sample", "--rounds", str(ROUNDS), "--steps-per-round", "2",
         "--batch-size", "4", "--device", "cpu", "--precision", "fp32", "--no-compile", "--no-artifacts",
         "--log-every", "1", "--quiet"]
LAUNCHER = ["--standalone", "--nproc-per-node=2", "-m", "ticketforge"]


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    env.pop("WORLD_SIZE", None)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)


def _assert_ticket(out: Path, schedule: str, p: float, q: float, world: int) -> None:
    """The run trained on ``world`` processes and pruned group j by p (+ j*q) percent per round."""
    store = RunStore(out)
    assert store.read_config()["world_size"] == world
    assert store.finished_rounds() == list(range(ROUNDS + 1))
    assert all(store.round_record(k)["metrics"]["world_size"] == world for k in range(ROUNDS + 1))
    final = store.round_record(ROUNDS)
    expected_total = 0.0
    for j, group in enumerate(final["groups"]):
        ratio = (p + (j * q if schedule == "incremental" else 0.0)) / 100
        expected = 1 - (1 - ratio) ** ROUNDS
        assert group["sparsity"] == pytest.approx(expected, abs=0.01), (j, group["name"])
        expected_total += expected * group["params"]
    assert final["sparsity"] == pytest.approx(expected_total / sum(g["params"] for g in final["groups"]), abs=0.005)


def _docs_paper_line() -> DocCommand:
    lines = [c for c in doc_commands() if c.launcher == "torchrun" and c.complete and "--prune-percent" in c.argv()]
    assert lines, "the docs show no torchrun line with the paper's percentages"
    return lines[0]


def test_the_docs_torchrun_line_trains_on_two_processes_with_its_percentages(tmp_path):
    line = _docs_paper_line()
    ns, ctx = dry_parse(line)
    assert ns is not None and ctx is not None and ctx.params["p"] is not None
    out = tmp_path / "run"
    result = _run([sys.executable, "-m", "torch.distributed.run", *line.argv(), *QUICK, "--out", str(out)])
    assert result.returncode == 0, f"{line.where}: {line.text}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    _assert_ticket(out, ctx.params["schedule"] or "incremental", ctx.params["p"], ctx.params["q"],
                   world=int(ns.nproc_per_node))


def test_nproc_passes_every_argument_through_as_given(tmp_path):
    # the command: --p would stop torchrun if it ever parsed it; --nproc sits among the flags
    out = tmp_path / "run"
    result = _run([sys.executable, "-m", "ticketforge", "run", "--model", "ddpm-unet", "--schedule", "incremental",
                   "--p", "40", "--nproc", "2", "--q", "2", *QUICK, "--out", str(out)])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    _assert_ticket(out, "incremental", 40.0, 2.0, world=2)


def test_nproc_bad_input_exits_2_with_the_processes_error_and_no_traceback(tmp_path):
    result = _run([sys.executable, "-m", "ticketforge", "run", "--model", "ddpm-unet", "--schedule", "incremental",
                   "--p", "90", "--q", "20", "--nproc", "2", *QUICK, "--out", str(tmp_path / "run")])
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    assert "would prune 110%" in result.stderr and "Error: process" in result.stderr
    assert "Traceback" not in result.stderr


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

"""Launching several processes as the docs say: the docs' torchrun line, and ``ticketforge run --nproc``.

Both run this plugin's tiny preset for two short rounds as two gloo processes on the CPU (each a
``python -m ticketforge`` of its own, so the installed plugins), with the percentages written as
documented, and check the sparsity and ``world_size`` the run recorded.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ticketforge.store import RunStore

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))  # the docs' command lines: doc_commands.py
from doc_commands import DocCommand, doc_commands, dry_parse  # noqa: E402

ROUNDS = 2
# a quick run: appended after a doc line's own flags (click keeps the last value of an option)
QUICK = ["--preset", "tiny", "--dataset", "mnist-sample", "--rounds", str(ROUNDS), "--steps-per-round", "2",
         "--batch-size", "4", "--device", "cpu", "--precision", "fp32", "--no-compile", "--no-artifacts",
         "--log-every", "1", "--quiet"]


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

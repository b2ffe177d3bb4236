"""The experiment scripts under experiments/ (the repository's) run on a tiny DDPM run and compute what they say."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from ticketforge import Engine, RunConfig
from ticketforge.testing import load_script

EXPERIMENTS = Path(__file__).resolve().parents[3] / "experiments"


def _load(name: str):
    return load_script(EXPERIMENTS / f"{name}.py")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mixed") / "run"
    Engine(RunConfig(preset="tiny", schedule="uniform", p=50.0, rounds=1, steps_per_round=4, device="cpu",
                     out=str(out), artifacts=False, log_every=2)).run()
    return out


def test_mixed_sampling_scores_both_orders_and_counts_macs(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setenv("TICKETFORGE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "mixed.json"
    rows = _load("mixed_sampling").main([
        str(tiny_run), "--ticket-round", "1", "--switch", "500", "--samples", "16", "--steps", "4",
        "--evaluator", "fd-lenet", "--evaluator-option", "max_steps=2", "--evaluator-option", "reference_samples=32",
        "--evaluator-option", "kid_subsets=2", "--evaluator-option", "kid_subset_size=8",
        "--evaluator-option", "batch_size=16", "--option", f"cache_dir={json.dumps(str(tmp_path / 'fd'))}",
        "--device", "cpu", "--json", str(out)])
    assert [(r["order"], r["switch"]) for r in rows] == [("dense", None), ("ticket", None),
                                                         ("dense-first", 500), ("ticket-first", 500)]
    frac = {r["order"]: r["macs_fraction_of_dense"] for r in rows}
    assert frac["dense"] == 1.0 and frac["ticket"] < 0.9  # half of every prunable weight is gone
    assert frac["ticket"] < frac["dense-first"] < 1.0 and frac["ticket"] < frac["ticket-first"] < 1.0
    # DDIM 4 of T = 1000 visits 750, 500, 250, 0: two steps on each side of the switch, so the two
    # orders cost the same and together cost one all-dense plus one all-ticket run.
    assert frac["dense-first"] == pytest.approx(frac["ticket-first"])
    assert frac["dense-first"] + frac["ticket-first"] == pytest.approx(1.0 + frac["ticket"])
    assert all(r["scores"]["fd_lenet"] >= 0 and r["samples"] == 16 and r["steps"] == 4 for r in rows)
    assert json.loads(out.read_text()) == json.loads(json.dumps(rows))


def test_mixed_sampling_refuses_a_switch_outside_the_sampled_steps():
    with pytest.raises(SystemExit, match="outside the sampled timesteps"):
        _load("mixed_sampling").plan([5000], [750, 500, 250, 0])


# A stand-in ``ticketforge`` for a shell script: it keeps its arguments (NUL-separated) in $CALLS/call-N
# and prints call-N where the script sends the command's output; the test then runs each call here.
_RECORDING_TICKETFORGE = """#!/usr/bin/env bash
n=$(find "$CALLS" -name 'call-*' | wc -l)
printf '%s\\0' "$@" > "$CALLS/call-$n"
echo "call-$n"
"""


def test_cka_script_compares_same_init_and_other_init_tickets(tmp_path):
    """experiments/mnist_cka.sh's pairs on tiny runs: the same-init ticket is nearly the seed-0 one
    after a few steps, the other-init one is not.

    The script runs as written, with a ``ticketforge`` on PATH that records each command; each command
    then runs in this process, its output written where the script sent it (a ``ticketforge`` process
    per command cost more than its CKA)."""
    import os
    import subprocess

    from click.testing import CliRunner

    from ticketforge.cli.main import cli

    runs, calls, stand_in = tmp_path / "runs", tmp_path / "calls", tmp_path / "bin" / "ticketforge"
    for name, seeds in [("incremental", {}), ("incremental-data1", {"seed": 1, "init_seed": 0}),
                        ("incremental-init1", {"seed": 1})]:
        Engine(RunConfig(preset="tiny", schedule="incremental", rounds=1, steps_per_round=4, device="cpu",
                         out=str(runs / name), artifacts=False, log_every=2, **seeds)).run()
    calls.mkdir()
    stand_in.parent.mkdir()
    stand_in.write_text(_RECORDING_TICKETFORGE)
    stand_in.chmod(0o755)
    env = {**os.environ, "DEVICE": "cpu", "CALLS": str(calls),
           "PATH": f"{stand_in.parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", str(EXPERIMENTS / "mnist_cka.sh"), str(runs), "-1", str(tmp_path / "cka")],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "failed" not in done.stdout, done.stdout + done.stderr
    outputs = sorted((tmp_path / "cka").glob("*.json"))
    assert len(outputs) == len(list(calls.iterdir())) == 4  # two pairs, two modes
    for output in outputs:
        argv = (calls / output.read_text().strip()).read_bytes().decode().split("\0")[:-1]
        assert argv[0] == "compare" and argv[argv.index("--device") + 1] == "cpu", argv
        result = CliRunner().invoke(cli, argv)
        assert result.exit_code == 0, (argv, result.output)
        output.write_text(result.stdout)

    def mean_cka(pair: str) -> float:
        doc = json.loads((tmp_path / "cka" / f"cka-{pair}-weights.json").read_text())
        values = [m["cka"] for m in doc["modules"] if m["cka"] is not None]
        return sum(values) / len(values)

    assert mean_cka("data1") > 0.9 > mean_cka("init1")
    assert (tmp_path / "cka" / "cka-init1-activations.png").exists()


# -- experiments/study/part1.py: the plan it makes, and one whole tiny part in its own processes --------
STUDY = EXPERIMENTS / "study"


def _part1():
    return load_script(STUDY / "part1.py")


def study_command(script: str, toml: Path, out: Path, sets: list[str], study_sets: list[str], tmp_path: Path
                  ) -> tuple[list[str], dict[str, str]]:
    """The command line (and environment) that runs a study part on the CPU, its own cache in ``tmp_path``."""
    import os

    argv = [sys.executable, str(STUDY / script), str(toml), "--out", str(out), "--no-mps"]
    argv += [a for s in sets for a in ("--set", s)] + [a for s in study_sets for a in ("--study-set", s)]
    return argv, {**os.environ, "TICKETFORGE_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}


def test_part1_plans_the_sparsities_the_engine_prunes_to(tmp_path):
    """The planner's sparsity per round (from the schedule alone) is the one a run reaches, so the
    cells sit at the rounds nearest their targets and the run ends where the plan says."""
    part1 = _part1()
    config = RunConfig(preset="tiny", schedule="incremental", p=30.0, q=2.0, rounds=3, steps_per_round=2,
                       device="cpu", out=str(tmp_path / "run"), artifacts=False, log_every=1)
    records = Engine(config).run()
    planned, cap = part1.planned_sparsities(config, 5)
    assert cap == 3 and planned[:4] == pytest.approx([r["sparsity"] for r in records], abs=1e-12)
    assert planned[2] < planned[3] < planned[4]
    assert part1.nearest_rounds(planned, [planned[1] + 1e-3, planned[3] - 1e-3], 3) == [1, 3]
    assert part1.last_round(planned, planned[2] - 1e-6, cap=10) == 2 and part1.last_round(planned, 0.999, cap=3) == 3


def test_part1_plan_has_each_control_of_each_cell_and_scores_every_training(tmp_path):
    part1 = _part1()
    data, study = part1.read_study(STUDY / "rewind.toml", [], [])
    assert Path(data["data-root"]) == (EXPERIMENTS.parent / ".data" / "mnist").resolve()  # the file's folder
    config = RunConfig.from_dict({**data, "preset": "tiny", "data-root": None, "dataset": None})
    jobs, chosen = part1.make_plan(config, study, tmp_path)
    by_id = {j.id: j for j in jobs}
    assert len(chosen["cells"]) == 3 and set(study["cut-order"]) <= set(by_id)
    assert by_id["run-s1"].args["config"]["rounds"] == chosen["cells"][0]["round"]
    branches = [j for j in jobs if j.kind == "branch"]
    # 3 cells x 4 controls for seed 0, the first cell's 4 for seed 1, the dense branch, the repro check
    assert len(branches) == 3 * 4 + 4 + 2
    assert {j.args["start"] for j in branches} == {"tau", "init", "reinit"}
    assert [j.args["rewind_fraction"] for j in branches if j.id.endswith("tau0.2")] == [0.2] * 4
    for j in branches:
        assert [(p, k) for p, k in j.needs_rounds] == [(j.args["run"], j.args["round"])]
        assert j.id == "repro" or f"score:{j.id}" in by_id
    scored_rounds = sorted(j.args["round"] for j in jobs if j.kind == "score" and "round" in j.args and
                           j.args["path"].endswith("seed0"))
    assert scored_rounds == sorted({0, *[c["round"] for c in chosen["cells"]], chosen["last_round"]})
    assert part1.parse_control("random-tau") == {"masks": "random", "start": "tau", "rewind_fraction": None}
    with pytest.raises(SystemExit, match="unknown control"):
        part1.parse_control("ticket-late")


def test_part1_runs_a_tiny_part_end_to_end(tmp_path):
    """The scheduler, its workers (one training, one scoring: each its own process) and the report, on
    two tiny rounds: every job finishes, the scores land in the JSON, the repro branch repeats its round."""
    import subprocess

    out = tmp_path / "p1"
    sets = ['preset="tiny"', "steps-per-round=8", "compile=false", 'precision="auto"', 'dataset="mnist-sample"',
            "data-root=", "batch-size=8", "warmup-steps=1", "target-sparsity=0.3", "log-every=4",
            "checkpoint-every=4", 'device="cpu"', "keep-rewind-points=[0.0, 0.25]"]
    study = ["sparsities=[0.3]", 'controls=["random-tau", "ticket-tau0.25"]', "spread-seed=", "samples=16",
             "sample-steps=2", "train-workers=1", "cut-order=[]", "evaluator-options={max_steps=2, "
             "reference_samples=16, kid_subsets=2, kid_subset_size=8, batch_size=16}"]
    argv, env = study_command("part1.py", STUDY / "rewind.toml", out, sets, study, tmp_path)
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    doc = json.loads((out / "results" / "part1.json").read_text())
    assert {j: v["state"] for j, v in doc["jobs"].items() if v["state"] != "done"} == {}
    kinds = sorted((c["cell"], c["kind"]) for c in doc["cells"])
    assert kinds == [("0.3", "random-tau"), ("0.3", "ticket"), ("0.3", "ticket-tau0.25"),
                     ("dense", "none-tau"), ("dense", "ticket"), ("r2", "ticket")]  # r2: the run's last round
    assert all(c["fd_lenet"] is not None and c["n_samples"] == 16 for c in doc["cells"])
    assert doc["repro"]["masks_equal"] and doc["repro"]["weights_bit_identical"]
    assert (out / "results" / "part1_fd.png").exists() and (out / "results" / "part1_samples.png").exists()
    again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)  # resumes: nothing redone
    assert again.returncode == 0 and all(c["score_reused"] for c in json.loads(
        (out / "results" / "part1.json").read_text())["cells"]), again.stdout[-2000:] + again.stderr[-2000:]

"""The experiment scripts under experiments/ run on a tiny run and compute what they say."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import load_script

from ticketforge import Engine, RunConfig

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"


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


def test_cka_script_compares_same_init_and_other_init_tickets(tmp_path):
    """experiments/mnist_seeds.sh's pairs on tiny runs: the same-init ticket is nearly the seed-0 one
    after a few steps, the other-init one is not."""
    import os
    import subprocess

    runs = tmp_path / "runs"
    for name, seeds in [("incremental", {}), ("incremental-data1", {"seed": 1, "init_seed": 0}),
                        ("incremental-init1", {"seed": 1})]:
        Engine(RunConfig(preset="tiny", schedule="incremental", rounds=1, steps_per_round=4, device="cpu",
                         out=str(runs / name), artifacts=False, log_every=2, **seeds)).run()
    done = subprocess.run(["bash", str(EXPERIMENTS / "mnist_cka.sh"), str(runs), "-1", str(tmp_path / "cka")],
                          env={**os.environ, "DEVICE": "cpu"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "failed" not in done.stdout, done.stdout + done.stderr

    def mean_cka(pair: str) -> float:
        doc = json.loads((tmp_path / "cka" / f"cka-{pair}-weights.json").read_text())
        values = [m["cka"] for m in doc["modules"] if m["cka"] is not None]
        return sum(values) / len(values)

    assert mean_cka("data1") > 0.9 > mean_cka("init1")
    assert (tmp_path / "cka" / "cka-init1-activations.png").exists()

"""The example scripts run on the toy model and do what they say."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import load_script

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load(name: str):
    return load_script(EXAMPLES / f"{name}.py")


def test_custom_schedule(registry, tmp_path, capsys):
    example = _load("custom_schedule")
    rounds = example.main(["--model", "toy", "--rounds", "2", "--steps-per-round", "10", "--p", "30",
                           "--edge-factor", "0.5", "--device", "cpu", "--out", str(tmp_path / "run")],
                          registry=registry)
    assert [r["round"] for r in rounds] == [0, 1, 2]
    groups = {g["name"]: g["sparsity"] for g in rounds[-1]["groups"]}
    assert list(groups) == ["inp", "mid", "out"]
    # Two rounds of "prune r of the remaining": 1 - (1 - r)^2 (edges r = 15%, middle r = 30%).
    assert groups["inp"] == pytest.approx(1 - 0.85 ** 2, abs=0.02)
    assert groups["out"] == pytest.approx(1 - 0.85 ** 2, abs=0.02)
    assert groups["mid"] == pytest.approx(1 - 0.70 ** 2, abs=0.01)
    out = capsys.readouterr().out
    assert "round 2:" in out and "mid" in out


def test_custom_schedule_ratios():
    schedule = _load("custom_schedule").GentleEdges(0.2, 0.5)
    assert schedule.ratios(4) == [0.1, 0.2, 0.2, 0.1]
    schedule.validate(["a", "b", "c", "d"])


def test_custom_schedule_settings_are_part_of_the_runs_identity(registry, tmp_path):
    # What the example's comment and docs/plugins.md say: the object's constructor settings name the run.
    from ticketforge import Engine, RunConfig
    GentleEdges = _load("custom_schedule").GentleEdges
    config = RunConfig(model="toy", rounds=1, device="cpu", runs_root=str(tmp_path))

    def folder(schedule):
        return Engine(config, schedule=schedule, registry=registry).run_dir

    assert folder(GentleEdges(0.3, 0.5)) != folder(GentleEdges(0.2, 0.5)) != folder(GentleEdges(0.2, 0.25))
    assert folder(GentleEdges(0.2, 0.5)) == folder(GentleEdges(0.2, 0.5))
    assert folder(GentleEdges(0.2, 0.5)).name.startswith("toy-GentleEdges-")

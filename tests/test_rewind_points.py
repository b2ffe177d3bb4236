"""theta_tau and the kept rewind points: finite, from the trajectory that finished round 0, never renaming a run."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import run_branch_toy
import torch
import toy_plugin
from helpers import core_registry

from ticketforge import Engine, RunConfig, hookimpl
from ticketforge.config import config_differences
from ticketforge.engine.rewind import point_file
from ticketforge.errors import TrainingDiverged
from ticketforge.pruning.state import plain_state_dict
from ticketforge.store import RunStore

RUNNER = Path(__file__).parent / "run_branch_toy.py"
NAN_AT: dict[str, int | None] = {"call": None}  # module state: the spec's name (and the run's hash) stays the same


class NanOnce(toy_plugin.ToySpec):
    """The toy loss, NaN at the loss call ``NAN_AT["call"]`` (counted from the spec's creation)."""

    def __init__(self):
        super().__init__()
        self._calls = 0

    def loss(self, network, batch, generator=None):
        self._calls += 1
        loss = super().loss(network, batch, generator)
        return loss * float("nan") if self._calls == NAN_AT["call"] else loss


class WeightsAtSteps:
    """Snapshots round 0's network at logged steps (an independent view of theta at a step)."""

    def __init__(self):
        self.at: dict[int, dict[str, torch.Tensor]] = {}

    @hookimpl
    def ticketforge_train_step(self, run, round_index, step, metrics):
        if round_index == 0:
            self.at[step] = plain_state_dict(run.network)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _finite(weights: dict) -> bool:
    return all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


@pytest.fixture
def tau7(toy_config):
    # tau = ceil(0.34 * 20) = 7: between the logs and checkpoints at 5 and 10
    return dataclasses.replace(toy_config, rounds=1, tau_frac=0.34, checkpoint_every=5)


def test_theta_tau_and_kept_points_are_the_weights_at_their_steps(toy_config, registry):
    spy = WeightsAtSteps()
    registry.pm.register(spy)
    cfg = dataclasses.replace(toy_config, rounds=1, tau_frac=0.25, log_every=1, keep_rewind_points=[0.0, 0.5, 0.85])
    Engine(cfg, registry=registry).run()
    store = RunStore(cfg.out)
    assert _same(store.read_tensors("rewind.safetensors"), spy.at[5])
    assert _same(store.read_tensors(point_file(10)), spy.at[10])
    assert _same(store.read_tensors(point_file(17)), spy.at[17])  # ceil(0.85 * 20)
    assert _same(store.read_tensors(point_file(0)), store.read_tensors("init.safetensors"))


def test_nan_at_step_tau_leaves_no_theta_tau_and_a_resume_takes_the_finite_one(tau7, registry, tmp_path):
    NAN_AT["call"] = None
    clean = dataclasses.replace(tau7, out=str(tmp_path / "clean"))
    Engine(clean, model=NanOnce(), registry=registry).run()
    reference = RunStore(clean.out).read_tensors("rewind.safetensors")

    NAN_AT["call"] = 7  # the step that ends at done == tau; losses are read only at steps 5 and 10
    with pytest.raises(TrainingDiverged) as info:
        Engine(tau7, model=NanOnce(), registry=registry).run()
    message = str(info.value)
    # the loss check runs where a point is due, so the message names the non-finite step and the last finite loss
    assert "round 0, step 6" in message and "last finite loss" in message and "--lr" in message
    store = RunStore(tau7.out)
    assert not store.has("rewind.safetensors")
    ckpt = store.read_checkpoint("checkpoint.pt")
    assert ckpt["step"] == 5 and ckpt["rewind_points"] == {}

    NAN_AT["call"] = None  # the same command again: resumes from step 5 and now stays finite
    Engine(tau7, model=NanOnce(), registry=registry).run()
    theta_tau = RunStore(tau7.out).read_tensors("rewind.safetensors")
    assert _finite(theta_tau) and _same(theta_tau, reference)


def _toy(out: Path, *args: str) -> subprocess.CompletedProcess:
    """tests/run_branch_toy.py in a process of its own, for a SIGKILL."""
    return subprocess.run([sys.executable, str(RUNNER), str(out), *args], capture_output=True, text=True, timeout=300)


def test_killed_round_0_resumes_to_the_uninterrupted_theta_tau(tmp_path):
    # tau = 7; points at 3 (0.15) and 13 (0.65). Killed at 10: the checkpoint at 5 predates tau and
    # the point at 7 of the lost attempt must not survive; killed at 15: the checkpoint at 10 carries it.
    args = ["--tau-frac", "0.34", "--keep", "0.15,0.65"]
    config = run_branch_toy.run_config(tmp_path / "ref", tau_frac=0.34, keep=[0.15, 0.65])
    Engine(config, registry=core_registry()).run()
    ref = RunStore(tmp_path / "ref")
    for kill_at in ("0:10", "0:15"):
        out = tmp_path / kill_at.replace(":", "-")
        killed = _toy(out, *args, "--kill-at-step", kill_at)
        assert killed.returncode == -9, killed.stderr
        store = RunStore(out)
        assert not store.has("rewind.safetensors") and not store.has(point_file(3))  # nothing before round 0 ends
        carried = set(store.read_checkpoint("checkpoint.pt")["rewind_points"])
        assert carried == ({"rewind.safetensors", point_file(3)} if kill_at == "0:15" else {point_file(3)})
        Engine(dataclasses.replace(config, out=str(out)), registry=core_registry()).run()  # the same run, resumed
        for rel in ("rewind.safetensors", point_file(3), point_file(13), "rounds/0002/weights.safetensors"):
            assert _same(RunStore(out).read_tensors(rel), ref.read_tensors(rel)), (kill_at, rel)


def test_keep_rewind_points_is_not_part_of_the_run(toy_config, registry):
    base = RunConfig()
    assert dataclasses.replace(base, keep_rewind_points=[0.0, 0.2]).digest() == base.digest()
    assert "keep_rewind_points" not in base.identity()
    assert config_differences({"keep_rewind_points": [0.2], "p": 20.0}, {"keep_rewind_points": [], "p": 20.0}) == []
    first = Engine(dataclasses.replace(toy_config, keep_rewind_points=[0.5]), registry=registry).run()
    # asked again with other points: the same run (finished rounds are not redone, nothing refused)
    again = Engine(dataclasses.replace(toy_config, keep_rewind_points=[0.25]), registry=registry).run()
    assert [r["metrics"]["seconds"] for r in again] == [r["metrics"]["seconds"] for r in first]
    store = RunStore(toy_config.out)
    assert store.has(point_file(10)) and not store.has(point_file(5))


@pytest.mark.parametrize("points", [[1.5], [-0.1], ["a"], 0.2])
def test_bad_rewind_points_are_refused(toy_config, registry, points):
    from ticketforge.errors import ConfigError
    with pytest.raises(ConfigError, match="keep-rewind-points"):
        Engine(dataclasses.replace(toy_config, keep_rewind_points=points), registry=registry)


def test_cli_keeps_the_points_it_is_given(registry, monkeypatch, tmp_path):
    from click.testing import CliRunner

    import ticketforge.registry as registry_module
    from ticketforge.cli.main import cli

    monkeypatch.setattr(registry_module, "_registry", registry)
    base = ["run", "--model", "toy", "--schedule", "uniform", "--rounds", "0", "--steps-per-round", "10", "--device",
            "cpu", "--quiet", "--no-artifacts"]
    result = CliRunner().invoke(cli, [*base, "--out", str(tmp_path / "a"), "--keep-rewind-points", "0.3,0.5"])
    assert result.exit_code == 0, result.output
    assert RunStore(tmp_path / "a").has(point_file(3)) and RunStore(tmp_path / "a").has(point_file(5))
    for bad in ("0.1,x", "0.1,2"):
        result = CliRunner().invoke(cli, [*base, "--out", str(tmp_path / "b"), "--keep-rewind-points", bad])
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1 and "keep-rewind-points" in result.output
        assert not (tmp_path / "b").exists()

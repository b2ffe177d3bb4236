"""A diverged round says the real last finite loss, and its advice is a command that works."""

from __future__ import annotations

import dataclasses
import re

import pytest
import toy_plugin

from ticketforge import Engine
from ticketforge.errors import ConfigError, TrainingDiverged


class Exploding(toy_plugin.ToySpec):
    """The toy model whose loss turns NaN from call ``_nan_from`` on (a private setting: not in the run's name)."""

    def __init__(self, nan_from: int | None):
        super().__init__()
        self._nan_from, self._calls, self._losses = nan_from, 0, []

    def loss(self, network, batch, generator=None):
        loss = super().loss(network, batch, generator)
        self._calls += 1
        if self._nan_from is not None and self._calls > self._nan_from:
            return loss * float("nan")
        self._losses.append(loss.item())
        return loss


def _diverge(config, registry, nan_from: int) -> tuple[str, Exploding]:
    spec = Exploding(nan_from)
    with pytest.raises(TrainingDiverged) as info:
        Engine(config, model=spec, registry=registry).run()
    return str(info.value), spec


def test_nan_before_the_first_log_reports_the_last_finite_loss(toy_config, registry):
    message, spec = _diverge(toy_config, registry, nan_from=3)  # steps 0-2 finite, the first log is at step 5
    assert "round 0, step 3" in message and "nan" not in message.split("step 3")[1].lower()
    assert f"last finite loss {spec._losses[-1]:.4g} at step 2" in message
    assert "\n" not in message


def test_nan_at_the_first_step_says_no_step_was_finite(toy_config, registry):
    message, _ = _diverge(toy_config, registry, nan_from=0)
    assert "step 0" in message and "no step of this attempt had a finite loss" in message


def test_the_advice_under_out_works(toy_config, registry, tmp_path):
    message, _ = _diverge(toy_config, registry, nan_from=12)
    lower = float(re.search(r"--lr (\S+)", message).group(1))
    assert lower == 0.005  # half the toy preset's 1e-2
    assert "another --out" in message and "--fresh" in message
    fixed = dataclasses.replace(toy_config, lr=lower, rounds=1)
    with pytest.raises(ConfigError, match="another config"):  # why the advice is not just "lower --lr"
        Engine(fixed, model=Exploding(None), registry=registry).run()
    Engine(dataclasses.replace(fixed, out=str(tmp_path / "other")), model=Exploding(None), registry=registry).run()
    records = Engine(fixed, model=Exploding(None), registry=registry, fresh=True).run()
    assert [r["round"] for r in records] == [0, 1]


def test_the_advice_without_out_works(toy_config, registry, tmp_path):
    config = dataclasses.replace(toy_config, out=None, runs_root=str(tmp_path / "runs"), rounds=1)
    message, _ = _diverge(config, registry, nan_from=12)
    assert "--lr 0.005" in message and "a new run folder" in message and "--out" not in message
    engine = Engine(dataclasses.replace(config, lr=0.005), model=Exploding(None), registry=registry)
    assert [r["round"] for r in engine.run()] == [0, 1]
    assert len(list((tmp_path / "runs").iterdir())) == 2  # the diverged run is still there, untouched


def test_a_diverged_branch_gives_advice_a_branch_can_follow(toy_config, registry):
    from ticketforge import branch
    Engine(dataclasses.replace(toy_config, rounds=1), model=Exploding(None), registry=registry).run()
    with pytest.raises(TrainingDiverged) as info:
        branch(toy_config.out, 1, masks="random", model=Exploding(3), registry=registry)
    message = str(info.value)
    assert "step 3" in message and "resumes" in message and "a run made with it" in message
    assert "--out" not in message and "--fresh" not in message  # no run flags: `branch` has none of them

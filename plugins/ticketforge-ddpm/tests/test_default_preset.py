"""A run made with the model's default preset is read with that preset after the default changed (tiny -> quickstart)."""

from __future__ import annotations

import torch

from ticketforge import Engine, RunConfig, branch
from ticketforge.api import load_round
from ticketforge.store import RunStore


def _old_default_run(tmp_path):
    """A run as the default command made it before quickstart: no preset given, tiny's network recorded."""
    out = tmp_path / "run"
    Engine(RunConfig(preset="tiny", rounds=1, steps_per_round=2, batch_size=4, device="cpu", threads=1,
                     out=str(out), artifacts=False, log_every=2)).run()
    store = RunStore(out)
    store.write_config({**store.read_config(), "preset": None})
    return out


def test_an_old_default_run_is_loaded_and_branched_with_the_preset_it_was_trained_with(tmp_path):
    run = _old_default_run(tmp_path)
    loaded = load_round(run, 1)
    assert loaded.spec.config["preset"] == "tiny" and loaded.spec.config["image_size"] == 32
    x, t = loaded.spec.example_inputs(2)
    with torch.no_grad():
        assert loaded.network(x, t).shape == (2, 1, 32, 32)
    record = branch(run, 1, masks="random", steps=2)
    assert record["round"] == 0 and abs(record["sparsity"] - loaded.record["sparsity"]) < 1e-6

"""The train-prune-rewind loop on the toy model: Algorithm 1's invariants."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import ticketforge.engine.loop as loop_module
from ticketforge import Engine, RunConfig, hookimpl
from ticketforge.pruning.state import plain_state_dict
from ticketforge.store import RunStore


class Recorder:
    """A lifecycle plugin that snapshots the network at round start and end."""

    def __init__(self):
        self.at_start, self.at_end, self.bytes_at_end, self.hooks_at_end = {}, {}, {}, {}

    @hookimpl
    def ticketforge_round_start(self, run, round_index, sparsity, steps):
        self.at_start[round_index] = plain_state_dict(run.network)

    @hookimpl
    def ticketforge_round_end(self, run, round_index, record):
        net = run.network
        self.at_end[round_index] = plain_state_dict(net)
        self.bytes_at_end[round_index] = sum(t.numel() * t.element_size()
                                             for t in list(net.parameters()) + list(net.buffers()))
        self.hooks_at_end[round_index] = max(len(m._forward_pre_hooks) for m in net.modules())


def _run(config, registry, **kw):
    return Engine(config, registry=registry, **kw).run()


def _masks(store, k):
    return store.read_tensors(f"rounds/{k:04d}/masks.safetensors")


def test_pruned_weights_are_exactly_zero_in_trained_weights_and_ema(toy_config, registry):
    _run(dataclasses.replace(toy_config, rounds=3), registry)
    store = RunStore(toy_config.out)
    for k in (1, 2, 3):
        masks = _masks(store, k)
        for file in ("weights", "ema"):
            weights = store.read_tensors(f"rounds/{k:04d}/{file}.safetensors")
            for name, mask in masks.items():
                w = weights[f"{name}.weight"]
                assert (w[~mask.bool()] == 0).all(), (k, file, name)
                assert (w[mask.bool()] != 0).float().mean() > 0.9  # kept weights were trained, not zeroed


def test_rewind_restores_theta_tau_on_kept_weights(toy_config, registry):
    rec = Recorder()
    registry.pm.register(rec)
    _run(toy_config, registry)
    store = RunStore(toy_config.out)
    theta_tau = store.read_tensors("rewind.safetensors")
    theta_0 = store.read_tensors("init.safetensors")
    masks = _masks(store, 2)
    for name, mask in masks.items():
        start = rec.at_start[2][f"{name}.weight"]
        expect = theta_tau[f"{name}.weight"] * mask
        assert torch.equal(start, expect)
        assert not torch.equal(theta_tau[f"{name}.weight"], theta_0[f"{name}.weight"])
    assert torch.equal(rec.at_start[2]["norm.weight"], theta_tau["norm.weight"])  # unpruned params rewind too


def test_rewind_init_and_none(toy_config, registry):
    rec = Recorder()
    registry.pm.register(rec)
    _run(dataclasses.replace(toy_config, rewind="init", rounds=1), registry)
    theta_0 = RunStore(toy_config.out).read_tensors("init.safetensors")
    assert torch.equal(rec.at_start[1]["norm.bias"], theta_0["norm.bias"])
    rec2 = Recorder()
    registry.pm.register(rec2)
    cfg = dataclasses.replace(toy_config, rewind="none", rounds=1, out=toy_config.out + "-none")
    _run(cfg, registry)
    assert torch.equal(rec2.at_start[1]["norm.bias"], rec2.at_end[0]["norm.bias"])


def test_optimizer_state_is_fresh_every_round(toy_config, registry, monkeypatch):
    made = []
    real = loop_module.make_optimizer

    def spy(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(loop_module, "make_optimizer", spy)
    _run(toy_config, registry)
    assert len(made) == 3
    for opt in made:
        steps = {int(s["step"]) for s in opt.state.values()}
        assert steps == {toy_config.steps_per_round}


def test_adam_beta2_reaches_the_optimizer_and_names_the_run_only_when_not_its_default(toy_config, registry,
                                                                                     monkeypatch):
    made = []
    real = loop_module.make_optimizer
    monkeypatch.setattr(loop_module, "make_optimizer", lambda *a, **kw: made.append(real(*a, **kw)) or made[-1])
    cfg = dataclasses.replace(toy_config, rounds=0, out=None, runs_root=toy_config.out + "-runs")
    default = Engine(cfg, registry=registry)
    assert Engine(dataclasses.replace(cfg, adam_beta2=0.999), registry=registry).run_dir == default.run_dir
    other = Engine(dataclasses.replace(cfg, adam_beta2=0.95), registry=registry)
    assert other.run_dir != default.run_dir
    other.run()
    assert [g["betas"] for g in made[0].param_groups] == [(0.9, 0.95)]


def test_memory_does_not_grow_across_rounds(toy_config, registry):
    rec = Recorder()
    registry.pm.register(rec)
    _run(dataclasses.replace(toy_config, rounds=20, steps_per_round=4), registry)  # issue 6: 20 rounds
    sizes = [rec.bytes_at_end[k] for k in range(1, 21)]
    assert len(set(sizes)) == 1
    assert set(rec.hooks_at_end[k] for k in range(1, 21)) == {1}
    # the bool masks cost one byte per prunable weight beyond the weights
    mask_bytes = sum(m.numel() for m in _masks(RunStore(toy_config.out), 1).values())
    dense = registry.create("models", "toy").build()
    dense_bytes = sum(t.numel() * t.element_size() for t in dense.parameters())
    assert sizes[0] == dense_bytes + mask_bytes


def test_target_sparsity_stops_early(toy_config, registry):
    records = _run(dataclasses.replace(toy_config, rounds=10, target_sparsity=0.45), registry)
    assert records[-1]["sparsity"] >= 0.45 and records[-2]["sparsity"] < 0.45
    assert len(records) == 4  # 0.8^3 = 0.512 kept


def test_random_reinit_baseline_rewinds_to_a_fresh_init(toy_config, registry):
    rec = Recorder()
    registry.pm.register(rec)
    _run(dataclasses.replace(toy_config, baseline="random-reinit", rounds=1), registry)
    store = RunStore(toy_config.out)
    reinit, theta_0 = store.read_tensors("reinit.safetensors"), store.read_tensors("init.safetensors")
    assert torch.equal(rec.at_start[1]["norm.bias"], reinit["norm.bias"])
    assert not torch.equal(reinit["mid.weight"], theta_0["mid.weight"])


@pytest.mark.parametrize("schedule", ["uniform", "incremental", "global"])
def test_random_prune_has_the_tickets_per_tensor_counts_in_every_round(toy_config, registry, schedule):
    ticket_cfg = dataclasses.replace(toy_config, schedule=schedule, rounds=4)
    _run(ticket_cfg, registry)
    cfg = dataclasses.replace(ticket_cfg, baseline="random-prune", out=toy_config.out + "-rp", ticket_run=ticket_cfg.out)
    _run(cfg, registry)
    ticket, control = RunStore(ticket_cfg.out), RunStore(cfg.out)
    assert control.finished_rounds() == ticket.finished_rounds() == [0, 1, 2, 3, 4]
    for k in range(1, 5):
        ours, theirs = _masks(control, k), _masks(ticket, k)
        assert {n: int(m.sum()) for n, m in ours.items()} == {n: int(m.sum()) for n, m in theirs.items()}, k
        assert any(not torch.equal(ours[n], theirs[n]) for n in ours), k  # random positions, not the ticket's
        if k > 1:
            previous = _masks(control, k - 1)
            assert all(not (m & ~previous[n]).any() for n, m in ours.items()), k  # nested across rounds
    assert control.round_record(4)["sparsity"] == ticket.round_record(4)["sparsity"]


def test_same_seed_same_masks_and_a_finished_run_is_skipped(toy_config, registry):
    first = _run(toy_config, registry)
    again = _run(toy_config, registry)  # resumes: nothing left to do
    assert [r["mask_sha256"] for r in first] == [r["mask_sha256"] for r in again]
    assert [r["metrics"]["seconds"] for r in first] == [r["metrics"]["seconds"] for r in again]
    other = _run(dataclasses.replace(toy_config, out=toy_config.out + "-b"), registry)
    assert [r["mask_sha256"] for r in first] == [r["mask_sha256"] for r in other]


def test_python_api_accepts_objects(toy_config, registry):
    from ticketforge import RatioSchedule

    class FirstOnly(RatioSchedule):
        def ratios(self, num_groups):
            return [0.5] + [0.0] * (num_groups - 1)

    records = Engine(dataclasses.replace(toy_config, rounds=1), schedule=FirstOnly(), registry=registry).run()
    sparsities = [g["sparsity"] for g in records[1]["groups"]]
    assert sparsities[0] == pytest.approx(0.5, abs=0.02) and sparsities[1:] == [0.0, 0.0]
    assert records[1]["round"] == 1


def test_init_seed_shares_theta_0_but_not_the_data_order(toy_config, registry, tmp_path):
    from ticketforge.store import RunStore

    def run(name: str, **changes):
        config = dataclasses.replace(toy_config, rounds=1, out=str(tmp_path / name), **changes)
        Engine(config, registry=registry).run()
        store = RunStore(tmp_path / name)
        return store.read_tensors("init.safetensors"), store.read_tensors("rounds/0000/weights.safetensors")

    init_a, trained_a = run("a", seed=0)
    init_b, trained_b = run("b", seed=1, init_seed=0)
    init_c, _ = run("c", seed=1)
    assert all(torch.equal(init_a[k], init_b[k]) for k in init_a)
    assert not all(torch.equal(init_a[k], init_c[k]) for k in init_a)
    assert not all(torch.equal(trained_a[k], trained_b[k]) for k in trained_a)


def test_the_digest_of_a_fixed_config_is_pinned():
    # A change here renames every existing run folder: do it only on purpose, and say so in docs/concepts.md.
    config = RunConfig(model="toy", schedule="global", p=30.0, q=2.0, rounds=3, steps_per_round=20, batch_size=16,
                       lr=0.01, seed=7, data_root="./data/", model_options={"width": 8})
    assert config.identity() == {"model": "toy", "model_options": {"width": 8}, "data_root": "data",
                                 "schedule": "global", "p": 30.0, "q": 2.0, "steps_per_round": 20, "seed": 7,
                                 "batch_size": 16, "lr": 0.01}
    assert config.digest() == "11fa8bafb64c"
    assert RunConfig().digest() == "44136fa355b3"  # sha256 of "{}": nothing differs from the defaults

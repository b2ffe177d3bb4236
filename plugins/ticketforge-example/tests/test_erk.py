"""The ERK schedule: the schedule contract, ERK's allocation, discovery, and a tiny engine run."""

from __future__ import annotations

import math

import pytest
import torch

import ticketforge_example.plugin as example_plugin
from ticketforge import Engine, RunConfig
from ticketforge.errors import ConfigError
from ticketforge.registry import build_registry
from ticketforge.testing import RecordsContract, ScheduleContract
from ticketforge_example.erk import ErkSchedule, erk_keep_counts, erk_weight


class TestErkContract(ScheduleContract):
    @pytest.fixture
    def schedule(self):
        return example_plugin.erk(p=20.0)


class TestRecords(RecordsContract):
    distribution = "ticketforge-example"

    @pytest.fixture
    def plugin(self):
        return example_plugin


# Four conv layers of growing width, as one group each: ERK must treat them differently.
SHAPES = [(8, 3, 3, 3), (32, 8, 3, 3), (64, 32, 3, 3), (64, 64, 3, 3)]


def _run(schedule, rounds, shapes=SHAPES, seed=0):
    gen = torch.Generator().manual_seed(seed)
    masks = [[torch.ones(s, dtype=torch.bool)] for s in shapes]
    history = [masks]
    for _ in range(rounds):
        scores = [[torch.rand(s, generator=gen)] for s in shapes]
        masks = schedule.prune(scores, masks)
        history.append(masks)
    return history


def _density(mask):
    return mask.float().mean().item()


def test_erk_weight_is_sum_over_product():
    assert erk_weight((64, 32, 3, 3)) == pytest.approx((64 + 32 + 3 + 3) / (64 * 32 * 9))
    assert erk_weight((10, 20)) == pytest.approx(30 / 200)


def test_prunes_p_of_the_remaining_weights_each_round():
    history = _run(ErkSchedule(0.2), rounds=5)
    for before, after in zip(history, history[1:]):
        alive = sum(int(m.sum()) for g in before for m in g)
        kept = sum(int(m.sum()) for g in after for m in g)
        assert alive - kept == round(0.2 * alive)


def test_bigger_layers_end_sparser():
    final = _run(ErkSchedule(0.2), rounds=6)[-1]
    densities = [_density(g[0]) for g in final]
    assert densities == sorted(densities, reverse=True), densities
    assert densities[0] > densities[-1] + 0.2


def test_densities_follow_erk_and_small_layers_stay_dense():
    schedule = ErkSchedule(0.5)
    first = _run(schedule, rounds=1)[-1]
    densities = [_density(g[0]) for g in first]
    assert all(0.0 < d <= 1.0 for d in densities)
    assert densities[0] == 1.0  # its ERK density exceeds 1: fixed dense, the others rescaled
    ratios = [d / erk_weight(s) for d, s in zip(densities, SHAPES) if d < 1.0]
    assert len(ratios) >= 2
    assert max(ratios) == pytest.approx(min(ratios), rel=0.01)  # density = eps * e_i for the rest


def test_cumulative_masks_are_the_erk_allocation_of_their_density():
    """Round k's per-tensor counts equal ERK from dense at round k's overall density (up to rounding)."""
    history = _run(ErkSchedule(0.2), rounds=6)
    final = [int(g[0].sum()) for g in history[-1]]
    direct = erk_keep_counts(SHAPES, [math.prod(s) for s in SHAPES], sum(final))
    assert all(abs(a - b) <= 6 for a, b in zip(final, direct)), (final, direct)


def test_keep_counts_respect_caps_and_total():
    counts = erk_keep_counts([(4, 4), (100, 100)], [3, 10_000], 5_000)
    assert counts[0] == 3 and sum(counts) == 5_000
    assert erk_keep_counts([(4, 4), (8, 8)], [0, 64], 10) == [0, 10]


def test_validate_refuses_p_of_100():
    with pytest.raises(ConfigError, match="erk"):
        ErkSchedule(1.0).validate(["a"])


def test_found_through_the_entry_point():
    record = build_registry().get("schedules", "erk")
    assert record.plugin == "ticketforge-example"
    assert [o.name for o in record.options] == ["p"]
    assert isinstance(build_registry().create("schedules", "erk", p=10.0), ErkSchedule)


def test_tiny_engine_run(tiny_registry, tmp_path):
    config = RunConfig(model="tiny-example", schedule="erk", p=30.0, rounds=2, steps_per_round=4, device="cpu",
                       out=str(tmp_path / "run"), log_every=2, checkpoint_every=4, artifacts=False)
    rounds = Engine(config, registry=tiny_registry).run()
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert rounds[1]["sparsity"] == pytest.approx(0.3, abs=0.01)
    assert rounds[2]["sparsity"] == pytest.approx(1 - 0.7 ** 2, abs=0.01)
    by_name = {g["name"]: g["sparsity"] for g in rounds[2]["groups"]}
    assert by_name["mid"] > by_name["inp"]  # the 8x8x3x3 conv is pruned harder than the 1-channel one

"""The built-in components pass the contract mixins of ticketforge.testing, and the mixins catch bad ones."""

from __future__ import annotations

import pytest
import torch
import toy_plugin
from torch import nn

import ticketforge.builtins.plugin as builtins_plugin
from ticketforge.builtins.scorers import MagnitudeScorer, RandomScorer
from ticketforge.testing import ModelSpecContract, RecordsContract, ScheduleContract, ScorerContract, toy_targets


class TestMagnitudeScorer(ScorerContract):
    @pytest.fixture
    def scorer(self):
        return MagnitudeScorer()


class TestRandomScorer(ScorerContract):
    @pytest.fixture
    def scorer(self):
        return RandomScorer()


class TestUniformSchedule(ScheduleContract):
    @pytest.fixture
    def schedule(self, registry):
        return registry.create("schedules", "uniform", p=20.0)


class TestIncrementalSchedule(ScheduleContract):
    @pytest.fixture
    def schedule(self, registry):
        return registry.create("schedules", "incremental", p=20.0, q=1.0)


class TestIncrementalScheduleWithinTensor(ScheduleContract):
    @pytest.fixture
    def schedule(self, registry):
        return registry.create("schedules", "incremental", p=20.0, q=1.0, within="tensor")


class TestGlobalSchedule(ScheduleContract):
    @pytest.fixture
    def schedule(self, registry):
        return registry.create("schedules", "global", p=20.0)


class TestToySpec(ModelSpecContract):
    @pytest.fixture
    def spec(self):
        return toy_plugin.ToySpec()


class TestBuiltinRecords(RecordsContract):
    distribution = "ticketforge"

    @pytest.fixture
    def plugin(self):
        return builtins_plugin


class TestToyRecords(RecordsContract):
    @pytest.fixture
    def plugin(self):
        return toy_plugin


# -- the mixins fail on components that break the contract ---------------------------------------
class _Reviving:
    """Prunes nothing and brings every pruned weight back: not monotone."""

    def validate(self, group_names):
        pass

    def prune(self, scores, masks):
        return [[torch.ones_like(m) for m in group] for group in masks]


class _WrongShape:
    def score(self, targets, ctx):
        return [t.weight.detach().abs().flatten() for t in targets]


class _StandardizedConv(nn.Conv2d):
    """The paper code's weight-standardised conv: pruned zeros become non-zero at run time."""

    def forward(self, x):
        w = self.weight
        w = (w - w.mean((1, 2, 3), keepdim=True)) / (w.std((1, 2, 3), keepdim=True) + 1e-5)
        return self._conv_forward(x, w, self.bias)


class _StandardizedSpec(toy_plugin.ToySpec):
    def build(self):
        net = super().build()
        old = net.mid
        net.mid = _StandardizedConv(old.in_channels, old.out_channels, 3, padding=1)
        return net


def test_schedule_contract_catches_revived_weights():
    with pytest.raises(AssertionError, match="came back"):
        ScheduleContract().test_new_masks_are_subsets_of_the_old(_Reviving(), keep=0.6)
    with pytest.raises(AssertionError, match="nothing was pruned"):
        ScheduleContract().test_prunes_over_several_rounds(_Reviving())


def test_scorer_contract_catches_wrong_shapes():
    with pytest.raises(AssertionError, match="shape"):
        ScorerContract().test_one_tensor_per_target_of_its_shape(_WrongShape())


def test_spec_contract_catches_weight_standardisation():
    with pytest.raises(AssertionError, match="mid do not compute with their masked .weight"):
        ModelSpecContract().test_forward_uses_the_masked_weights(_StandardizedSpec())


def test_toy_targets_layout():
    toy = toy_targets()
    assert toy.group_names == ["inp", "mid", "out"]
    assert [t.name for t in toy.targets] == ["inp", "mid", "fc", "out"]
    assert torch.isfinite(toy.ctx.loss_on_batch())

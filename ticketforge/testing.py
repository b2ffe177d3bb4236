"""Contract tests that plugin authors reuse in their own pytest suites.

Subclass a mixin in a ``Test*`` class and give it the component under test as a fixture; pytest then
runs every contract check against it::

    import pytest
    from ticketforge.testing import ScheduleContract

    class TestMySchedule(ScheduleContract):
        @pytest.fixture
        def schedule(self):
            return MySchedule(p=0.2)

The mixins (:class:`ScorerContract`, :class:`ScheduleContract`, :class:`ModelSpecContract`,
:class:`RecordsContract`) check what the engine relies on and nothing more; they run on a network of a
few hundred weights and take well under a second each. :func:`toy_targets` builds that network with
its module groups, prune targets and a score context, for your own component-specific tests.

This module imports pytest: use it from tests only.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator, Sequence, cast

import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils import prune

from .engine.contract import Component, check_masks, check_scores
from .errors import PluginError
from .protocols import Grouped, ModelSpec, ModuleGroup, PruneTarget, Schedule, Scorer, TrainingDefaults
from .pruning.targets import flatten, group_tensors, prune_targets
from .records import _NAME, KINDS, ComponentRecord, Option

__all__ = ["ToyTargets", "toy_targets", "grouped_scores", "ScorerContract", "ScheduleContract",
           "ModelSpecContract", "RecordsContract"]

_PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


# -- a tiny network with prune targets ------------------------------------------------------------
class _TinyNet(nn.Module):
    """Conv -> conv (+ linear on pooled features) -> conv on 1x8x8 images: 4 pruned tensors, 3 groups."""

    def __init__(self, width: int = 4):
        super().__init__()
        self.inp = nn.Conv2d(1, width, 3, padding=1)
        self.mid = nn.Conv2d(width, width, 3, padding=1)
        self.fc = nn.Linear(width, width)
        self.out = nn.Conv2d(width, 1, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.inp(x))
        h = torch.relu(self.mid(h))
        h = h + self.fc(h.mean((2, 3)))[:, :, None, None]
        return self.out(h)


@dataclass
class ToyContext:
    """A :class:`~ticketforge.protocols.ScoreContext` over the tiny network and one fixed batch."""

    network: nn.Module
    generator: torch.Generator
    batch: Tensor

    def loss_on_batch(self) -> Tensor:
        """Denoising loss on the fixed batch (noise drawn from :attr:`generator`, as the engine does)."""
        noise = torch.randn(self.batch.shape, generator=self.generator)
        return ((self.network(self.batch + 0.1 * noise) - self.batch) ** 2).mean()

    def renew(self, seed: int) -> "ToyContext":
        """The same network and batch with a fresh generator seeded with ``seed``."""
        return ToyContext(self.network, torch.Generator().manual_seed(seed), self.batch)


@dataclass
class ToyTargets:
    """What :func:`toy_targets` returns: a network, its groups and targets, and a score context."""

    network: nn.Module
    groups: list[ModuleGroup]
    targets: list[PruneTarget]
    ctx: ToyContext

    @property
    def group_names(self) -> list[str]:
        return [g.name for g in self.groups]

    def grouped(self, tensors: Sequence[Tensor]) -> Grouped:
        """Split one tensor per target into per-group lists (the layout schedules receive)."""
        return group_tensors(self.targets, tensors)


def toy_targets(seed: int = 0, width: int = 4) -> ToyTargets:
    """A tiny seeded conv net (1x8x8 inputs) with groups ``inp``, ``mid`` (conv + linear), ``out``.

    The score context's batch is 4 random images and its generator is seeded with ``seed``.
    """
    torch.manual_seed(seed)
    net = _TinyNet(width)
    groups = [ModuleGroup("inp", [("inp", net.inp)]),
              ModuleGroup("mid", [("mid", net.mid), ("fc", net.fc)]),
              ModuleGroup("out", [("out", net.out)])]
    batch = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(seed + 1))
    return ToyTargets(net, groups, prune_targets(groups), ToyContext(net, torch.Generator().manual_seed(seed), batch))


def grouped_scores(toy: ToyTargets, seed: int = 0) -> Grouped:
    """Distinct random scores, one tensor per target, grouped like the toy's targets."""
    gen = torch.Generator().manual_seed(seed)
    return toy.grouped([torch.rand(t.weight.shape, generator=gen) for t in toy.targets])


def _random_masks(toy: ToyTargets, keep: float, seed: int) -> Grouped:
    gen = torch.Generator().manual_seed(seed)
    return toy.grouped([torch.rand(t.weight.shape, generator=gen) < keep for t in toy.targets])


def _ones(toy: ToyTargets) -> Grouped:
    return toy.grouped([torch.ones_like(t.weight, dtype=torch.bool) for t in toy.targets])


def _clone(grouped: Grouped) -> Grouped:
    return [[x.clone() for x in group] for group in grouped]


def _same(a: Grouped, b: Grouped) -> bool:
    return len(a) == len(b) and all(len(x) == len(y) and all(torch.equal(s, t) for s, t in zip(x, y))
                                    for x, y in zip(a, b))


def _kept(masks: Grouped) -> int:
    return sum(int(m.sum()) for m in flatten(masks))


def engine_checks(check: Any, *args: Any) -> None:
    """Run one of the engine's output checks (:mod:`ticketforge.engine.contract`); fail the test with its message."""
    try:
        check(*args)
    except PluginError as exc:
        pytest.fail(f"the engine would refuse this output: {exc}", pytrace=False)


# -- scorers --------------------------------------------------------------------------------------
class ScorerContract:
    """Checks a :class:`~ticketforge.protocols.Scorer`. Define a ``scorer`` fixture."""

    @pytest.fixture
    def scorer(self) -> Scorer:
        pytest.fail(f"{type(self).__name__} must define a `scorer` fixture returning the scorer under test")

    def test_satisfies_protocol(self, scorer: Scorer) -> None:
        assert isinstance(scorer, Scorer), f"{type(scorer).__name__} has no score(targets, ctx) method"

    def test_one_tensor_per_target_of_its_shape(self, scorer: Scorer) -> None:
        toy = toy_targets()
        scores = scorer.score(toy.targets, toy.ctx)
        assert isinstance(scores, (list, tuple)), f"score() must return a list, got {type(scores).__name__}"
        assert len(scores) == len(toy.targets), f"{len(scores)} score tensors for {len(toy.targets)} targets"
        for t, s in zip(toy.targets, scores):
            assert isinstance(s, Tensor), f"score of {t.name} is a {type(s).__name__}, not a Tensor"
            assert s.shape == t.weight.shape, \
                f"score of {t.name} has shape {tuple(s.shape)}, weight {tuple(t.weight.shape)}"
            assert s.is_floating_point(), f"score of {t.name} has dtype {s.dtype}; scores must be floating point"

    def test_scores_are_finite(self, scorer: Scorer) -> None:
        toy = toy_targets()
        for t, s in zip(toy.targets, scorer.score(toy.targets, toy.ctx)):
            assert torch.isfinite(s).all(), f"score of {t.name} has NaN or infinite entries"

    @pytest.mark.parametrize("keep", [1.0, 0.5])
    def test_passes_the_engine_checks(self, scorer: Scorer, keep: float) -> None:
        """What the engine checks before pruning on the scores: one finite real float tensor per target."""
        from .pruning import apply_masks

        toy = toy_targets()
        if keep < 1.0:
            apply_masks(toy.targets, flatten(_random_masks(toy, keep, seed=5)))
        engine_checks(check_scores, scorer.score(toy.targets, toy.ctx), toy.targets,
                      Component("scorer", f"scorer {type(scorer).__name__}"))

    def test_deterministic_given_the_generator_seed(self, scorer: Scorer) -> None:
        toy = toy_targets()
        first = scorer.score(toy.targets, toy.ctx.renew(7))
        second = scorer.score(toy.targets, toy.ctx.renew(7))
        for t, a, b in zip(toy.targets, first, second):
            assert torch.equal(a, b), f"scores of {t.name} differ between two calls with the same generator seed"

    def test_leaves_the_weights_alone(self, scorer: Scorer) -> None:
        toy = toy_targets()
        before = {k: v.clone() for k, v in toy.network.state_dict().items()}
        scorer.score(toy.targets, toy.ctx)
        for k, v in toy.network.state_dict().items():
            assert torch.equal(v, before[k]), f"score() changed {k}"

    def test_scores_a_pruned_network(self, scorer: Scorer) -> None:
        from .pruning import apply_masks

        toy = toy_targets()
        gen = torch.Generator().manual_seed(3)
        apply_masks(toy.targets, [torch.rand(t.weight.shape, generator=gen) < 0.5 for t in toy.targets])
        scores = scorer.score(toy.targets, toy.ctx)
        assert [tuple(s.shape) for s in scores] == [tuple(t.weight.shape) for t in toy.targets]
        assert all(torch.isfinite(s).all() for s in scores), "scores of a pruned network are not finite"


# -- schedules ------------------------------------------------------------------------------------
class ScheduleContract:
    """Checks a :class:`~ticketforge.protocols.Schedule`. Define a ``schedule`` fixture that prunes (p > 0).

    ``group_names`` are names that :meth:`validate` must accept (a U-Net-sized list by default).
    """

    group_names: Sequence[str] = ("inp", "down.0", "down.1", "down.2", "down.3", "mid", "up.0", "up.1",
                                  "up.2", "up.3", "out")
    rounds: int = 3

    @pytest.fixture
    def schedule(self) -> Schedule:
        pytest.fail(f"{type(self).__name__} must define a `schedule` fixture returning the schedule under test")

    def test_satisfies_protocol(self, schedule: Schedule) -> None:
        assert isinstance(schedule, Schedule), f"{type(schedule).__name__} lacks validate() or prune()"

    def test_validate_accepts_sensible_group_names(self, schedule: Schedule) -> None:
        schedule.validate(list(self.group_names))
        schedule.validate(toy_targets().group_names)

    @pytest.mark.parametrize("keep", [1.0, 0.6])
    def test_bool_masks_of_the_same_layout(self, schedule: Schedule, keep: float) -> None:
        toy = toy_targets()
        masks = _ones(toy) if keep == 1.0 else _random_masks(toy, keep, seed=1)
        new = schedule.prune(grouped_scores(toy), masks)
        assert len(new) == len(masks), f"{len(new)} mask groups for {len(masks)} groups"
        for j, (new_group, old_group) in enumerate(zip(new, masks)):
            assert len(new_group) == len(old_group), f"group {j}: {len(new_group)} masks for {len(old_group)} tensors"
            for n, o in zip(new_group, old_group):
                assert isinstance(n, Tensor) and n.dtype == torch.bool, f"group {j}: masks must be bool tensors"
                assert n.shape == o.shape, f"group {j}: mask shape {tuple(n.shape)} != {tuple(o.shape)}"
                assert n.device == o.device, f"group {j}: mask moved from {o.device} to {n.device}"

    @pytest.mark.parametrize("keep", [1.0, 0.6])
    def test_new_masks_are_subsets_of_the_old(self, schedule: Schedule, keep: float) -> None:
        toy = toy_targets()
        masks = _ones(toy) if keep == 1.0 else _random_masks(toy, keep, seed=2)
        new = schedule.prune(grouped_scores(toy), masks)
        for j, (new_group, old_group) in enumerate(zip(new, masks)):
            for n, o in zip(new_group, old_group):
                revived = int((n & ~o).sum())
                assert revived == 0, f"group {j}: {revived} pruned weights came back (masks must shrink)"

    def test_prunes_over_several_rounds(self, schedule: Schedule) -> None:
        toy = toy_targets()
        masks = _ones(toy)
        counts = [_kept(masks)]
        for k in range(self.rounds):
            masks = schedule.prune(grouped_scores(toy, seed=k), masks)
            counts.append(_kept(masks))
        assert all(a >= b for a, b in zip(counts, counts[1:])), f"kept weights per round went up: {counts}"
        assert counts[-1] < counts[0], f"nothing was pruned in {self.rounds} rounds: {counts}"

    @pytest.mark.parametrize("keep", [1.0, 0.6])
    def test_passes_the_engine_checks(self, schedule: Schedule, keep: float) -> None:
        """What the engine checks before training on the masks, round after round: bool masks of the
        old layout, nested in the old ones, no tensor (or everything) pruned away, and for the built-in
        schedules exactly the count their ratio asks for."""
        toy = toy_targets()
        masks = _ones(toy) if keep == 1.0 else _random_masks(toy, keep, seed=6)
        who = Component("schedule", f"schedule {type(schedule).__name__}")
        for k in range(self.rounds):
            new = schedule.prune(grouped_scores(toy, seed=10 + k), masks)
            engine_checks(check_masks, schedule, new, masks, toy.targets, who)
            masks = new

    def test_pure(self, schedule: Schedule) -> None:
        toy = toy_targets()
        scores, masks = grouped_scores(toy), _random_masks(toy, 0.8, seed=4)
        scores_before, masks_before = _clone(scores), _clone(masks)
        first = schedule.prune(scores, masks)
        assert _same(scores, scores_before), "prune() changed its scores argument"
        assert _same(masks, masks_before), "prune() changed its masks argument"
        second = schedule.prune(scores, masks)
        assert _same([[m.bool() for m in g] for g in first], [[m.bool() for m in g] for g in second]), \
            "prune() gave different masks for the same inputs"

    def test_handles_a_fully_pruned_tensor(self, schedule: Schedule) -> None:
        toy = toy_targets()
        masks = _ones(toy)
        masks[1][1] = torch.zeros_like(masks[1][1])  # fc, in the middle of the "mid" group
        new = schedule.prune(grouped_scores(toy), masks)
        assert not new[1][1].any(), "a fully pruned tensor came back"
        engine_checks(check_masks, schedule, new, masks, toy.targets,
                      Component("schedule", f"schedule {type(schedule).__name__}"))


# -- model specs ----------------------------------------------------------------------------------
def _first_image_shape(inputs: Sequence[Any]) -> tuple[int, ...] | None:
    for x in inputs:
        if isinstance(x, Tensor) and x.dim() == 4:
            return tuple(x.shape)
    return None


class ModelSpecContract:
    """Checks a :class:`~ticketforge.protocols.ModelSpec`. Define a ``spec`` fixture (use a tiny config).

    ``batch_shape`` is the ``[B, C, H, W]`` of a training batch (images as the dataset gives them);
    when it is None, the shape of the first 4-d tensor of ``spec.example_inputs(2)`` stands in for it
    and samples are only checked for their channel count. ``sample_options`` go to ``spec.sample``
    (e.g. a few denoising steps).
    """

    batch_shape: tuple[int, int, int, int] | None = None
    sample_options: dict[str, Any] = {}
    seed: int = 0

    @pytest.fixture
    def spec(self) -> ModelSpec:
        pytest.fail(f"{type(self).__name__} must define a `spec` fixture returning the model spec under test")

    # helpers a subclass may override
    def make_batch(self, spec: ModelSpec) -> Tensor:
        """A random training batch in [0, 1] of :attr:`batch_shape`."""
        shape = self.batch_shape or _first_image_shape(spec.example_inputs(2))
        assert shape is not None, (f"{type(self).__name__}: example_inputs has no [B, C, H, W] tensor; "
                                   f"set batch_shape on the test class")
        return torch.rand(shape, generator=torch.Generator().manual_seed(self.seed))

    def forward_inputs(self, spec: ModelSpec) -> tuple[Any, ...]:
        """``example_inputs(1)``, every float tensor replaced by seeded uniform noise (zeros hide unused weights)."""
        gen = torch.Generator().manual_seed(self.seed + 1)
        return tuple(torch.rand(x.shape, generator=gen, dtype=x.dtype)
                     if isinstance(x, Tensor) and x.is_floating_point() else x for x in spec.example_inputs(1))

    def build(self, spec: ModelSpec) -> nn.Module:
        torch.manual_seed(self.seed)
        return spec.build()

    # the contract
    def test_satisfies_protocol(self, spec: ModelSpec) -> None:
        assert isinstance(spec, ModelSpec), f"{type(spec).__name__} lacks a ModelSpec attribute or method"
        assert isinstance(spec.defaults, TrainingDefaults), "spec.defaults must be a TrainingDefaults"
        assert _NAME.match(spec.name), f"spec.name {spec.name!r} must be lower-case kebab-case"

    def test_config_is_json_serialisable(self, spec: ModelSpec) -> None:
        assert isinstance(spec.config, dict), "spec.config must be a dict of the network's keyword arguments"
        try:
            json.dumps(spec.config)
        except TypeError as exc:
            pytest.fail(f"spec.config is not JSON-serialisable: {exc}")

    def test_build_is_deterministic_under_a_seed(self, spec: ModelSpec) -> None:
        a, b = self.build(spec).state_dict(), self.build(spec).state_dict()
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"build() under the same seed gave different {k}"

    def test_loss_is_a_finite_scalar_with_gradients(self, spec: ModelSpec) -> None:
        network = self.build(spec)
        network.train()
        loss = spec.loss(network, self.make_batch(spec), torch.Generator().manual_seed(0))
        assert isinstance(loss, Tensor) and loss.dim() == 0, "loss() must return a scalar tensor"
        assert torch.isfinite(loss), f"loss is {loss.item()}"
        loss.backward()
        for group in spec.module_groups(network):
            for name, module in group.modules:
                grad = cast(Tensor, module.weight).grad
                assert grad is not None, f"{name}.weight got no gradient from loss()"
                assert torch.isfinite(grad).all(), f"{name}.weight has a non-finite gradient"

    def test_declared_data_shape_is_what_the_loss_takes(self, spec: ModelSpec) -> None:
        """An optional ``data_shape`` (C, H, W): the engine refuses datasets of any other shape, so the
        loss must take it (and agree with :attr:`batch_shape` when that is set)."""
        shape = getattr(spec, "data_shape", None)
        if shape is None:
            pytest.skip("the spec declares no data_shape (the engine then checks no dataset's image shape)")
        assert len(shape) == 3 and all(isinstance(d, int) and d > 0 for d in shape), \
            f"data_shape must be (C, H, W) of positive ints, got {shape!r}"
        if self.batch_shape is not None:
            assert tuple(self.batch_shape[1:]) == tuple(shape), \
                f"data_shape {tuple(shape)} differs from the training batches' {tuple(self.batch_shape[1:])}"
        batch = torch.rand((2, *shape), generator=torch.Generator().manual_seed(self.seed))
        loss = spec.loss(self.build(spec), batch, torch.Generator().manual_seed(0))
        assert torch.isfinite(loss), f"loss on a batch of data_shape {tuple(shape)} is {loss.item()}"

    def test_groups_have_unique_names_and_resolvable_modules(self, spec: ModelSpec) -> None:
        network = self.build(spec)
        groups = spec.module_groups(network)
        assert any(g.modules for g in groups), "module_groups() has no prunable module"
        names = [g.name for g in groups]
        assert len(set(names)) == len(names), f"duplicate group names: {sorted(n for n in names if names.count(n) > 1)}"
        by_name = dict(network.named_modules())
        seen: set[str] = set()
        for g in groups:
            for name, module in g.modules:
                assert name not in seen, f"{name} is in two groups (it would be pruned twice)"
                seen.add(name)
                assert by_name.get(name) is module, f"{name!r} is not the qualified name of its module in the network"

    def test_grouped_modules_are_conv_or_linear(self, spec: ModelSpec) -> None:
        network = self.build(spec)
        for g in spec.module_groups(network):
            for name, module in g.modules:
                assert isinstance(module, _PRUNABLE), \
                    f"{name} in group {g.name} is a {type(module).__name__}; only Conv and Linear weights are pruned"

    def test_forward_uses_the_masked_weights(self, spec: ModelSpec) -> None:
        """Pruning a module changes the output, and each module computes with its (masked) ``.weight``.

        The second half catches weight-standardised convolutions and similar reparametrisations that
        turn pruned zeros back into non-zeros at run time. Costs one forward pass per grouped module.
        """
        network = self.build(spec).eval()
        _perturb(network, self.seed)
        inputs = self.forward_inputs(spec)
        modules = [(name, module) for g in spec.module_groups(network) for name, module in g.modules]
        with torch.no_grad():
            base = _output(network(*inputs))
            for name, module in modules:
                weight = cast(Tensor, module.weight).detach().clone()
                prune.custom_from_mask(module, "weight", torch.zeros_like(weight))
                changed = not torch.equal(_output(network(*inputs)), base)
                prune.remove(module, "weight")
                cast(Tensor, module.weight).copy_(weight)
                assert changed, \
                    f"pruning all of {name}.weight does not change the output: the forward pass does not use it"

            mismatches: list[str] = []

            def check(name: str):
                def hook(module: nn.Module, args: tuple, output: Any) -> None:
                    if len(args) == 1 and isinstance(args[0], Tensor) and isinstance(output, Tensor):
                        expected = _reference_forward(module, args[0])
                        if expected.shape != output.shape or not torch.allclose(output, expected, rtol=1e-4, atol=1e-5):
                            mismatches.append(name)
                return hook

            gen = torch.Generator().manual_seed(self.seed + 3)
            handles = []
            for name, module in modules:  # every module half pruned at once: one forward checks them all
                shape = cast(Tensor, module.weight).shape
                prune.custom_from_mask(module, "weight", torch.rand(shape, generator=gen) < 0.5)
                handles.append(module.register_forward_hook(check(name)))
            network(*inputs)
            for handle in handles:
                handle.remove()
        assert not mismatches, (f"{', '.join(sorted(set(mismatches)))} do not compute with their masked .weight "
                                f"(a reparametrisation such as weight standardisation makes pruned weights non-zero)")

    def test_sample_returns_images_in_unit_range(self, spec: ModelSpec) -> None:
        network = self.build(spec).eval()
        with torch.no_grad():
            x = spec.sample(network, 2, generator=torch.Generator().manual_seed(0), **self.sample_options)
        assert isinstance(x, Tensor) and x.dim() == 4 and x.shape[0] == 2, \
            f"sample(n=2) must return [2, C, H, W], got {tuple(getattr(x, 'shape', ()))}"
        if self.batch_shape is not None:
            assert tuple(x.shape[1:]) == tuple(self.batch_shape[1:]), \
                f"samples are {tuple(x.shape[1:])}, training batches {tuple(self.batch_shape[1:])}"
        else:  # the network's input may be padded: only the channels must agree
            shape = _first_image_shape(spec.example_inputs(2))
            assert shape is None or x.shape[1] == shape[1], \
                f"samples have {x.shape[1]} channels, the network takes {shape[1]}"
        assert torch.isfinite(x).all() and x.min() >= 0 and x.max() <= 1, "samples must be finite and in [0, 1]"


def _perturb(network: nn.Module, seed: int) -> None:
    """Add small seeded noise to every parameter so that zero-initialised layers do not hide others."""
    gen = torch.Generator().manual_seed(seed + 2)
    with torch.no_grad():
        for p in network.parameters():
            if p.is_floating_point():
                p.add_(0.05 * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def _output(out: Any) -> Tensor:
    if isinstance(out, Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    raise AssertionError(f"the network returned {type(out).__name__}; expected a tensor")


def _reference_forward(module: nn.Module, x: Tensor) -> Tensor:
    """What a plain Conv/Linear computes from ``module.weight`` (bypassing any subclass's ``forward``)."""
    weight, bias = cast(Tensor, module.weight), cast("Tensor | None", module.bias)
    if isinstance(module, nn.Conv1d):
        return nn.Conv1d._conv_forward(module, x, weight, bias)
    if isinstance(module, nn.Conv2d):
        return nn.Conv2d._conv_forward(module, x, weight, bias)
    if isinstance(module, nn.Conv3d):
        return nn.Conv3d._conv_forward(module, x, weight, bias)
    return nn.functional.linear(x, weight, bias)


# -- registration records -------------------------------------------------------------------------
class RecordsContract:
    """Checks a plugin's registration hooks. Define a ``plugin`` fixture (the module or object registered).

    Set ``distribution`` to the distribution's name to also check discovery through the installed
    ``ticketforge`` entry point.
    """

    distribution: str | None = None

    @pytest.fixture
    def plugin(self) -> Any:
        pytest.fail(f"{type(self).__name__} must define a `plugin` fixture returning the plugin module")

    @staticmethod
    def records_of(plugin: ModuleType | Any) -> dict[str, list[ComponentRecord]]:
        """The records each registration hook the plugin implements returns, by kind."""
        out = {}
        for kind in KINDS:
            hook = getattr(plugin, f"ticketforge_{kind}", None)
            if hook is not None:
                out[kind] = list(hook() or [])
        return out

    def test_registers_something(self, plugin: Any) -> None:
        assert any(self.records_of(plugin).values()), "the plugin implements no registration hook with records"

    def test_records_are_component_records(self, plugin: Any) -> None:
        for kind, records in self.records_of(plugin).items():
            for r in records:
                assert isinstance(r, ComponentRecord), f"ticketforge_{kind} returned a {type(r).__name__}"
                assert callable(r.factory), f"{kind} {r.name!r}: factory is not callable"

    def test_names_are_kebab_case_and_unique(self, plugin: Any) -> None:
        for kind, records in self.records_of(plugin).items():
            names = [r.name for r in records]
            assert len(set(names)) == len(names), f"duplicate {kind} names: {names}"
            for name in names:
                assert _NAME.match(name), f"{kind} name {name!r} must be lower-case kebab-case"

    def test_summaries_are_one_line(self, plugin: Any) -> None:
        for kind, records in self.records_of(plugin).items():
            for r in records:
                assert r.summary.strip(), f"{kind} {r.name!r} has no summary"
                assert "\n" not in r.summary and len(r.summary) <= 100, \
                    f"{kind} {r.name!r}: the summary must be one line of at most 100 characters"

    def test_options_are_typed_and_accepted_by_the_factory(self, plugin: Any) -> None:
        for kind, records in self.records_of(plugin).items():
            for r in records:
                names = [o.name for o in r.options]
                assert len(set(names)) == len(names), f"{kind} {r.name!r} has duplicate options {names}"
                try:
                    params = inspect.signature(r.factory).parameters
                except (TypeError, ValueError):
                    params = None
                takes_kwargs = params is None or any(p.kind is p.VAR_KEYWORD for p in params.values())
                for o in r.options:
                    assert isinstance(o, Option), f"{kind} {r.name!r}: options must be Option records"
                    assert isinstance(o.type, type), f"{kind} {r.name!r} option {o.name!r}: type must be a type"
                    assert o.default is None or isinstance(o.default, o.type) or \
                        (o.type is float and isinstance(o.default, int) and not isinstance(o.default, bool)), \
                        f"{kind} {r.name!r} option {o.name!r}: default {o.default!r} is not a {o.type.__name__}"
                    assert takes_kwargs or (params is not None and o.name in params), \
                        f"{kind} {r.name!r}: the factory takes no keyword {o.name!r}"

    def test_registers_in_a_registry(self, plugin: Any) -> None:
        from .registry import build_registry

        registry = build_registry(entry_points=False, plugins=[plugin])
        assert not registry.broken, f"broken: {registry.broken}"
        for kind, records in self.records_of(plugin).items():
            assert set(registry.records(kind)) == {r.name for r in records}

    def test_found_through_the_entry_point(self, plugin: Any) -> None:
        if self.distribution is None:
            pytest.skip("set `distribution` on the test class to check entry-point discovery")
        from .registry import build_registry

        registry = build_registry()
        for kind, records in self.records_of(plugin).items():
            found, conflicts = registry.records(kind), registry.conflicts(kind)
            for r in records:
                assert r.name not in conflicts, registry.conflict_message(kind, r.name)
                assert r.name in found, f"{kind} {r.name!r} is not found through the installed entry points " \
                                        f"(is {self.distribution} installed? pip install -e <its folder>)"
                assert found[r.name].plugin == self.distribution, \
                    f"{kind} {r.name!r} comes from {found[r.name].plugin!r}, not {self.distribution!r}"



# -- several processes ------------------------------------------------------------------------------
def free_port() -> int:
    """A free TCP port on the loopback (for a test's process group)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_ranks(script: str | os.PathLike, *args: str, world: int = 2, timeout: float = 120) -> list[tuple[int, str]]:
    """Run ``python script *args`` as ``world`` gloo ranks on the loopback, with the environment torchrun
    would give them; waits for all and returns each rank's (exit code, output)."""
    import subprocess
    import sys

    port = free_port()
    procs = []
    for rank in range(world):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "GLOO_SOCKET_IFNAME": "lo",
               "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, str(script), *map(str, args)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try:
        outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return [(p.returncode, out) for p, out in zip(procs, outputs)]


def load_script(path: str | Path) -> ModuleType:
    """Import a script that is not part of a package (examples/, experiments/) as a module, for tests."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(f"script_{path.parent.name}_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def one_thread() -> Iterator[None]:
    """A fixture body (wrap it with ``pytest.fixture`` at the scope you need): torch on one CPU thread.

    Test tensors are tiny: one thread is as fast, and far faster on a shared, busy CPU, where OpenMP
    threads spin-wait for each other when a core is taken."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

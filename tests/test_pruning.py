"""Mask selection and application: the ratio conventions of the schedules, exactly."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ticketforge.builtins.schedules import GlobalSchedule, IncrementalSchedule, UniformSchedule
from ticketforge.errors import ConfigError
from ticketforge.protocols import PruneTarget
from ticketforge.pruning import apply_masks, prune_groupwise, sparsity_of
from ticketforge.pruning.select import prune_lowest, prune_tensorwise_like


def _groups(sizes, seed=0):
    gen = torch.Generator().manual_seed(seed)
    scores = [[torch.rand(n, generator=gen) for n in group] for group in sizes]
    masks = [[torch.ones(n, dtype=torch.bool) for n in group] for group in sizes]
    return scores, masks


def _kept(group):
    return sum(int(m.sum()) for m in group)


def test_uniform_ladder_follows_one_minus_p_to_the_k():
    scores, masks = _groups([[1000], [400, 600]])
    schedule = UniformSchedule(0.2)
    for k in range(1, 8):
        masks = schedule.prune(scores, masks)
        for group in masks:
            total = sum(m.numel() for m in group)
            assert abs(_kept(group) / total - 0.8 ** k) < 2 / total * k


def test_incremental_group_j_prunes_p_plus_jq_of_its_remaining_weights_exactly():
    sizes = [[500], [300, 200], [1000], [50, 50]]
    scores, masks = _groups(sizes)
    schedule = IncrementalSchedule(0.2, 0.05)
    before = [_kept(g) for g in masks]
    after_masks = schedule.prune(scores, masks)
    for j, (b, group) in enumerate(zip(before, after_masks)):
        assert b - _kept(group) == round((0.2 + 0.05 * j) * b)
    # second round: ratios apply to what remains
    again = schedule.prune(scores, after_masks)
    for j, (g1, g2) in enumerate(zip(after_masks, again)):
        assert _kept(g1) - _kept(g2) == round((0.2 + 0.05 * j) * _kept(g1))


def test_lowest_scores_within_a_group_go_first_across_its_tensors():
    scores = [[torch.tensor([0.1, 5.0, 6.0]), torch.tensor([0.2, 0.3, 7.0])]]
    masks = [[torch.ones(3, dtype=torch.bool), torch.ones(3, dtype=torch.bool)]]
    new = prune_groupwise(scores, masks, [0.5])
    assert new[0][0].tolist() == [False, True, True]
    assert new[0][1].tolist() == [False, False, True]


@pytest.mark.parametrize("levels", [None, 3])  # None: distinct scores; 3: three values, ties everywhere
def test_lowest_live_scores_go_first_with_ties_in_position_order(levels):
    """Selection (not a sort) picks exactly what a stable sort of the live scores picks first."""
    gen = torch.Generator().manual_seed(1)
    for _ in range(300):
        n = int(torch.randint(1, 80, (1,), generator=gen))
        scores = torch.rand(n, generator=gen) if levels is None else torch.randint(levels, (n,), generator=gen).float()
        mask = torch.rand(n, generator=gen) < 0.7
        n_prune = int(torch.randint(0, n + 2, (1,), generator=gen))
        live_at = mask.nonzero().squeeze(1)
        expected = mask.clone()
        expected[live_at[torch.argsort(scores[live_at], stable=True)[:n_prune]]] = False
        assert torch.equal(prune_lowest(scores, mask, n_prune), expected)


@pytest.mark.parametrize("schedule", [UniformSchedule(0.5, within="tensor"), IncrementalSchedule(0.5, 0.0, "tensor")])
def test_within_tensor_takes_the_groups_ratio_from_each_tensor(schedule):
    """A block whose closing layer starts near zero: pooled, it loses that layer first and whole; within
    each tensor, each loses the group's ratio of its own and keeps its largest weights."""
    closing = torch.tensor([1e-10, 3e-10, 2e-10, 4e-10])
    scores = [[torch.tensor([0.5, 0.1, 0.9, 0.3, 0.7, 0.2]), closing]]
    masks = [[torch.ones(6, dtype=torch.bool), torch.ones(4, dtype=torch.bool)]]
    pooled = UniformSchedule(0.5).prune(scores, masks)
    assert pooled[0][1].sum() == 0 and pooled[0][0].sum() == 5
    new = schedule.prune(scores, masks)
    assert new[0][0].tolist() == [True, False, True, False, True, False]
    assert new[0][1].tolist() == [False, True, False, True]
    again = schedule.prune(scores, new)  # the ratio applies to what each tensor has left
    assert again[0][0].tolist() == [False, False, True, False, False, False]  # 3 alive: round(1.5) = 2 go
    assert again[0][1].tolist() == [False, False, False, True]


def test_an_unknown_within_is_refused_saying_what_to_use():
    with pytest.raises(ConfigError, match="use within=group .* or within=tensor"):
        UniformSchedule(0.2, within="layer").validate(["a", "b"])


def test_global_uses_one_threshold_over_all_groups():
    scores = [[torch.tensor([1.0, 2.0, 3.0, 4.0])], [torch.tensor([10.0, 20.0, 30.0, 40.0])]]
    masks = [[torch.ones(4, dtype=torch.bool)], [torch.ones(4, dtype=torch.bool)]]
    new = GlobalSchedule(0.5).prune(scores, masks)
    assert new[0][0].sum() == 0 and new[1][0].all()
    threshold = max(s for g, mg in zip(scores, new) for t, m in zip(g, mg) for s, keep in zip(t, m) if not keep)
    survivors = [s for g, mg in zip(scores, new) for t, m in zip(g, mg) for s, keep in zip(t, m) if keep]
    assert min(survivors) > threshold


def test_masks_are_monotone_and_pruned_weights_never_come_back():
    scores, masks = _groups([[300], [200]])
    schedule = IncrementalSchedule(0.3, 0.1)
    for k in range(6):
        scores = [[torch.rand(m.shape, generator=torch.Generator().manual_seed(k)) for m in g] for g in masks]
        new = schedule.prune(scores, masks)
        for old_g, new_g in zip(masks, new):
            for old, nw in zip(old_g, new_g):
                assert not (nw & ~old).any()
        masks = new


@pytest.mark.parametrize("p,q,bad_group", [(60.0, 10.0, 4), (99.0, 1.0, 1), (100.0, 0.0, 0)])
def test_a_ratio_reaching_100_percent_is_refused_naming_the_group(p, q, bad_group):
    names = [f"block{j}" for j in range(6)]
    with pytest.raises(ConfigError, match=rf"group {bad_group} \(block{bad_group}\)"):
        IncrementalSchedule(p / 100, q / 100).validate(names)


def test_global_schedule_refuses_impossible_ratio():
    with pytest.raises(ConfigError):
        GlobalSchedule(1.0).validate(["a"])


def test_random_prune_matches_per_tensor_counts_and_nests():
    reference = [[torch.rand(100) > 0.3, torch.rand(50) > 0.5]]
    old = [[torch.ones(100, dtype=torch.bool), torch.ones(50, dtype=torch.bool)]]
    new = prune_tensorwise_like(reference, old, torch.Generator().manual_seed(0))
    for ref, nw in zip(reference[0], new[0]):
        assert int(nw.sum()) == int(ref.sum())
    assert not torch.equal(new[0][0], reference[0][0])


def test_apply_masks_keeps_one_bool_mask_per_tensor_and_zeroes_pruned_weights():
    conv = nn.Conv2d(2, 3, 3)
    target = [PruneTarget("conv", conv, 0, "g")]
    for k in range(5):
        mask = torch.rand(conv.weight.shape) > 0.1 * (k + 1)
        apply_masks(target, [mask])
        assert conv.weight_mask.dtype == torch.bool
        assert torch.equal(conv.weight_mask, mask)
        assert (conv.weight_orig[~mask] == 0).all() and (conv.weight[~mask] == 0).all()
        hooks = list(conv._forward_pre_hooks.values())
        assert len(hooks) == 1 and type(hooks[0]).__name__ == "CustomFromMask"
    assert math.isclose(sparsity_of([torch.tensor([True, False, False, True])]), 0.5)


def test_new_masks_take_effect_in_a_compiled_network_without_recompiling():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1))
    targets = [PruneTarget("0", net[0], 0, "a"), PruneTarget("2", net[2], 1, "b")]
    apply_masks(targets, [torch.ones_like(t.module.weight, dtype=torch.bool) for t in targets])
    torch._dynamo.reset()
    from torch._dynamo.testing import CompileCounter
    counter = CompileCounter()
    compiled = torch.compile(net, backend=counter)
    x = torch.rand(2, 1, 6, 6)
    for k in range(3):
        masks = [torch.rand(t.module.weight.shape, generator=torch.Generator().manual_seed(k)) > 0.3 * (k + 1)
                 for t in targets]
        apply_masks(targets, masks)
        with torch.no_grad():
            expect = nn.functional.conv2d(torch.relu(nn.functional.conv2d(x, net[0].weight_orig * masks[0], net[0].bias, padding=1)),
                                          net[2].weight_orig * masks[1], net[2].bias, padding=1)
            assert torch.allclose(compiled(x), expect, atol=1e-6)
    assert counter.frame_count == 1


def test_targets_see_the_current_weights_between_forward_passes():
    conv = nn.Conv2d(1, 2, 3)
    target = PruneTarget("conv", conv, 0, "g")
    mask = torch.rand(conv.weight.shape, generator=torch.Generator().manual_seed(0)) > 0.5
    apply_masks([target], [mask])
    with torch.no_grad():
        conv.weight_orig.add_(1.0)  # what an optimizer step does; no forward pass refreshes `weight` yet
    assert torch.equal(target.weight, conv.weight_orig * mask)
    assert (target.weight[~mask] == 0).all()


def test_bf16_sampling_wrapper_returns_float32_close_to_the_network():
    from ticketforge.engine.sampling import Autocast, sampling_network

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.SiLU(), torch.nn.Conv2d(8, 1, 3, padding=1))
    x = torch.randn(4, 1, 8, 8)
    wrapped, precision = sampling_network(net, "bf16", False, torch.device("cpu"))
    assert precision == "bf16" and isinstance(wrapped, Autocast)
    out = wrapped(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, net(x), rtol=0.05, atol=0.05)
    assert not torch.equal(out, net(x))  # it did run in bf16
    same, precision = sampling_network(net, "auto", False, torch.device("cpu"))
    assert same is net and precision == "fp32"


def test_sampling_network_moves_weights_to_channels_last_when_asked_and_not_on_a_cpu_by_default():
    from ticketforge.engine.sampling import sampling_network

    def conv_layout_is_channels_last(net: nn.Module) -> bool:
        return net[0].weight.is_contiguous(memory_format=torch.channels_last) and not net[0].weight.is_contiguous()

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.SiLU(), nn.Conv2d(8, 3, 3, padding=1))
    x = torch.randn(2, 3, 8, 8)
    before = net(x)
    sampling_network(net, "fp32", False, torch.device("cpu"))  # default: only when compiling on a GPU
    assert not conv_layout_is_channels_last(net)
    same, _ = sampling_network(net, "fp32", False, torch.device("cpu"), channels_last=True)
    assert same is net and conv_layout_is_channels_last(net)  # in place, the same module
    torch.testing.assert_close(net(x), before)  # a layout, not a change of the function

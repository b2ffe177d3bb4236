"""Which weights to prune: pure functions ``(scores, masks, ratios) -> masks``.

A ratio applies to the weights still unpruned (open_lth's ``pruning_fraction``): pruning 20% twice
leaves 64%. Already-pruned weights stay pruned; exactly ``round(ratio * remaining)`` more are pruned,
lowest scores first (ties broken by position, so the result is deterministic).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ..protocols import Grouped


def prune_count(ratio: float, remaining: int) -> int:
    """How many of ``remaining`` live weights a ratio prunes: ``round(ratio * remaining)``."""
    return int(round(ratio * remaining))


def prune_lowest(scores: Tensor, mask: Tensor, n_prune: int) -> Tensor:
    """Prune the ``n_prune`` lowest-scored live entries of one tensor (ties broken by position).

    Entries already pruned stay pruned and are out of the competition.
    """
    flat_mask = mask.reshape(-1).bool().cpu()
    new = flat_mask.clone()
    if n_prune > 0:
        live_at = flat_mask.nonzero().squeeze(1)
        live = scores.detach().reshape(-1).double().cpu()[live_at]
        new[live_at[_lowest(live, min(n_prune, live.numel()))]] = False
    return new.reshape(mask.shape).to(mask.device)


def _lowest(values: Tensor, n: int) -> Tensor:
    """Positions of the ``n`` lowest of ``values``, ties taken in position order: what a stable sort's
    first ``n`` are, found by selection (linear time) rather than a sort of every weight."""
    if n == 0 or n == values.numel() or not torch.isfinite(values).all():  # NaN/inf: the sort's order exactly
        return torch.argsort(values, stable=True)[:n]
    threshold = torch.kthvalue(values, n).values
    below = values < threshold
    ties = (values == threshold).nonzero().squeeze(1)
    below[ties[:n - int(below.sum())]] = True
    return below.nonzero().squeeze(1)


def _prune_pooled(scores: Sequence[Tensor], masks: Sequence[Tensor], ratio: float) -> list[Tensor]:
    """Prune ``ratio`` of the remaining weights of several tensors against one pooled threshold."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"pruning ratio must be in [0, 1), got {ratio}")
    if not scores:
        return []
    flat_masks = torch.cat([m.reshape(-1).bool().cpu() for m in masks])
    flat_scores = torch.cat([s.detach().reshape(-1).double().cpu() for s in scores])
    new_flat = prune_lowest(flat_scores, flat_masks, prune_count(ratio, int(flat_masks.sum())))
    out, start = [], 0
    for m in masks:
        out.append(new_flat[start:start + m.numel()].reshape(m.shape).to(m.device))
        start += m.numel()
    return out


def prune_groupwise(scores: Grouped, masks: Grouped, ratios: Sequence[float]) -> Grouped:
    """Prune ``ratios[j]`` of the remaining weights of group j, pooling the group's tensors."""
    _check_lengths(scores, masks, ratios)
    return [_prune_pooled(s, m, r) for s, m, r in zip(scores, masks, ratios)]


def prune_tensorwise(scores: Grouped, masks: Grouped, ratios: Sequence[float]) -> Grouped:
    """Prune ``ratios[j]`` of the remaining weights of each tensor of group j, each tensor on its own."""
    _check_lengths(scores, masks, ratios)
    return [[_prune_pooled([t], [m], r)[0] for t, m in zip(s, ms)] for s, ms, r in zip(scores, masks, ratios)]


def _check_lengths(scores: Grouped, masks: Grouped, ratios: Sequence[float]) -> None:
    if not (len(scores) == len(masks) == len(ratios)):
        raise ValueError(f"{len(scores)} score groups, {len(masks)} mask groups, {len(ratios)} ratios")


def prune_global(scores: Grouped, masks: Grouped, ratio: float) -> Grouped:
    """Prune ``ratio`` of all remaining weights against one threshold across every group."""
    flat_s = [s for group in scores for s in group]
    flat_m = [m for group in masks for m in group]
    pruned = _prune_pooled(flat_s, flat_m, ratio)
    out, i = [], 0
    for group in masks:
        out.append(pruned[i:i + len(group)])
        i += len(group)
    return out


def prune_tensorwise_like(reference: Grouped, masks: Grouped, generator: torch.Generator) -> Grouped:
    """Random masks, nested in ``masks``, with exactly the per-tensor counts of ``reference``.

    The ``random-prune`` baseline: the same sparsity per tensor as the ticket, random positions.
    """
    out = []
    for ref_group, mask_group in zip(reference, masks):
        new_group = []
        for ref, mask in zip(ref_group, mask_group):
            n_prune = int(mask.sum()) - int(ref.sum())
            noise = torch.rand(mask.shape, generator=generator, dtype=torch.float64)
            new_group.append(prune_lowest(noise, mask, max(n_prune, 0)))
        out.append(new_group)
    return out

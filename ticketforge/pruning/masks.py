"""Masks applied through ``torch.nn.utils.prune``, one reparametrization per tensor at a time.

Iterative ``prune`` calls stack ``PruningContainer``s that each keep a mask copy, so memory grows
every round. Here each tensor gets one ``custom_from_mask`` reparametrization, and later rounds
overwrite its mask in place: no stacking, no new hooks, and a ``torch.compile``d network (or its
CUDA graphs) sees the new masks without recompiling. The mask buffer is stored as ``bool`` (1 byte per weight; the
prune hook computes ``weight_orig * weight_mask``, which promotes it), and ``weight_orig`` is zeroed
where the mask is off so that pruned entries are exactly zero everywhere, optimiser or not.
"""

from __future__ import annotations

from typing import Sequence, cast

import torch
from torch import Tensor, nn
from torch.nn.utils import prune

from ..protocols import PruneTarget


def is_pruned(module: nn.Module, name: str = "weight") -> bool:
    """Whether ``module.<name>`` is currently reparametrized by torch.nn.utils.prune."""
    return hasattr(module, f"{name}_mask") and hasattr(module, f"{name}_orig")


def _masked(module: nn.Module) -> Tensor:
    """``weight_orig * weight_mask`` of a pruned module."""
    return cast(Tensor, module.weight_orig) * cast(Tensor, module.weight_mask)


def effective_weight(module: nn.Module) -> Tensor:
    """The weight the next forward pass uses: ``weight_orig * weight_mask`` when pruned.

    The ``weight`` attribute itself is refreshed only by the forward pre-hook, so after an optimizer
    step or a load it lags behind ``weight_orig``; read weights through this function instead.
    """
    if is_pruned(module):
        return _masked(module)
    return cast(Tensor, module.weight)


@torch.no_grad()
def refresh_pruned_weights(network: nn.Module) -> None:
    """Recompute every pruned ``weight`` without autograd history.

    The prune hook stores ``weight`` on the module at each forward, which keeps that forward's
    autograd graph (and its gradient accumulators, bound to the stream they ran on) alive until the
    next one; CUDA graph capture wants none left over from the eager warm-up steps.
    """
    for module in network.modules():
        if is_pruned(module):
            module.weight = _masked(module)


def _single_custom_mask(module: nn.Module) -> bool:
    """Whether the module carries exactly one ``custom_from_mask`` reparametrization with a bool mask."""
    hooks = [h for h in module._forward_pre_hooks.values() if isinstance(h, prune.BasePruningMethod)]
    return (len(hooks) == 1 and isinstance(hooks[0], prune.CustomFromMask)
            and getattr(module, "weight_mask", None) is not None
            and cast(Tensor, module.weight_mask).dtype == torch.bool)


@torch.no_grad()
def apply_masks(targets: Sequence[PruneTarget], masks: Sequence[Tensor]) -> None:
    """Apply one bool mask per target, replacing whatever reparametrization was there."""
    if len(targets) != len(masks):
        raise ValueError(f"{len(targets)} targets but {len(masks)} masks")
    for t, mask in zip(targets, masks):
        module = t.module
        shape = cast(Tensor, module.weight).shape
        if mask.shape != shape:
            raise ValueError(f"mask of {t.name} has shape {tuple(mask.shape)}, weight {tuple(shape)}")
        if _single_custom_mask(module):
            cast(Tensor, module.weight_mask).copy_(mask)
            cast(Tensor, module.weight_orig).mul_(cast(Tensor, module.weight_mask))
            module.weight = _masked(module)
            continue
        if is_pruned(module):
            prune.remove(module, "weight")
        weight = cast(Tensor, module.weight)
        mask = mask.to(device=weight.device, dtype=torch.bool)
        weight.mul_(mask)
        prune.custom_from_mask(module, "weight", mask)
        # custom_from_mask stores a float copy; keep the bool one (4x less memory).
        t.module.weight_mask = mask
        t.module.weight = cast(Tensor, t.module.weight_orig) * mask


def sparsity_of(masks: Sequence[Tensor]) -> float:
    """Fraction of entries that are pruned (0.0 for no entries)."""
    total = sum(m.numel() for m in masks)
    kept = sum(int(m.sum()) for m in masks)
    return 0.0 if total == 0 else 1.0 - kept / total

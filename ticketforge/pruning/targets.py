"""Prune targets from a model spec's module groups, the per-group bookkeeping of a round, and a
network built with its targets, masked and loaded in one place (engine, branches, api, export)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Sequence, cast

import torch
from torch import Tensor, nn

from ..protocols import Grouped, ModelSpec, ModuleGroup, PruneTarget
from .masks import apply_masks
from .state import load_plain_state_dict


def fallback_groups(network: nn.Module) -> list[ModuleGroup]:
    """One group per Conv/Linear in registration order (for specs without their own grouping)."""
    return [ModuleGroup(name, [(name, m)]) for name, m in network.named_modules()
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))]


def module_groups(spec: ModelSpec, network: nn.Module) -> list[ModuleGroup]:
    """The spec's groups with empty ones dropped, so group indices count pruned blocks only."""
    groups = spec.module_groups(network) if hasattr(spec, "module_groups") else fallback_groups(network)
    return [g for g in groups if g.modules]


def prune_targets(groups: Sequence[ModuleGroup]) -> list[PruneTarget]:
    """Every pruned weight in forward order, tagged with its group."""
    return [PruneTarget(name, module, j, g.name) for j, g in enumerate(groups) for name, module in g.modules]


def group_tensors(targets: Sequence[PruneTarget], tensors: Sequence[Tensor]) -> Grouped:
    """Split a flat per-target list into per-group lists."""
    n_groups = max((t.group for t in targets), default=-1) + 1
    out: Grouped = [[] for _ in range(n_groups)]
    for t, x in zip(targets, tensors):
        out[t.group].append(x)
    return out


def flatten(grouped: Grouped) -> list[Tensor]:
    return [x for group in grouped for x in group]


def all_kept(targets: Sequence[PruneTarget]) -> list[Tensor]:
    """Masks that prune nothing (round 0's), one per target."""
    return [torch.ones_like(cast(Tensor, t.module.weight), dtype=torch.bool) for t in targets]


def by_name(targets: Sequence[PruneTarget], tensors: Sequence[Tensor]) -> dict[str, Tensor]:
    """A per-target list as the files hold it: target name -> tensor."""
    return {t.name: x for t, x in zip(targets, tensors)}


def mask_digest(masks: Sequence[Tensor]) -> str:
    """sha256 of the masks in target order: equal digests mean identical tickets."""
    h = hashlib.sha256()
    for m in masks:
        h.update(m.detach().bool().cpu().numpy().tobytes())
    return h.hexdigest()


def group_summary(groups: Sequence[ModuleGroup], targets: Sequence[PruneTarget], masks: Sequence[Tensor]) -> list[dict[str, Any]]:
    """Per-group ``{"index", "name", "params", "sparsity"}`` as ``inspect --json`` shows it."""
    out = []
    for j, g in enumerate(groups):
        ms = [m for t, m in zip(targets, masks) if t.group == j]
        params = sum(m.numel() for m in ms)
        kept = sum(int(m.sum()) for m in ms)
        out.append({"index": j, "name": g.name, "params": params,
                    "sparsity": 0.0 if params == 0 else 1.0 - kept / params})
    return out


@dataclass
class PrunableNetwork:
    """A model's network with its module groups (empty ones dropped) and prune targets."""

    network: nn.Module
    groups: list[ModuleGroup]
    targets: list[PruneTarget]

    @classmethod
    def build(cls, spec: ModelSpec) -> "PrunableNetwork":
        """``spec.build()`` (in the current RNG state and default device) and its targets."""
        network = spec.build()
        groups = module_groups(spec, network)
        return cls(network, groups, prune_targets(groups))

    def load(self, masks: Sequence[Tensor], weights: dict[str, Tensor], *, source: str,
             advice: str = "restore it, or start the run over with --fresh") -> nn.Module:
        """Apply one mask per target, then load ``weights`` (plain layout; see
        :func:`~ticketforge.pruning.state.load_plain_state_dict` for ``source`` and ``advice``)."""
        apply_masks(self.targets, masks)
        load_plain_state_dict(self.network, weights, source=source, advice=advice)
        return self.network

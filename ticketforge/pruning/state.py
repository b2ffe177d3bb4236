"""State dicts in the plain layout of an unpruned model (``conv.weight``, not ``weight_orig``).

Stored weights are loadable into a fresh model without the pruning reparametrization, and into a
pruned one (the value goes to ``weight_orig`` and stays masked).
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor, nn

from ..errors import CheckpointError
from .masks import is_pruned

_REPARAM = ("weight_orig", "weight_mask")


def _plain_entries(network: nn.Module) -> Iterator[tuple[str, Tensor]]:
    """(plain key, tensor as the forward pass sees it) for every parameter and persistent buffer."""
    for mod_name, module in network.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        pruned = is_pruned(module)
        for name, param in module.named_parameters(recurse=False):
            if pruned and name == "weight_orig":
                yield prefix + "weight", param.detach() * module.weight_mask
            else:
                yield prefix + name, param.detach()
        non_persistent = getattr(module, "_non_persistent_buffers_set", set())
        for name, buf in module.named_buffers(recurse=False):
            if name not in non_persistent and not (pruned and name in _REPARAM):
                yield prefix + name, buf.detach()


def plain_state_dict(network: nn.Module) -> dict[str, Tensor]:
    """Every parameter and persistent buffer under its plain name, masks applied, on the CPU."""
    return {key: value.cpu().contiguous().clone() for key, value in _plain_entries(network)}


@torch.no_grad()
def load_plain_state_dict(network: nn.Module, state: dict[str, Tensor], *, source: str = "weights") -> None:
    """Copy ``state`` into ``network`` (pruned or not); a foreign layout is a :class:`CheckpointError`."""
    expected = {key for key, _ in _plain_entries(network)}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise CheckpointError(f"{source} do not belong to this model ({what}, "
                              f"{len(missing)} missing, {len(unexpected)} unexpected keys)")
    modules = dict(network.named_modules())
    for key, value in state.items():
        mod_name, _, attr = key.rpartition(".")
        module = modules[mod_name]
        pruned = attr == "weight" and is_pruned(module)
        target = module.weight_orig if pruned else getattr(module, attr)
        if target.shape != value.shape:
            raise CheckpointError(f"{source}: {key} has shape {tuple(value.shape)}, the model expects "
                                  f"{tuple(target.shape)} (weights of another model configuration)")
        target.copy_(value)
        if pruned:
            target.mul_(module.weight_mask)
            # ``weight`` is otherwise refreshed only by the next forward's pre-hook.
            module.weight = module.weight_orig * module.weight_mask

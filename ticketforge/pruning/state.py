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
        non_persistent: set[str] = getattr(module, "_non_persistent_buffers_set", set())
        for name, buf in module.named_buffers(recurse=False):
            if name not in non_persistent and not (pruned and name in _REPARAM):
                yield prefix + name, buf.detach()


def parameter_keys(network: nn.Module) -> set[str]:
    """The plain keys of the network's parameters (``weight_orig`` counts as ``weight``), not its buffers."""
    keys = set()
    for mod_name, module in network.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        for name, _ in module.named_parameters(recurse=False):
            keys.add(prefix + ("weight" if name == "weight_orig" else name))
    return keys


def expected_entries(network: nn.Module) -> dict[str, tuple[Tensor, bool]]:
    """Plain key -> (the network's tensor, whether it is a parameter): what a weights file must match."""
    params = parameter_keys(network)
    return {key: (value, key in params) for key, value in _plain_entries(network)}


def value_problem(key: str, value: Tensor, expected: Tensor, parameter: bool) -> str | None:
    """Why ``value`` cannot stand for the model's entry ``key`` (None when it can).

    Shapes must agree, a floating-point entry must stay floating point (a copy would cast it), and a
    parameter must be finite: NaN weights train and sample NaN without any error.
    """
    if tuple(value.shape) != tuple(expected.shape):
        return f"{key} has shape {tuple(value.shape)}, the model's {tuple(expected.shape)}"
    if expected.is_floating_point() and not value.is_floating_point():
        return f"{key} has dtype {value.dtype}, not a floating-point dtype"
    if parameter:
        bad = int((~torch.isfinite(value)).sum())
        if bad:
            return f"{key} has {bad} NaN or infinite values of {value.numel()}"
    return None


def plain_state_dict(network: nn.Module) -> dict[str, Tensor]:
    """Every parameter and persistent buffer under its plain name, masks applied, on the CPU."""
    return {key: value.cpu().contiguous().clone() for key, value in _plain_entries(network)}


@torch.no_grad()
def load_plain_state_dict(network: nn.Module, state: dict[str, Tensor], *, source: str = "weights",
                          advice: str = "restore it, or start the run over with --fresh") -> None:
    """Copy ``state`` into ``network`` (pruned or not); a foreign layout, or a value the model cannot take
    (see :func:`value_problem`), is a :class:`CheckpointError` naming ``source`` and ending in ``advice``."""
    expected = {key for key, _ in _plain_entries(network)}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise CheckpointError(f"{source} do not belong to this model ({what}, "
                              f"{len(missing)} missing, {len(unexpected)} unexpected keys)")
    params = parameter_keys(network)
    modules = dict(network.named_modules())
    places = []
    for key, value in state.items():  # every entry is checked before any is copied: no half-loaded network
        mod_name, _, attr = key.rpartition(".")
        module = modules[mod_name]
        pruned = attr == "weight" and is_pruned(module)
        target = module.weight_orig if pruned else getattr(module, attr)
        if target.shape != value.shape:
            raise CheckpointError(f"{source}: {key} has shape {tuple(value.shape)}, the model expects "
                                  f"{tuple(target.shape)} (weights of another model configuration)")
        problem = value_problem(key, value, target, key in params)
        if problem:
            raise CheckpointError(f"{source} is damaged ({problem}): {advice}")
        places.append((module, pruned, target, value))
    for module, pruned, target, value in places:
        target.copy_(value)
        if pruned:
            target.mul_(module.weight_mask)
            # ``weight`` is otherwise refreshed only by the next forward's pre-hook.
            module.weight = module.weight_orig * module.weight_mask

"""The DDPM U-Net's module groups: its blocks in forward order ("conventional blocks in U-Net")."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from torch import nn

from ticketforge.protocols import ModuleGroup

if TYPE_CHECKING:
    from .unet import UNet
    from .unet_blocks import Level

PRUNABLE = (nn.Conv2d, nn.Linear)


def _prunable(prefix: str, module: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every Conv2d/Linear under ``module`` with its qualified name; registration order is the
    call order in this U-Net (conv1, temb_proj, conv2, skip; q, k, v, proj_out)."""
    return [(f"{prefix}.{name}" if name else prefix, m) for name, m in module.named_modules() if isinstance(m, PRUNABLE)]


def unet_module_groups(network: nn.Module, *, prune_input_conv: bool = True,
                       prune_output_conv: bool = True) -> list[ModuleGroup]:
    """Groups of a :class:`~ticketforge_ddpm.unet.UNet`, named by module path, in forward order:

    ``time_embed``, ``conv_in``, then per down level ``down.{l}.blocks.{i}`` (a ResBlock and its
    attention) and ``down.{l}.downsample``, then ``mid`` (ResBlock, attention, ResBlock), then per
    up level (deepest first) ``up.{l}.blocks.{i}`` and ``up.{l}.upsample``, and ``conv_out``.
    ``conv_in``/``conv_out`` are left out when their pruning is off. Norms and biases never appear.
    A DDP or ``torch.compile`` wrapper is looked through; names are relative to the U-Net itself.
    """
    while hasattr(network, "module") or hasattr(network, "_orig_mod"):  # DDP / torch.compile
        network = getattr(network, "module", None) or cast(nn.Module, network._orig_mod)
    unet = cast("UNet", network)
    groups = [ModuleGroup("time_embed", _prunable("time_embed", unet.time_embed))]
    if prune_input_conv:
        groups.append(ModuleGroup("conv_in", [("conv_in", unet.conv_in)]))
    groups += _path_groups("down", unet.down)
    groups.append(ModuleGroup("mid", _prunable("mid", unet.mid)))
    groups += _path_groups("up", unet.up)
    if prune_output_conv:
        groups.append(ModuleGroup("conv_out", [("conv_out", unet.conv_out)]))
    return groups


def _path_groups(path: str, levels: nn.ModuleDict) -> list[ModuleGroup]:
    """One group per block and per resampler of the down or up path, in forward order."""
    groups = []
    for level_name, module in levels.items():  # ModuleDict order is forward order
        level = cast("Level", module)
        for i, block in enumerate(level.blocks):
            name = f"{path}.{level_name}.blocks.{i}"
            groups.append(ModuleGroup(name, _prunable(name, block)))
        resample = getattr(level, level.resample_name)
        if resample is not None:
            name = f"{path}.{level_name}.{level.resample_name}"
            groups.append(ModuleGroup(name, _prunable(name, resample)))
    return groups

"""The network that sampling runs: a chosen precision, optionally compiled with CUDA graphs.

Sampling is a forward pass repeated (DDIM 100: a hundred times per image), so the training step's
means apply: bf16 autocast and ``torch.compile(mode="reduce-overhead")``, whose CUDA graphs replay each
denoising step, and channels-last weights (docs/performance.md: about 3.3x eager TF32 on an H100). The
evaluators' own featurizers are not touched: only the denoiser is wrapped.
"""

from __future__ import annotations

import warnings
from typing import Any, cast

import torch
from torch import nn

from ..errors import TicketforgeWarning
from ..progress import message
from .engine import cpu_compile_warning, resolve_precision, set_matmul_precision


class Autocast(nn.Module):
    """``network`` run under bf16 autocast, its output returned as float32 (samplers update in float32)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        device_type = next(self.network.parameters()).device.type
        with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
            return self.network(*args, **kwargs).float()


def sampling_network(network: nn.Module, precision: str, compile: bool, device: torch.device,
                     channels_last: bool | None = None) -> tuple[nn.Module, str]:
    """``network`` ready to sample with, and the resolved precision (``auto``: TF32 on a GPU, FP32 on a CPU).

    Sets the process's matmul precision (TF32 on for ``tf32`` and ``bf16``). ``channels_last`` (by
    default: when compiling on a GPU) moves ``network``'s convolution weights, in place, to the layout
    cuDNN computes in, which spares a transpose before and after every convolution (measured on an
    H100: compiled bf16 sampling 10% faster on cifar10, 15% on mnist, docs/performance.md).
    """
    resolved = resolve_precision(precision, device)
    set_matmul_precision(resolved)
    if channels_last if channels_last is not None else (compile and device.type == "cuda"):
        network.to(memory_format=torch.channels_last)
    net: nn.Module = Autocast(network) if resolved == "bf16" else network
    if compile:
        warning = cpu_compile_warning(device, "the denoiser")
        if warning:
            warnings.warn(warning, TicketforgeWarning, stacklevel=2)
        message("compiling the denoiser (the first sampling steps take longer)")
        net = cast(nn.Module, torch.compile(net, mode="reduce-overhead" if device.type == "cuda" else None))
    return net, resolved

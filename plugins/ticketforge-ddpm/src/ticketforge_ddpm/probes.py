"""Noisy inputs to probe a denoiser with: real images diffused to one timestep, drawn from a seed, so
that two networks (or one at several timesteps) see exactly the same ``(x_t, t)``."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .diffusion import to_model_space

__all__ = ["noisy_inputs"]


def noisy_inputs(spec: Any, dataset: Any, n: int, timestep: int, *, seed: int = 0,
                 device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """``(x_t, t)`` for ``spec``'s network: ``n`` images of ``dataset`` (``(image, label)`` items in
    [0, 1]) picked by ``seed``, in the network's input space, diffused to model timestep ``timestep``
    (0-based) with noise drawn from ``seed``. The images and the noise do not depend on ``timestep``."""
    timesteps = spec.diffusion.timesteps
    if not 0 <= timestep < timesteps:
        raise ValueError(f"timestep {timestep} is outside 0..{timesteps - 1}")
    if not 1 <= n <= len(dataset):
        raise ValueError(f"cannot pick {n} images from a dataset of {len(dataset)}")
    gen = torch.Generator().manual_seed(seed)
    picked = torch.randperm(len(dataset), generator=gen)[:n].tolist()
    images = torch.stack([dataset[i][0] for i in picked])
    x0 = to_model_space(images, spec.config["image_size"], pad_value=spec.config["pad_value"])
    noise = torch.randn(x0.shape, generator=gen)
    t = torch.full((n,), timestep, dtype=torch.long)
    x_t = spec.diffusion.q_sample(x0, t, noise)
    return x_t.to(device), t.to(device)

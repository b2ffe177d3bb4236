"""PNG figures: a grid of samples and a denoising strip (x_T ... x_0, one row per sample)."""

from __future__ import annotations

import math
from pathlib import Path

from torch import Tensor

# torchvision is imported where it is used: loading it (and the torch._dynamo it pulls in) takes as long
# as torch itself, and every ``ticketforge`` command loads this plugin, most of them drawing nothing.


def save_grid(images: Tensor, path: str | Path, *, nrow: int | None = None, padding: int = 2) -> Path:
    """Save ``images`` ``[n, C, H, W]`` in [0, 1] as one PNG grid (square-ish by default)."""
    from torchvision.utils import save_image

    path = Path(path)
    nrow = nrow or math.ceil(math.sqrt(images.shape[0]))
    save_image(images.detach().float().cpu(), path, nrow=nrow, padding=padding, format="png")
    return path


def save_strip(trajectory: Tensor, path: str | Path, *, padding: int = 2) -> Path:
    """Save a denoising strip: ``trajectory`` ``[frames, n, C, H, W]`` in [0, 1] becomes ``n`` rows
    of ``frames`` images each, noisiest on the left."""
    frames, n = trajectory.shape[:2]
    rows = trajectory.detach().float().cpu().transpose(0, 1).reshape(frames * n, *trajectory.shape[2:])
    return save_grid(rows, path, nrow=frames, padding=padding)


def grid_image(images: Tensor, *, nrow: int | None = None, padding: int = 2) -> Tensor:
    """The grid as one ``[C, H, W]`` tensor (for loggers that take images, not files)."""
    from torchvision.utils import make_grid

    nrow = nrow or math.ceil(math.sqrt(images.shape[0]))
    return make_grid(images.detach().float().cpu(), nrow=nrow, padding=padding)

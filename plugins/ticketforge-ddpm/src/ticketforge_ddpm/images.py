"""PNG figures: a grid of samples and a denoising strip (x_T ... x_0, one row per sample).

Both may be enlarged (nearest-neighbour, so every generated pixel stays a sharp block: a 28x28 digit
is a smudge at its own size) and carry a caption row above the images; a strip may also label each
of its columns (the timestep of that frame).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

TEXT_SIZE = 14  # pixels; readable at any scale of the images below it
BAND = TEXT_SIZE + 8  # height of a caption or label row


def grid_image(images: Tensor, *, nrow: int | None = None, padding: int = 2) -> Tensor:
    """The grid as one ``[C, H, W]`` tensor (for loggers that take images, not files)."""
    from torchvision.utils import make_grid  # here, not at the top: importing the model's spec needs no torchvision

    nrow = nrow or math.ceil(math.sqrt(images.shape[0]))
    return make_grid(images.detach().float().cpu(), nrow=nrow, padding=padding)


def _to_pil(grid: Tensor, scale: int) -> Image.Image:
    """``[C, H, W]`` in [0, 1] -> an RGB image ``scale`` times larger (nearest neighbour)."""
    pixels = grid.clamp(0, 1).mul(255).round().to(torch.uint8)
    if scale > 1:
        pixels = pixels.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
    return Image.fromarray(pixels.permute(1, 2, 0).numpy()).convert("RGB")


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=TEXT_SIZE)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _with_text(body: Image.Image, caption: str | None, labels: Sequence[tuple[int, str]] = ()) -> Image.Image:
    """``body`` below a caption row (left-aligned) and a row of ``labels`` (text centred on x)."""
    rows = (caption is not None) + bool(labels)
    if not rows:
        return body
    out = Image.new("RGB", (body.width, body.height + rows * BAND), "white")
    draw, font, y = ImageDraw.Draw(out), _font(), 0
    if caption is not None:
        draw.text((4, y + BAND // 2), caption, fill="black", font=font, anchor="lm")
        y += BAND
    for x, text in labels:
        draw.text((x, y + BAND // 2), text, fill="black", font=font, anchor="mm")
    out.paste(body, (0, rows * BAND))
    return out


def save_grid(images: Tensor, path: str | Path, *, nrow: int | None = None, padding: int = 2, scale: int = 1,
              caption: str | None = None) -> Path:
    """Save ``images`` ``[n, C, H, W]`` in [0, 1] as one PNG grid (square-ish by default), enlarged
    ``scale`` times, with ``caption`` in a row above it."""
    path = Path(path)
    body = _to_pil(grid_image(images, nrow=nrow, padding=padding), scale)
    _with_text(body, caption).save(path, format="png")
    return path


def save_strip(trajectory: Tensor, path: str | Path, *, padding: int = 2, scale: int = 1,
               caption: str | None = None, labels: Sequence[str] = ()) -> Path:
    """Save a denoising strip: ``trajectory`` ``[frames, n, C, H, W]`` in [0, 1] becomes ``n`` rows
    of ``frames`` images each, noisiest on the left; ``labels`` (one per frame, such as ``t=999``)
    head the columns."""
    path = Path(path)
    frames, n = trajectory.shape[:2]
    if labels and len(labels) != frames:
        raise ValueError(f"{len(labels)} labels for {frames} frames")
    rows = trajectory.detach().float().cpu().transpose(0, 1).reshape(frames * n, *trajectory.shape[2:])
    body = _to_pil(grid_image(rows, nrow=frames, padding=padding), scale)
    step = (trajectory.shape[-1] + padding) * scale  # make_grid: padding, then each image and its padding
    centres = [(padding * scale + i * step + trajectory.shape[-1] * scale // 2, text) for i, text in enumerate(labels)]
    _with_text(body, caption, centres).save(path, format="png")
    return path

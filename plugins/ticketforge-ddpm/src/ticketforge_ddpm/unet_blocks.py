"""The building blocks of the DDPM U-Net: time embedding, ResBlock, attention, resamplers.

Every Conv2d/Linear is called as a module, so ``torch.nn.utils.prune``'s pre-hook reaches it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def num_groups(channels: int) -> int:
    """GroupNorm groups: 32, or fewer for small channel counts (at least 4 channels per group)."""
    limit = max(1, min(32, channels // 4))
    return max(g for g in range(1, limit + 1) if channels % g == 0)


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups(channels), channels, eps=1e-6)


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding ``[B, dim]`` of (integer or float) timesteps ``t`` ``[B]``, as in DDPM."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) / (half - 1) * torch.arange(half, device=t.device, dtype=torch.float32))
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class TimeEmbedding(nn.Module):
    """Sinusoidal embedding followed by Linear -> SiLU -> Linear (``ch`` -> ``4 ch`` -> ``4 ch``)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.ch = ch
        self.dense0 = nn.Linear(ch, 4 * ch)
        self.dense1 = nn.Linear(4 * ch, 4 * ch)

    def forward(self, t: Tensor) -> Tensor:
        return self.dense1(F.silu(self.dense0(timestep_embedding(t, self.ch))))


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, + projected time embedding, GroupNorm-SiLU-dropout-conv, + skip."""

    def __init__(self, in_ch: int, out_ch: int, temb_ch: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = group_norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.temb_proj = nn.Linear(temb_ch, out_ch)
        self.norm2 = group_norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        # 1x1 "network in network" shortcut only where the channel count changes.
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (x if self.skip is None else self.skip(x)) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions; q, k, v and the output are 1x1 convs."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.norm = group_norm(ch)
        self.q = nn.Conv2d(ch, ch, 1)
        self.k = nn.Conv2d(ch, ch, 1)
        self.v = nn.Conv2d(ch, ch, 1)
        self.proj_out = nn.Conv2d(ch, ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, hgt, wid = x.shape
        h = self.norm(x)
        q, k, v = (m(h).reshape(b, 1, c, hgt * wid).transpose(-1, -2) for m in (self.q, self.k, self.v))
        h = F.scaled_dot_product_attention(q, k, v)  # [b, 1, hw, c]
        return x + self.proj_out(h.transpose(-1, -2).reshape(b, c, hgt, wid))


class Block(nn.Module):
    """A ResBlock, followed by self-attention at the chosen resolutions."""

    def __init__(self, in_ch: int, out_ch: int, temb_ch: int, dropout: float, attn: bool) -> None:
        super().__init__()
        self.res = ResBlock(in_ch, out_ch, temb_ch, dropout)
        self.attn = AttnBlock(out_ch) if attn else None

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.res(x, temb)
        return h if self.attn is None else self.attn(h)


class Downsample(nn.Module):
    """3x3 conv with stride 2 (halves the resolution)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


def nearest2x_broadcast(x: Tensor) -> Tensor:
    """Nearest-neighbour x2 as a broadcast: ``F.interpolate``'s values; its gradient is a sum over the
    four copies of each pixel."""
    b, c, h, w = x.shape
    return x[:, :, :, None, :, None].expand(b, c, h, 2, w, 2).reshape(b, c, 2 * h, 2 * w)


def upsample_nearest2x(x: Tensor) -> Tensor:
    """``F.interpolate(x, scale_factor=2, mode="nearest")``, as ``nearest2x_broadcast`` under
    ``torch.compile``: compiled, ``F.interpolate``'s backward becomes a scatter with atomic adds
    (summation order not fixed; the slowest kernel per call of the compiled mnist step). Eager, the
    native kernel is faster (1.3-2.8x on a CPU, ``benchmarks/upsample_forms.py``)."""
    if torch.compiler.is_compiling():
        return nearest2x_broadcast(x)
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(upsample_nearest2x(x))


class Level(nn.Module):
    """The blocks of one resolution level on one path, and its resampler (None at the end)."""

    downsample: nn.Module | None  # the one called ``resample_name``
    upsample: nn.Module | None

    def __init__(self, blocks: list[Block], resample: nn.Module | None, resample_name: str) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.resample_name = resample_name
        setattr(self, resample_name, resample)


class MidBlock(nn.Module):
    """ResBlock -> attention -> ResBlock at the lowest resolution."""

    def __init__(self, ch: int, temb_ch: int, dropout: float) -> None:
        super().__init__()
        self.res1 = ResBlock(ch, ch, temb_ch, dropout)
        self.attn = AttnBlock(ch)
        self.res2 = ResBlock(ch, ch, temb_ch, dropout)

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        return self.res2(self.attn(self.res1(x, temb)), temb)

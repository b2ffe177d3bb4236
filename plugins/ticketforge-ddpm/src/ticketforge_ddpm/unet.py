"""The DDPM U-Net of Ho et al. (2020), written so that pruning reaches every weight it uses.

Every Conv2d/Linear is called as a module (never through ``F.conv2d(x, m.weight)``), and no op
rebuilds weights (no weight standardization): ``torch.nn.utils.prune``'s forward pre-hook sets
``module.weight = weight_orig * weight_mask`` and the forward pass uses exactly that tensor.

Layout (module paths; level 0 is full resolution, registration order is forward order)::

    time_embed.{dense0,dense1}       sinusoidal embedding of t -> 2-layer MLP (4*ch wide)
    conv_in
    down.{level}.blocks.{i}.{res,attn}, down.{level}.downsample
    mid.{res1,attn,res2}
    up.{level}.blocks.{i}.{res,attn}, up.{level}.upsample     (levels from deepest to 0)
    norm_out, conv_out
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .unet_blocks import Block, Downsample, Level, MidBlock, TimeEmbedding, Upsample, group_norm


class UNet(nn.Module):
    """The epsilon-prediction U-Net of DDPM; its keyword arguments are its whole config.

    Args:
        image_size: input height = width; must be divisible by ``2 ** (len(ch_mult) - 1)``.
        in_channels: image channels (also the output channels: the predicted noise).
        ch: base channel count; the time embedding is ``4 * ch`` wide.
        ch_mult: channel multiplier per resolution level (level 0 = full resolution).
        num_res_blocks: ResBlocks per level on the down path (the up path has one more).
        attn_resolutions: resolutions (e.g. 16 for 16x16) whose blocks get self-attention.
        dropout: dropout rate inside the ResBlocks.

    ``forward(x, t)``: ``x`` ``[B, in_channels, image_size, image_size]`` in [-1, 1], ``t`` ``[B]``
    integer timesteps; returns the predicted noise, shaped like ``x``.
    """

    def __init__(self, *, image_size: int = 32, in_channels: int = 3, ch: int = 128,
                 ch_mult: Sequence[int] = (1, 2, 2, 2), num_res_blocks: int = 2,
                 attn_resolutions: Sequence[int] = (16,), dropout: float = 0.1) -> None:
        super().__init__()
        levels = len(ch_mult)
        if image_size % 2 ** (levels - 1):
            raise ValueError(f"image_size {image_size} is not divisible by 2**{levels - 1} (len(ch_mult) = {levels})")
        self.image_size, self.in_channels = image_size, in_channels
        temb_ch = 4 * ch
        self.time_embed = TimeEmbedding(ch)
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)

        skip_chs, cur, res = [ch], ch, image_size  # channels of every tensor the up path concatenates
        self.down = nn.ModuleDict()
        for level, mult in enumerate(ch_mult):
            blocks = []
            for _ in range(num_res_blocks):
                blocks.append(Block(cur, ch * mult, temb_ch, dropout, res in attn_resolutions))
                cur = ch * mult
                skip_chs.append(cur)
            down = Downsample(cur) if level < levels - 1 else None
            if down is not None:
                skip_chs.append(cur)
                res //= 2
            self.down[str(level)] = Level(blocks, down, "downsample")

        self.mid = MidBlock(cur, temb_ch, dropout)

        self.up = nn.ModuleDict()  # inserted deepest level first, i.e. in forward order
        for level in reversed(range(levels)):
            blocks = []
            for _ in range(num_res_blocks + 1):
                blocks.append(Block(cur + skip_chs.pop(), ch * ch_mult[level], temb_ch, dropout, res in attn_resolutions))
                cur = ch * ch_mult[level]
            up = Upsample(cur) if level > 0 else None
            if up is not None:
                res *= 2
            self.up[str(level)] = Level(blocks, up, "upsample")

        self.norm_out = group_norm(cur)
        self.conv_out = nn.Conv2d(cur, in_channels, 3, padding=1)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """DDPM's initialisation: fan-average uniform variance scaling, zero biases, and scale 1e-10
        (TensorFlow's stand-in for 0, so no weight starts exactly at zero) on every layer that
        closes a residual branch (``conv2``, ``proj_out``) and on ``conv_out``."""
        for name, m in self.named_modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                last = name.endswith(("conv2", "proj_out")) or name == "conv_out"
                _variance_scaling_(m.weight, 1e-10 if last else 1.0)
                assert m.bias is not None  # every layer here has one
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        temb = self.time_embed(t)
        hs = [self.conv_in(x)]
        for level in cast("Iterable[Level]", self.down.values()):
            for block in level.blocks:
                hs.append(block(hs[-1], temb))
            if level.downsample is not None:
                hs.append(level.downsample(hs[-1]))
        h = self.mid(hs[-1], temb)
        for level in cast("Iterable[Level]", self.up.values()):
            for block in level.blocks:
                h = block(torch.cat([h, hs.pop()], dim=1), temb)
            if level.upsample is not None:
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


def _variance_scaling_(w: Tensor, scale: float) -> None:
    """``tf.variance_scaling_initializer(scale, mode='fan_avg', distribution='uniform')``."""
    receptive = w[0, 0].numel() if w.dim() > 2 else 1
    fan_in, fan_out = w.shape[1] * receptive, w.shape[0] * receptive
    bound = math.sqrt(3.0 * scale / ((fan_in + fan_out) / 2))
    nn.init.uniform_(w, -bound, bound)

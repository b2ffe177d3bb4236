"""Eager CPU time of the U-Net's two nearest-x2 upsampling forms, forward + backward.

``F.interpolate`` (the native kernel, what eager code runs) against the broadcast
(``ticketforge_ddpm.unet_blocks.nearest2x_broadcast``) that ``upsample_nearest2x`` uses under
``torch.compile``, at the shapes the mnist preset upsamples (batch 32) and a tiny one; medians,
2 threads as on the CI machine.

    python benchmarks/upsample_forms.py
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.benchmark import Timer

from ticketforge_ddpm.unet_blocks import nearest2x_broadcast

SHAPES = [(32, 128, 8, 8), (32, 128, 16, 16), (8, 16, 16, 16)]


def median_ms(fn, shape: tuple[int, ...]) -> float:
    """Median time of one forward + backward (torch.utils.benchmark: warm-up, blocked runs)."""
    x = torch.randn(*shape, requires_grad=True)
    grad = torch.ones(shape[0], shape[1], 2 * shape[2], 2 * shape[3])
    timer = Timer("fn(x).backward(grad)", globals={"fn": fn, "x": x, "grad": grad}, num_threads=2)
    return timer.blocked_autorange(min_run_time=1.0).median * 1e3


def main() -> None:
    native = lambda x: F.interpolate(x, scale_factor=2.0, mode="nearest")  # noqa: E731
    print(f"{'shape':>20}  interpolate ms  broadcast ms  ratio")
    for shape in SHAPES:
        a, b = median_ms(native, shape), median_ms(nearest2x_broadcast, shape)
        print(f"{str(shape):>20}  {a:14.3f}  {b:12.3f}  {b / a:5.2f}")


if __name__ == "__main__":
    main()

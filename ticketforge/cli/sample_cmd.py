"""``ticketforge sample``: images from a round's (or a branch's) network."""

from __future__ import annotations

import io

import click
import torch
from torchvision.utils import save_image

from ..api import load_round
from ..branches import describe, resolve_source
from ..engine.engine import resolve_device
from ..engine.sampling import sampling_network
from ..errors import UsageError
from ..evaluation import sampler_of
from ..progress import using
from ..store.atomic import atomic_write_bytes
from ..threads import apply_threads
from .options import (
    branch_option,
    check_seed,
    given_options,
    key_values_option,
    progress_option,
    round_option,
    sampling_options,
    writable_output,
)


@click.command("sample")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@round_option
@branch_option
@click.option("--n", type=int, default=64, show_default=True, help="Number of images.")
@key_values_option("--sampler-option", "Option of the sampler, repeatable (e.g. eta=0 for ddim).")
@sampling_options
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="PNG grid to write.")
@progress_option
def command(run: str, round_: int | None, branch: str | None, n: int, sampler: str | None, steps: int,
            options: tuple[str, ...], old_options: tuple[str, ...], seed: int, no_ema: bool, device: str,
            threads: int | str, precision: str, compile_: bool, out: str, progress: str) -> None:
    """Sample a grid of images from a round's ticket, or a branch's (EMA weights by default)."""
    if n < 1:
        raise UsageError(f"--n must be at least 1 (the number of images in the grid), not {n}")
    if steps < 1:
        raise UsageError(f"--steps must be at least 1, not {steps}")
    check_seed(seed)
    sampler_options = given_options(options, old_options, "--sampler-option")
    writable_output(out)  # before the sampling, not after it
    source, round_, _ = resolve_source(run, branch, round_)
    dev = resolve_device(device)
    apply_threads(threads, dev)
    loaded = load_round(source, round_, ema=not no_ema, device=str(dev))
    with using(progress):  # the model plugin shows its denoising steps
        network, _ = sampling_network(loaded.network, precision, compile_, dev)
        gen = torch.Generator(device=dev).manual_seed(seed)
        with torch.no_grad():
            images = loaded.spec.sample(network, n, generator=gen, steps=steps,
                                        **sampler_of(loaded.spec, sampler), **sampler_options)
    png = io.BytesIO()
    save_image(images.float().cpu(), png, nrow=max(1, int(n ** 0.5)), format="png")
    atomic_write_bytes(out, png.getvalue())  # never a half-written grid
    click.echo(f"wrote {n} samples of {describe(source, loaded.round)} "
               f"({100 * loaded.record['sparsity']:.2f}% sparse) to {out}")

"""``ticketforge export``: a round's ticket as one compact safetensors file."""

from __future__ import annotations

import click

from ..branches import describe, resolve_source
from ..export import export_ticket
from .options import branch_option, round_option, writable_output


@click.command("export")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@round_option
@branch_option
@click.option("--no-ema", is_flag=True, help="Export the raw trained weights instead of their EMA.")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="File to write (.safetensors).")
def command(run: str, round_: int | None, branch: str | None, no_ema: bool, out: str) -> None:
    """Export a round's ticket (or a branch's): bit-packed masks, the kept values and the config, in safetensors.

    Load it back with ``ticketforge.load_ticket(path)``.
    """
    source, round_, _ = resolve_source(run, branch, round_)
    writable_output(out)
    info = export_ticket(source, out, round_, ema=not no_ema)
    click.echo(f"{describe(source, info['round'])} ({100 * info['sparsity']:.2f}% sparse): "
               f"{info['file_bytes']:,} bytes, "
               f"against {info['dense_fp32_bytes']:,} bytes of dense fp32 weights "
               f"({info['file_bytes'] / info['dense_fp32_bytes']:.1%}) -> {out}")

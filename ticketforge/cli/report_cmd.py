"""``ticketforge report``: a markdown report of one or more runs, with PNG plots.

Writes ``DIR/report.md`` (a per-round table: sparsity, parameters, theoretical MACs, stored scores),
``DIR/report.json`` (the same data), ``score-<evaluator>.png`` (score vs sparsity, one line per run),
``cka.png`` (weight CKA per module) and a copy of each round's ``samples.png`` where the run has one.
A run with branches (``ticketforge branch``) also gets a table of them and, per run,
``<i>-<run>-branches-<metric>.png``: the ticket's rounds against its branches at each sparsity, for the
final training loss and each stored score.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..plots import require_matplotlib
from ..report import write_report
from .options import writable_output


@click.command("report")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="Folder to write report.md and plots into.")
@click.option("--flops/--no-flops", default=True, show_default=True, help="Count theoretical MACs of every round.")
@click.option("--cka/--no-cka", default=True, show_default=True, help="Plot weight CKA per module.")
@click.option("--device", default="auto", show_default=True,
              help="auto, cpu, cuda or cuda:N: where rounds are loaded for MACs and CKA (auto: a GPU when one is "
                   "visible).")
def command(runs: tuple[str, ...], out: str, flops: bool, cka: bool, device: str) -> None:
    """Markdown report of one or more runs: per-round table, score vs sparsity, CKA per module, samples."""
    from ..engine.engine import resolve_device
    dev = str(resolve_device(device))
    require_matplotlib()
    writable_output(Path(out), folder=True)  # before the summaries, not after them
    path = write_report(list(runs), out, flops=flops, cka=cka, device=dev)
    click.echo(f"wrote {path}")

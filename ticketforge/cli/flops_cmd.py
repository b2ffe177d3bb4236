"""``ticketforge flops``: theoretical dense and sparse MACs of a round's ticket or of a fresh model."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ..inspection import model_report
from ..metrics.flops import human_macs
from .options import branch_option, echo_json, given_options, json_option, key_values_option, round_option


def render(doc: dict[str, Any], console: Console) -> None:
    """Per-group table and totals, saying plainly that these are theoretical counts."""
    per = doc["batch_size"]
    branch = doc.get("branch")
    of = f" of branch {branch.get('name')} (of round {branch.get('of_round')})" if branch else ""
    table = Table(title=f"theoretical MACs per {'image' if per == 1 else f'batch of {per}'} by module group{of}",
                  title_justify="left")
    for col in ("group", "name", "params", "nonzero", "dense MACs", "sparse MACs"):
        table.add_column(col, justify="left" if col == "name" else "right")
    for g in doc["by_group"]:
        table.add_row(str(g["index"]), g["name"], f"{g['params']:,}", f"{g['nonzero_params']:,}",
                      human_macs(g["dense_macs"]), human_macs(g["sparse_macs"]))
    other = human_macs(doc["other_macs"])
    table.add_row("", "other (attention, norms, upsampling)", "", "", other, other)
    table.add_row("", "[bold]total[/]", f"{doc['params']:,}", f"{doc['nonzero_params']:,}",
                  human_macs(doc["dense_macs"]), human_macs(doc["sparse_macs"]))
    console.print(table)
    factor = doc["dense_macs"] / doc["sparse_macs"] if doc["sparse_macs"] else float("inf")
    console.print(f"theoretical reduction {factor:.2f}x ({human_macs(doc['dense_macs'])} -> "
                  f"{human_macs(doc['sparse_macs'])}; 1 MAC = 1 multiply-add, counted by fvcore). Attention "
                  f"matmuls, norms and upsampling are not reduced by weight pruning, and unstructured sparsity "
                  f"gives no wall-clock speed-up on GPUs.")
    if doc["uncounted_ops"]:
        ops = ", ".join(f"{op.removeprefix('aten::')} x{n}" for op, n in sorted(doc["uncounted_ops"].items()))
        console.print(f"[dim]not counted (elementwise, no multiply-adds by fvcore's convention): {ops}[/]")


@click.command("flops")
@click.argument("run", required=False, type=click.Path(exists=True, file_okay=False))
@click.option("--model", default=None, help="Count a freshly built dense model of this name instead of a run.")
@click.option("--preset", default=None, help="Model preset (with --model).")
@key_values_option("--model-option", "Option of the model (with --model), repeatable (e.g. ch=64), as "
                                     "`ticketforge run --model-option` takes it.")
@round_option
@branch_option
@click.option("--batch-size", type=int, default=1, show_default=True, help="Images per counted forward pass.")
@json_option
def command(run: str | None, model: str | None, preset: str | None, options: tuple[str, ...],
            old_options: tuple[str, ...], round_: int | None, branch: str | None, batch_size: int,
            as_json: bool) -> None:
    """Theoretical MACs of a round's ticket (RUN), a branch's (--branch) or of a fresh dense model (--model NAME).

    Dense MACs are counted by fvcore from shapes; sparse MACs scale each Conv/Linear weight op by the
    fraction of its weights that are nonzero. Everything else stays dense and is shown apart.
    """
    doc = model_report(run, model, preset, given_options(options, old_options, "--model-option"), round_, batch_size,
                       branch)
    if as_json:
        echo_json(doc)
    else:
        render(doc, Console())

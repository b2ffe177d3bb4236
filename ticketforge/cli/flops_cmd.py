"""``ticketforge flops``: theoretical dense and sparse MACs of a round's ticket or of a fresh model."""

from __future__ import annotations

from typing import Any

import click
import torch
from rich.console import Console
from rich.table import Table

from ..errors import UsageError
from ..metrics.flops import flops_report
from .options import branch_option, echo_json, given_options, json_option, key_values_option, round_option


def human_macs(macs: float) -> str:
    """``6.239 G``, ``46.1 K``: three significant decimals in the largest fitting unit."""
    for scale, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(macs) >= scale:
            return f"{macs / scale:.3f} {unit}"
    return f"{macs:.0f}"


def model_report(run: str | None, model: str | None, preset: str | None, options: dict[str, Any],
                 round_: int | None, batch_size: int = 1, branch: str | None = None) -> dict[str, Any]:
    """The ``flops --json`` document for a run's round or branch, or for a freshly built dense model."""
    if (run is None) == (model is None):
        raise UsageError("give either a RUN directory or --model NAME")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1 (images per counted forward pass), not {batch_size}")
    if run is None and branch is not None:
        raise UsageError("--branch needs a RUN directory")
    if run is not None:
        if preset is not None or options:
            raise UsageError("--preset and --model-option build a fresh model: use them with --model, not with RUN")
        from ..api import load_round
        from ..branches import branch_of, resolve_source
        path, round_, _ = resolve_source(run, branch, round_)
        loaded = load_round(path, round_, ema=False)
        spec, network, groups = loaded.spec, loaded.network, loaded.groups
        source: dict[str, Any] = {"run": str(path), "round": loaded.round, "sparsity": loaded.record.get("sparsity"),
                                  "branch": branch_of(path)}
    else:
        if round_ is not None:
            raise UsageError("--round needs a RUN directory")
        assert model is not None  # one of the two, checked above
        from ..engine.groups import module_groups
        from ..registry import get_registry
        if preset is not None:
            options = {**options, "preset": preset}
        spec = get_registry().create("models", model, **options)
        torch.manual_seed(0)
        network = spec.build().eval()
        groups = module_groups(spec, network)
        source = {"model": model, "preset": preset}
    report = flops_report(network, spec.example_inputs(batch_size), groups)
    return {**source, "batch_size": batch_size, **report}


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

"""``ticketforge compare``: two tickets module by module: CKA of weights or activations, mask overlap."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ..comparison import branch_name, compare_rounds, similarity_measure
from ..plots import plot_cka, require_matplotlib
from .options import check_seed, echo_json, given_options, json_option, key_values_option, round_option, writable_output


def side_label(doc: dict[str, Any], side: str) -> str:
    """``RUN round 3``, or ``RUN branch NAME`` for a branch (whose folder is RUN/branches/NAME)."""
    run, branch = doc[f"run_{side}"], doc.get(f"branch_{side}")
    if branch:
        return f"{Path(run).parent.parent} branch {branch}"
    return f"{run} round {doc[f'round_{side}']}"


def render(doc: dict[str, Any], console: Console) -> None:
    name = "CKA" if doc.get("similarity", "cka") == "cka" else doc["similarity"]
    table = Table(title=f"{doc['mode']} {name} ({doc['kernel']}, {'debiased' if doc['debiased'] else 'biased'}): "
                        f"{side_label(doc, 'a')} vs {side_label(doc, 'b')}",
                  title_justify="left")
    for col in ("group", "module", name, "mask Jaccard", "random masks", "density a", "density b"):
        table.add_column(col, justify="left" if col in ("group", "module") else "right")
    for r in doc["modules"]:
        cka = "n/a" if r["cka"] is None else f"{r['cka']:.3f}"
        table.add_row(r["group"], r["module"], cka, f"{r['jaccard']:.3f}", f"{r['jaccard_random']:.3f}",
                      f"{100 * r['density_a']:.1f}%", f"{100 * r['density_b']:.1f}%")
    console.print(table)
    console.print(f"overall mask Jaccard {doc['jaccard']:.3f} ('random masks': expected for independent masks "
                  f"of the same densities; n/a: CKA undefined, e.g. fewer than 4 output channels)")


@click.command("compare")
@click.argument("run_a", type=click.Path(exists=True, file_okay=False))
@click.argument("run_b", type=click.Path(exists=True, file_okay=False))
@round_option
@click.option("--round-b", type=int, default=None, help="Round of RUN_B when it differs from --round.")
@click.option("--branch", "branch_a", default=None, metavar="NAME",
              help="A branch of RUN_A instead of a round (name, unique prefix or part such as reinit).")
@click.option("--branch-b", default=None, metavar="NAME",
              help="A branch of RUN_B instead of a round (RUN_B may be RUN_A: a ticket against its branch).")
@click.option("--mode", type=click.Choice(["weights", "activations"]), default="weights", show_default=True)
@click.option("--similarity", default="cka", show_default=True,
              help="Similarity measure per module (see `ticketforge list similarities --options`).")
@key_values_option("--similarity-option", "Option of the similarity, repeatable (e.g. threshold=0.5).")
@click.option("--kernel", type=click.Choice(["linear", "rbf"]), default="linear", show_default=True,
              help="The similarity's kernel option (cka's).")
@click.option("--biased", is_flag=True,
              help="Biased HSIC estimator, the similarity's debiased=false (default: debiased, right when features "
                   "outnumber samples).")
@click.option("--samples", type=int, default=64, show_default=True, help="Inputs per forward pass (activations mode).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the example inputs (activations mode).")
@click.option("--device", default="auto", show_default=True,
              help="auto, cpu, cuda or cuda:N (auto: a GPU when one is visible, as for the other commands).")
@json_option
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Write a PNG of CKA per module (needs matplotlib).")
def command(run_a: str, run_b: str, round_: int | None, round_b: int | None, branch_a: str | None,
            branch_b: str | None, mode: str, similarity: str, options: tuple[str, ...],
            old_options: tuple[str, ...], kernel: str, biased: bool,
            samples: int, seed: int, device: str, as_json: bool, plot: str | None) -> None:
    """Compare two tickets module by module, upstream to downstream: CKA and mask Jaccard.

    CKA is Kornblith et al.'s (with the square root); weights mode treats each output channel's
    weights as a sample. Two unrelated tickets give debiased CKA near 0.
    """
    from ..api import load_round
    from ..branches import resolve_source
    from ..engine.engine import resolve_device
    check_seed(seed)
    if plot:
        require_matplotlib()
        writable_output(plot, "--plot")  # before the comparison, not after it
    similarity_options = given_options(options, old_options, "--similarity-option")
    similarity_measure(similarity, options=similarity_options)  # a wrong name or option: before loading
    path_a, k_a, _ = resolve_source(run_a, branch_a, round_)
    # RUN_B's round defaults to --round, unless RUN_B's side is a branch (a branch has one round).
    path_b, k_b, _ = resolve_source(run_b, branch_b, round_b if round_b is not None or branch_b else round_)
    dev = str(resolve_device(device))
    a = load_round(path_a, k_a, device=dev)
    b = load_round(path_b, k_b, device=dev)
    doc = compare_rounds(a, b, mode=mode, kernel=kernel, debiased=not biased, samples=samples, seed=seed,
                         similarity=similarity,
                         similarity_options=similarity_options)
    if plot:
        def short(loaded: Any, branch: str | None, run: str) -> str:
            return f"{Path(run).name}/{branch_name(loaded) or branch if branch else loaded.round}"
        plot_cka({f"{short(a, branch_a, run_a)} vs {short(b, branch_b, run_b)}": doc["modules"]}, plot,
                 title=f"{mode} CKA per module")
    if as_json:
        echo_json(doc)
    else:
        render(doc, Console())
        if plot:
            click.echo(f"wrote {plot}")

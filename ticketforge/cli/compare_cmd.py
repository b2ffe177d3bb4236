"""``ticketforge compare``: two tickets module by module: CKA of weights or activations, mask overlap."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, cast

import click
import torch
from rich.console import Console
from rich.table import Table

from ..errors import UsageError
from ..similarity.cka import Kernel, activation_cka, mask_jaccard, weight_cka
from ..store.atomic import atomic_write_bytes
from .options import check_seed, echo_json, json_option, round_option, writable_output


def _random_jaccard(da: float, db: float) -> float:
    """Expected Jaccard index of two independent random masks of densities ``da`` and ``db``."""
    union = da + db - da * db
    return da * db / union if union else 1.0


def _safe(score: Any) -> float | None:
    """CKA as a float, None when undefined (too few output channels, a constant layer)."""
    try:
        value = float(score())
    except ValueError:
        return None
    return None if math.isnan(value) else value


def compare_rounds(a: Any, b: Any, *, mode: str = "weights", kernel: str = "linear", debiased: bool = True,
                   samples: int = 64, seed: int = 0) -> dict[str, Any]:
    """Per-module CKA and mask Jaccard of two :class:`~ticketforge.api.LoadedRound`, upstream first.

    ``weights`` mode compares ``module.weight`` rows (output channels as samples); ``activations``
    mode feeds ``samples`` identical example inputs (seeded) to both networks and compares outputs.
    """
    if a.config.get("model") != b.config.get("model") or a.spec.config != b.spec.config:
        raise UsageError("the two runs use different models; CKA per module needs the same architecture")
    names = [(group.name, name) for group in a.groups for name, _ in group.modules]
    missing = [name for _, name in names if name not in b.masks]
    if missing:
        raise UsageError(f"module {missing[0]!r} is not pruned in the second run: the runs' module groups differ")
    cka_kernel = cast(Kernel, kernel)  # cka() refuses an unknown one
    if mode == "weights":
        mods_a, mods_b = dict(a.network.named_modules()), dict(b.network.named_modules())
        scores = {name: _safe(lambda n=name: weight_cka(mods_a[n], mods_b[n], debiased=debiased, kernel=cka_kernel))
                  for _, name in names}
    elif mode == "activations":
        device = next(a.network.parameters()).device
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            inputs = tuple(a.spec.example_inputs(samples, device))
        b.network.to(device)
        raw = activation_cka(a.network, b.network, inputs, [n for _, n in names], cka_kernel, debiased=debiased)
        scores = {name: None if math.isnan(value) else value for name, value in raw.items()}
    else:
        raise UsageError(f"--mode must be weights or activations, not {mode!r}")
    rows = []
    for group, name in names:
        ma, mb = a.masks[name], b.masks[name]
        da, db = float(ma.float().mean()), float(mb.float().mean())
        rows.append({"module": name, "group": group, "cka": scores[name], "jaccard": mask_jaccard(ma, mb),
                     "jaccard_random": _random_jaccard(da, db), "density_a": da, "density_b": db})
    all_a = torch.cat([a.masks[n].flatten() for _, n in names])
    all_b = torch.cat([b.masks[n].flatten() for _, n in names])
    return {"run_a": str(a.run_dir), "round_a": a.round, "run_b": str(b.run_dir), "round_b": b.round,
            "branch_a": _branch_name(a), "branch_b": _branch_name(b),
            "mode": mode, "kernel": kernel, "debiased": debiased, "samples": samples if mode == "activations" else None,
            "jaccard": mask_jaccard(all_a, all_b), "modules": rows}


def _branch_name(loaded: Any) -> str | None:
    branch = loaded.config.get("branch")
    return branch.get("name") if isinstance(branch, dict) else None


def side_label(doc: dict[str, Any], side: str) -> str:
    """``RUN round 3``, or ``RUN branch NAME`` for a branch (whose folder is RUN/branches/NAME)."""
    run, branch = doc[f"run_{side}"], doc.get(f"branch_{side}")
    if branch:
        return f"{Path(run).parent.parent} branch {branch}"
    return f"{run} round {doc[f'round_{side}']}"


def require_matplotlib() -> Any:
    """``matplotlib.pyplot`` on the Agg backend, or a one-line usage error."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("plots need matplotlib: pip install 'ticketforge[plots]'") from None
    return plt


def save_figure(fig: Any, path: str | Path) -> None:
    """A matplotlib figure as a PNG, written atomically (an interruption leaves no half-written file).

    Cropped to what it draws, so a legend beside the axes and long tick labels are inside the image."""
    import io
    png = io.BytesIO()
    fig.savefig(png, dpi=120, format="png", bbox_inches="tight")
    atomic_write_bytes(path, png.getvalue())


def cka_figure(series: dict[str, list[dict[str, Any]]], title: str = "") -> Any:
    """CKA per module, upstream to downstream, one line per comparison (and mask Jaccard dotted).

    The x axis names the modules; the legend sits beside the axes, where it covers no line or label."""
    plt = require_matplotlib()
    modules = [r["module"] for r in max(series.values(), key=len)]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.16 * len(modules)), 3.5))
    x = list(range(len(modules)))
    for label, rows in series.items():
        line, = ax.plot(x[:len(rows)], [math.nan if r["cka"] is None else r["cka"] for r in rows], marker=".",
                        label=f"CKA {label}")
        ax.plot(x[:len(rows)], [r["jaccard"] for r in rows], linestyle=":", color=line.get_color(),
                label=f"mask Jaccard {label}")
    ax.set_xticks(x, modules, rotation=90, fontsize="x-small")
    ax.set(xlabel="module (forward order)", ylabel="similarity", ylim=(-0.05, 1.05), xlim=(-0.5, len(x) - 0.5),
           title=title)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    return fig


def plot_cka(series: dict[str, list[dict[str, Any]]], path: str | Path, title: str = "") -> None:
    """:func:`cka_figure` written to ``path`` as a PNG."""
    plt = require_matplotlib()
    fig = cka_figure(series, title)
    save_figure(fig, path)
    plt.close(fig)


def render(doc: dict[str, Any], console: Console) -> None:
    table = Table(title=f"{doc['mode']} CKA ({doc['kernel']}, {'debiased' if doc['debiased'] else 'biased'}): "
                        f"{side_label(doc, 'a')} vs {side_label(doc, 'b')}",
                  title_justify="left")
    for col in ("group", "module", "CKA", "mask Jaccard", "random masks", "density a", "density b"):
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
@click.option("--kernel", type=click.Choice(["linear", "rbf"]), default="linear", show_default=True)
@click.option("--biased", is_flag=True,
              help="Biased HSIC estimator (default: debiased, right when features outnumber samples).")
@click.option("--samples", type=int, default=64, show_default=True, help="Inputs per forward pass (activations mode).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the example inputs (activations mode).")
@click.option("--device", default="auto", show_default=True,
              help="auto, cpu, cuda or cuda:N (auto: a GPU when one is visible, as for the other commands).")
@json_option
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Write a PNG of CKA per module (needs matplotlib).")
def command(run_a: str, run_b: str, round_: int | None, round_b: int | None, branch_a: str | None,
            branch_b: str | None, mode: str, kernel: str, biased: bool,
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
    path_a, k_a, _ = resolve_source(run_a, branch_a, round_)
    # RUN_B's round defaults to --round, unless RUN_B's side is a branch (a branch has one round).
    path_b, k_b, _ = resolve_source(run_b, branch_b, round_b if round_b is not None or branch_b else round_)
    dev = str(resolve_device(device))
    a = load_round(path_a, k_a, device=dev)
    b = load_round(path_b, k_b, device=dev)
    doc = compare_rounds(a, b, mode=mode, kernel=kernel, debiased=not biased, samples=samples, seed=seed)
    if plot:
        def short(loaded: Any, branch: str | None, run: str) -> str:
            return f"{Path(run).name}/{_branch_name(loaded) or branch if branch else loaded.round}"
        plot_cka({f"{short(a, branch_a, run_a)} vs {short(b, branch_b, run_b)}": doc["modules"]}, plot,
                 title=f"{mode} CKA per module")
    if as_json:
        echo_json(doc)
    else:
        render(doc, Console())
        if plot:
            click.echo(f"wrote {plot}")

"""PNG plots (matplotlib on the Agg backend): CKA per module, scores against sparsity, a ticket
against its branches."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .errors import UsageError
from .store.atomic import atomic_write_bytes


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


def plot_scores(summaries: list[dict[str, Any]], name: str, path: Path) -> None:
    """Headline score of evaluator ``name`` against sparsity, one line per run."""
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    key = name
    for summary in summaries:
        points = [(100 * r["sparsity"], r["scores"][name]["value"]) for r in summary["rounds"] if name in r["scores"]]
        if points:
            key = next(r["scores"][name]["key"] for r in summary["rounds"] if name in r["scores"])
            ax.plot(*zip(*points), marker="o", label=Path(summary["run"]).name)
    ax.set(xlabel="sparsity (%)", ylabel=key, title=f"{key} vs sparsity")
    ax.legend(fontsize="small")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def plot_branches(series: dict[str, list[tuple[float, float]]], ylabel: str, path: Path, title: str) -> None:
    """The ticket's rounds as a line, each branch kind as markers (joined when it has several)."""
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    markers = iter("sD^vP*Xo<>" * 4)
    for label, points in series.items():
        if label == "ticket (rounds)":
            ax.plot(*zip(*points), marker="o", color="black", linewidth=2, label=label)
        else:
            ax.plot(*zip(*points), marker=next(markers), linestyle="--", linewidth=1, label=label)
    ax.set(xlabel="sparsity of the ticket's round (%)", ylabel=ylabel, title=title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

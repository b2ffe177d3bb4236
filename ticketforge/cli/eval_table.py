"""The table ``ticketforge eval`` prints: each item's headline score, its KID with the spread over
subsets, and the featurizer's held-out accuracy (what makes a distance trustworthy)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from ..scores import headline


def kid(scores: dict[str, Any]) -> str:
    """``0.0123 ± 0.0004`` (KID and its standard deviation over subsets), or "" without a KID."""
    for key, value in scores.items():
        if key.startswith("kid") and not key.endswith("_std") and isinstance(value, (int, float)):
            std = scores.get(f"{key}_std")
            return f"{value:.4f}" + (f" ± {std:.4f}" if isinstance(std, (int, float)) else "")
    return ""


def accuracy(scores: dict[str, Any]) -> str:
    value = scores.get("featurizer_test_accuracy")
    return f"{100 * value:.2f}%" if isinstance(value, (int, float)) else ""


def scores_table(results: list[dict[str, Any]], title: str) -> Table:
    """One row per evaluated item of :func:`~ticketforge.evaluation.evaluate_items`; the KID and
    accuracy columns only when some evaluator reported them."""
    table = Table(title=title, title_justify="left")
    has_branches = any(r["branch"] for r in results)
    extra = {"kid": kid, "featurizer acc": accuracy}
    shown = {name: f for name, f in extra.items() if any(f(r["scores"]) for r in results)}
    for col in ("round", *(["branch"] if has_branches else []), "sparsity", "score", "value", *shown,
                "featurizer sha256"):
        table.add_column(col, justify="left" if col in ("branch", "score", "featurizer sha256") else "right",
                         no_wrap=col in ("branch", "kid"))
    for r in results:
        key, value = headline(r["scores"])
        where = [str(r["of_round"] if r["branch"] else r["round"])] + ([r["branch"] or ""] if has_branches else [])
        table.add_row(*where, f"{100 * (r['sparsity'] or 0):.2f}%", key, f"{value:.4f}",
                      *(f(r["scores"]) for f in shown.values()), str(r["scores"].get("featurizer_sha256", ""))[:12])
    return table

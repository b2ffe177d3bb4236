"""Does a per-module profile (CKA, Jaccard) fall or rise along the network? Spearman's rank correlation
of the values against the modules' positions in forward order."""

from __future__ import annotations

import math
from typing import Any, Sequence

__all__ = ["position_trend"]


def position_trend(values: Sequence[float | None], alpha: float = 0.05) -> dict[str, Any]:
    """Spearman's rho (and its two-sided p-value, ``scipy.stats.spearmanr``) of ``values`` against their
    positions 0, 1, ... (``values`` in forward order: upstream first). None and NaN values (CKA undefined
    for the module) are left out, their positions too.

    ``trend``: ``"falls"`` (rho < 0 at p < ``alpha``: upstream modules score higher), ``"rises"`` (rho > 0
    at p < ``alpha``), ``"none"`` (not significant), or ``"undefined"`` (fewer than 3 values, or a
    constant profile: rho is NaN)."""
    from scipy.stats import spearmanr

    kept = [(i, float(v)) for i, v in enumerate(values) if v is not None and not math.isnan(float(v))]
    out: dict[str, Any] = {"n": len(kept), "rho": None, "p": None, "alpha": alpha, "trend": "undefined"}
    if len(kept) < 3 or len({v for _, v in kept}) < 2:
        return out
    res = spearmanr([i for i, _ in kept], [v for _, v in kept])
    rho, p = float(res[0]), float(res[1])
    if math.isnan(rho):
        return out
    trend = "none" if p >= alpha else "falls" if rho < 0 else "rises"
    return {**out, "rho": rho, "p": p, "trend": trend}

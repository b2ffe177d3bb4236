"""What the engine hands a model's ``round_artifacts`` (per-round pictures): their seed and caption."""

from __future__ import annotations

import inspect
from typing import Any

from .data import hash_seed


def artifacts_seed(seed: int) -> int:
    """The seed of the generator every round's ``round_artifacts`` draws from (the run's ``seed`` derived)."""
    return hash_seed(seed, "artifacts")


def artifact_caption(spec: Any, k: int, sparsity: float, extra: dict[str, Any] | None = None) -> dict[str, str]:
    """``{"caption": "round 3, 48.8% sparse"}`` (a branch: ``branch <name>``) for a ``round_artifacts``
    that takes a ``caption``; nothing for one written before captions were passed."""
    try:
        parameters = inspect.signature(spec.round_artifacts).parameters
    except (TypeError, ValueError):
        return {}
    if "caption" not in parameters and not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return {}
    branch = (extra or {}).get("branch")
    where = f"branch {branch['name']}" if isinstance(branch, dict) and "name" in branch else f"round {k}"
    return {"caption": f"{where}, {100 * sparsity:.1f}% sparse"}

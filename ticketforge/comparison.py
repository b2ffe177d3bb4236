"""Two tickets module by module: CKA of weights or activations, and mask overlap (Jaccard)."""

from __future__ import annotations

import math
from typing import Any

import torch

from .errors import UsageError
from .similarity.cka import capture_activations, mask_jaccard, weight_rows


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


def similarity_measure(name: str = "cka", *, kernel: str = "linear", debiased: bool = True,
                       options: dict[str, Any] | None = None, registry: Any = None) -> Any:
    """The similarity ``name`` of the registry (``ticketforge list similarities``), built with ``options``;
    ``kernel`` and ``debiased`` (``compare``'s --kernel and --biased) go to it where it declares them (cka)."""
    from .registry import get_registry

    registry = registry or get_registry()
    declared = {o.name for o in registry.get("similarities", name).options}
    given = {k: v for k, v in (("kernel", kernel), ("debiased", debiased)) if k in declared}
    return registry.create("similarities", name, **{**given, **(options or {})})


def compare_rounds(a: Any, b: Any, *, mode: str = "weights", kernel: str = "linear", debiased: bool = True,
                   samples: int = 64, seed: int = 0, similarity: str = "cka",
                   similarity_options: dict[str, Any] | None = None, registry: Any = None) -> dict[str, Any]:
    """Per-module similarity (CKA by default) and mask Jaccard of two :class:`~ticketforge.api.LoadedRound`,
    upstream first.

    ``weights`` mode compares ``module.weight`` rows (output channels as samples); ``activations``
    mode feeds ``samples`` identical example inputs (seeded) to both networks and compares outputs.
    ``similarity`` is looked up in the registry (:func:`similarity_measure`).
    """
    measure = similarity_measure(similarity, kernel=kernel, debiased=debiased, options=similarity_options,
                                 registry=registry)
    if a.config.get("model") != b.config.get("model") or a.spec.config != b.spec.config:
        raise UsageError("the two runs use different models; CKA per module needs the same architecture")
    names = [(group.name, name) for group in a.groups for name, _ in group.modules]
    missing = [name for _, name in names if name not in b.masks]
    if missing:
        raise UsageError(f"module {missing[0]!r} is not pruned in the second run: the runs' module groups differ")
    if mode == "weights":
        mods_a, mods_b = dict(a.network.named_modules()), dict(b.network.named_modules())
        scores = {name: _safe(lambda n=name: measure(weight_rows(mods_a[n]), weight_rows(mods_b[n])))
                  for _, name in names}
    elif mode == "activations":
        device = next(a.network.parameters()).device
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            inputs = tuple(a.spec.example_inputs(samples, device))
        b.network.to(device)
        acts_a = capture_activations(a.network, inputs, [n for _, n in names])
        acts_b = capture_activations(b.network, inputs, [n for _, n in names])
        raw = {n: float(measure(acts_a[n], acts_b[n])) for _, n in names}
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
            "branch_a": branch_name(a), "branch_b": branch_name(b),
            "mode": mode, "similarity": similarity, "kernel": kernel, "debiased": debiased, "samples": samples if mode == "activations" else None,
            "jaccard": mask_jaccard(all_a, all_b), "modules": rows}


def branch_name(loaded: Any) -> str | None:
    """The branch a :class:`~ticketforge.api.LoadedRound` was loaded from, None for a round of a run."""
    branch = loaded.config.get("branch")
    return branch.get("name") if isinstance(branch, dict) else None

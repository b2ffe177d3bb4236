"""Fake lottery branches for the tests of the commands that read branches.

``fake_branch`` writes a folder in the layout ``ticketforge branch`` writes (``RUN/branches/<name>/``,
a one-round run whose config and record carry a ``"branch"`` dict) by copying round K's files instead
of training. It stands in for the real ``ticketforge.branch(...)`` until the two are merged; swap it
for the real API then (the tests only rely on the folder layout).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from ticketforge.api import load_round
from ticketforge.pruning.targets import mask_digest
from ticketforge.store import RunStore
from ticketforge.store.run_store import round_dir


def _shuffled(mask: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The same number of kept weights at random positions (what a ``random`` branch uses)."""
    flat = mask.reshape(-1)
    out = torch.zeros_like(flat)
    out[torch.randperm(flat.numel(), generator=gen)[: int(flat.sum())]] = True
    return out.reshape(mask.shape)


def fake_branch(run: str | Path, of_round: int, *, masks: str = "ticket", start: str = "tau",
                rewind_fraction: float | None = None, seed: int = 0, perturb: float = 0.0,
                loss: float | None = None, finished: bool = True, checkpoint_step: int | None = None,
                registry: Any = None) -> Path:
    """Write a branch of round ``of_round`` of the finished run ``run``; returns its folder.

    ``masks``: ``ticket`` (round K's), ``random`` (shuffled per tensor, counts kept, from ``seed``) or
    ``none`` (all kept). ``perturb`` adds seeded noise of that scale to the weights so that the
    branch's samples differ from round K's; ``loss`` replaces the final training loss. Unfinished
    (``finished=False``): config and, with ``checkpoint_step``, a checkpoint holding that step.
    ``registry`` builds the run's model (for the masks' order in the digest, as the engine has it).
    """
    parent = RunStore(run)
    config = parent.read_config()
    record = parent.round_record(of_round)
    steps = int(config["steps_per_round"])
    branch: dict[str, Any] = {"of_round": of_round, "masks": masks, "start": start,
                              "rewind_fraction": rewind_fraction, "steps": steps, "seed": seed,
                              "init_seed": None, "parent_run": ".."}
    digest = hashlib.sha256(json.dumps(branch, sort_keys=True).encode()).hexdigest()[:12]
    start_form = start.replace(":", "") + (f"{rewind_fraction:g}" if rewind_fraction is not None else "")
    name = f"{masks}-{start_form}-{digest}"
    branch["name"] = name
    store = RunStore(Path(run) / "branches" / name)
    store.write_config({**config, "branch": branch})
    if not finished:
        if checkpoint_step is not None:
            store.write_checkpoint("checkpoint.pt", {"round": 0, "step": checkpoint_step, "weights": {}})
        return store.path
    gen = torch.Generator().manual_seed(seed)
    rdir = round_dir(of_round)
    stored = dict(sorted(parent.read_tensors(f"{rdir}/masks.safetensors").items()))  # a fixed order to shuffle in
    if masks == "random":
        new_masks = {k: _shuffled(m.bool(), gen) for k, m in stored.items()}
    elif masks == "none":
        new_masks = {k: torch.ones_like(m, dtype=torch.bool) for k, m in stored.items()}
    else:
        new_masks = {k: m.bool() for k, m in stored.items()}
    store.write_tensors("rounds/0000/masks.safetensors", new_masks)
    for file in ("weights.safetensors", "ema.safetensors"):
        if parent.has(f"{rdir}/{file}"):
            tensors = parent.read_tensors(f"{rdir}/{file}")
            if perturb:
                tensors = {k: v + perturb * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
                           for k, v in tensors.items()}
            store.write_tensors(f"rounds/0000/{file}", tensors)
    order = load_round(run, of_round, registry=registry).masks  # the engine's target order
    ordered = [new_masks[k] for k in order]
    kept = sum(int(m.sum()) for m in ordered)
    total = sum(m.numel() for m in ordered)
    metrics = {**record["metrics"], "steps": steps, "nonzero_params": kept}
    if loss is not None:
        metrics["loss"] = loss
    metrics = {k: v for k, v in metrics.items() if not isinstance(v, dict)}  # no evaluator scores copied
    store.write_json("rounds/0000/record.json", {
        "round": 0, "branch": branch, "sparsity": 1.0 - kept / total, "mask_sha256": mask_digest(ordered),
        "groups": record["groups"] if masks != "none" else
        [{**g, "sparsity": 0.0} for g in record["groups"]], "metrics": metrics})
    return store.path

"""What a run holds, round by round (:func:`inspect_run`), and what a round's ticket or a fresh model
costs in theoretical MACs (:func:`model_report`)."""

from __future__ import annotations

from typing import Any

import torch

from .branches import BranchInfo, checkpoint_position, list_branches
from .errors import UsageError
from .metrics.flops import flops_report
from .store import RunStore
from .store.read_checks import verify_run


def inspect_run(run: str, branches: list[BranchInfo] | None = None) -> dict:
    """The ``inspect --json`` document: run path, resolved config, every finished round, every branch.

    A branch folder given as ``run`` is a run of one round; its document also has ``"branch"``. A run
    with a round still to train also has ``"unfinished"``: that round, the step its checkpoint holds
    (0 before the first one) and the round's steps.
    """
    store = RunStore(run)
    config = store.read_config()
    verify_run(store, config)  # report only what the files hold: a damaged one is an error naming it
    doc: dict[str, Any] = {"run": str(store.path), "config": config,
                           "rounds": [store.round_record(k) for k in store.finished_rounds()],
                           "branches": [b.to_json() for b in (list_branches(run) if branches is None else branches)]}
    if isinstance(config.get("branch"), dict):
        doc["branch"] = config["branch"]
    unfinished = unfinished_round(store.path, config, doc["rounds"])
    if unfinished is not None:
        doc["unfinished"] = unfinished
    return doc


def unfinished_round(path: Any, config: dict[str, Any], rounds: list[dict[str, Any]]) -> dict[str, Any] | None:
    """``{"round", "step", "steps", "checkpoint"}`` of the round the run's command trains next, or None
    when the run is as far as its config asks (its rounds, or its target sparsity, reached)."""
    branch = config.get("branch") if isinstance(config.get("branch"), dict) else None
    last = rounds[-1] if rounds else None
    target = config.get("target_sparsity")
    if last is not None and (last["round"] >= (0 if branch else int(config.get("rounds") or 0))
                             or (target is not None and last["sparsity"] >= target)):
        return None
    k = last["round"] + 1 if last is not None else 0
    position = checkpoint_position(path)
    step = position[1] if position is not None and position[0] == k else 0
    steps = (branch or {}).get("steps") or config.get("steps_per_round")
    return {"round": k, "step": step, "steps": steps, "checkpoint": step > 0}


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
        from .api import load_round
        from .branches import branch_of, resolve_source
        path, round_, _ = resolve_source(run, branch, round_)
        loaded = load_round(path, round_, ema=False)
        spec, network, groups = loaded.spec, loaded.network, loaded.groups
        source: dict[str, Any] = {"run": str(path), "round": loaded.round, "sparsity": loaded.record.get("sparsity"),
                                  "branch": branch_of(path)}
    else:
        if round_ is not None:
            raise UsageError("--round needs a RUN directory")
        assert model is not None  # one of the two, checked above
        from .pruning.targets import module_groups
        from .registry import get_registry
        if preset is not None:
            options = {**options, "preset": preset}
        spec = get_registry().create("models", model, **options)
        torch.manual_seed(0)
        network = spec.build().eval()
        groups = module_groups(spec, network)
        source = {"model": model, "preset": preset}
    report = flops_report(network, spec.example_inputs(batch_size), groups)
    return {**source, "batch_size": batch_size, **report}

"""MNIST study, part 2 (issue 18): uniform, global and ERK schedules at matched sparsity, against part 1's
incremental curve.

    python experiments/study/part2.py experiments/study/schedules.toml --out /tmp/study2
    python experiments/study/part2.py experiments/study/schedules.toml --out /tmp/study2 --plan  # no GPU

Trains one trajectory per ``[study] schedules`` (the top-level run settings, part 1's, with ``schedule``
replaced) until its target sparsity, each in its own training process (side by side under CUDA MPS where
the machine has it). A trajectory is one run folder trained in segments (``ticketforge run`` with more
``rounds`` each time: the engine continues where it stopped) that end at the rounds nearest
``[study] sparsities``; those rounds (and the first schedule's dense round 0) are scored by one evaluator
in one scoring process while the trajectories train on: the scores are stored in the round records once
each run is done (it holds its lock while it trains). Each scored round is also counted by
``ticketforge flops``'s function (fvcore; dense and sparse MACs of one forward pass, times the sampler's
steps for one sample). Part 1's incremental trajectory is not trained again: its curve, its seed spread
and its settings come from ``part1-json``; its MACs are estimated from its per-group counts (the
schedule's own math: exact per group, not per layer; bounds given).

The plan is timed against ``budget-minutes`` from the measured rates once the first round has run;
trainings are cut in ``cut-order`` while it does not fit (never the sample count), and the JSON says
which. ``--plan`` prints the job graph and its projection from the TOML's rates, and what the cut order
would cut at those rates, without training anything.

Resumable: runs resume from their checkpoints, a stored score with the same settings is not redone.
Writes ``OUT/results/part2.json``, ``part2_fd.png`` (fd-lenet against sparsity), ``part2_macs.png``
(fd-lenet against sparse sampling MACs) and ``part2_groups.png`` (each schedule's final per-group
sparsity over the U-Net's blocks in forward order). ``--set`` and ``--study-set`` as in part1.py.
The GPU session's steps (wheels to carry, data, the projected minutes) are in README-part2.md.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # common.py, the scheduler part 1 shares

from common import (  # noqa: E402
    TRAINING,
    Job,
    PlannedRounds,
    Scheduler,
    blocked,
    check_cut_order,
    cut_to_fit,
    last_round,
    nearest_rounds,
    plan_rounds,
    read_run,
    run_facts,
    start_mps,
    stop_mps,
    store_scores,
    study_parser,
)

STUDY_KEYS = {"schedules", "sparsities", "part1-json", "evaluator", "samples", "sample-steps", "sample-seed",
              "train-workers", "budget-minutes", "train-rates", "compile-seconds", "round-seconds",
              "score-seconds", "busy-score-seconds", "first-score-seconds", "flops-seconds", "report-seconds",
              "cut-order", "evaluator-options"}


# -- the plan -------------------------------------------------------------------------------------
def trajectory_plan(run_cfg: Any, schedule: str, targets: list[float]) -> dict[str, Any]:
    """Where ``schedule``'s trajectory goes: its rounds' planned sparsity, its last round, its cells."""
    plan = plan_rounds(dataclasses.replace(run_cfg, schedule=schedule), 40)
    last = last_round(plan.sparsity, run_cfg.target_sparsity, plan.cap)
    cells = nearest_rounds(plan.sparsity, targets, last)
    return {"schedule": schedule, "planned_sparsity": plan.sparsity[:last + 1], "last_round": last,
            "cells": [{"target": t, "round": k, "planned_sparsity": plan.sparsity[k]} for t, k in zip(targets, cells)]}


def segments(cells: list[dict[str, Any]], last: int) -> list[tuple[str, int, int]]:
    """A trajectory's trainings: (name, first round, last round), each ending at a cell's round (named by
    its first target), the dense round alone (``dense``) and the rounds past the last cell (``last``)."""
    ends: dict[int, str] = {0: "dense"}
    for c in cells:
        ends.setdefault(c["round"], f"{c['target']:g}")
    ends.setdefault(last, "last")
    out, first = [], 0
    for k in sorted(ends):
        out.append((ends[k], first, k))
        first = k + 1
    return out


def make_plan(run_cfg: Any, study: dict[str, Any], out: Path) -> tuple[list[Job], dict[str, Any]]:
    """Every job of the part, in the order of preference, and what the plan chose.

    Trainings interleave the trajectories segment by segment, so that each worker takes one trajectory
    and keeps it (a segment needs the one before it). The dense score comes first: it trains the
    evaluator's featurizer while the trajectories train."""
    spr = run_cfg.steps_per_round
    chosen: dict[str, Any] = {"trajectories": {}}
    chains: list[list[Job]] = []
    scores: list[Job] = []
    for n, name in enumerate(study["schedules"]):
        traj = trajectory_plan(run_cfg, name, study["sparsities"])
        chosen["trajectories"][name] = traj
        folder, last, chain = str(out / name), traj["last_round"], []
        for label, first, k in segments(traj["cells"], last):
            cfg = dataclasses.replace(run_cfg, schedule=name, out=folder, rounds=k,
                                      target_sparsity=run_cfg.target_sparsity if k == last else None)
            chain.append(Job(f"{name}@{label}", "run", {"config": dataclasses.asdict(cfg), "first_round": first,
                                                          "schedule": name},
                             steps=(k - first + 1) * spr, needs_jobs=[chain[-1].id] if chain else []))
        chains.append(chain)
        made_by = {k: job.id for job in chain for k in range(job.args["first_round"], job.args["config"]["rounds"] + 1)}
        for k in sorted({*([0] if n == 0 else []), *(c["round"] for c in traj["cells"])}):
            for kind in ("score", "flops"):
                scores.append(Job(f"{kind}:{name}-r{k}", kind, {"path": folder, "round": k, "store": False,
                                                               "schedule": name}, needs_jobs=[made_by[k]]))
    training = [job for depth in range(max(map(len, chains))) for chain in chains if depth < len(chain)
                for job in chain[depth:depth + 1]]
    return training + scores, chosen


# -- the projection ---------------------------------------------------------------------------------
def timeline(jobs: dict[str, Job], order: list[str], rates: list[float], study: dict[str, Any], n_train: int,
             now: float = 0.0, compiled: bool = False, scorer_free_at: float = 0.0, scorer_warm: bool = False
             ) -> dict[str, float]:
    """When each job not yet done or cut will end (seconds from the part's start), and ``"end"``: the part's.

    The trajectories train side by side, each of the ``n`` still training at ``rates[n - 1]`` steps/s
    (``n_train`` processes at most: more share them); a round costs ``round-seconds`` on top, the first
    ``compile-seconds`` unless ``compiled``. The scoring process takes the ready jobs in ``order``: a score
    costs ``first-score-seconds`` until one has run, then ``busy-score-seconds`` while anything trains,
    ``score-seconds`` after; a count ``flops-seconds``. ``report-seconds`` close the part."""
    spr_of = {jid: j.args["config"]["steps_per_round"] for jid, j in jobs.items() if j.kind == "run"}
    left: dict[str, float] = {}  # seconds of work at the all-running rate, per training not done
    chains: dict[str, list[str]] = {}
    for jid in order:
        job = jobs[jid]
        if job.kind not in TRAINING or job.state not in ("todo", "running") or blocked(job, jobs):
            continue
        done_steps = job.progress - job.args["first_round"] * spr_of[jid] if job.state == "running" else 0
        steps = max(job.steps - max(done_steps, 0), 0)
        rounds_left = math.ceil(steps / spr_of[jid])
        extra = rounds_left * study["round-seconds"] + (0 if compiled or job.args["first_round"] else study["compile-seconds"])
        left[jid] = steps + extra * rates[min(n_train, len(rates)) - 1]  # overheads as steps at the shared rate
        chains.setdefault(job.args["schedule"], []).append(jid)
    ends: dict[str, float] = {}
    t = now
    current = {c: ids[0] for c, ids in chains.items()}
    while current:
        n = len(current)
        each = rates[min(n, n_train, len(rates)) - 1] * min(n, n_train) / n
        chain, jid = min(current.items(), key=lambda cj: left[cj[1]])
        dt = left[jid] / each
        t += dt
        for c, other in list(current.items()):
            left[other] -= dt * each
            if left[other] <= 1e-6:
                ends[other] = t
                rest = chains[c][chains[c].index(other) + 1:]
                if rest:
                    current[c] = rest[0]
                else:
                    del current[c]
    train_end = max(ends.values(), default=now)
    pending = [jid for jid in order if jobs[jid].kind not in TRAINING and jobs[jid].state == "todo"
               and not blocked(jobs[jid], jobs)]  # a running one: its rest is in ``scorer_free_at``
    t_s, warm = max(scorer_free_at, now), scorer_warm

    def ready_at(jid: str) -> float:
        return max([ends.get(need, now) for need in jobs[jid].needs_jobs], default=now)

    while pending:
        ready = [jid for jid in pending if ready_at(jid) <= t_s]
        if not ready:
            t_s = min(ready_at(jid) for jid in pending)
            continue
        jid = ready[0]
        pending.remove(jid)
        if jobs[jid].kind == "score":
            cost = study["score-seconds"] if warm and t_s >= train_end else \
                study["busy-score-seconds"] if warm else study["first-score-seconds"]
            warm = True
        else:
            cost = study["flops-seconds"]
        t_s += cost
        ends[jid] = t_s
    ends["end"] = max(train_end, t_s) + study["report-seconds"]
    return ends


def dry_run(jobs: list[Job], study: dict[str, Any]) -> dict[str, Any]:
    """The projection at the TOML's rates, and the cuts in ``cut-order`` that make it fit the budget."""
    return cut_to_fit(jobs, study, lambda by_id, order: timeline(by_id, order, study["train-rates"], study,
                                                                 study["train-workers"]))


class Part2Scheduler(Scheduler):
    """Part 2's projection (:func:`timeline` at the measured rate), and the scores stored once their run is done."""

    def projected_end(self) -> float | None:
        rates = [r for w in self.workers if w["kind"] == "train" and (r := self.rate(w))]
        if not rates or self.first_round_s is None:
            return None
        table = self.study["train-rates"]
        n_now = sum(1 for w in self.workers if w["kind"] == "train" and w["job"])
        scale = (sum(rates) / len(rates)) / table[min(max(n_now, 1), len(table)) - 1]
        scorer = next(w for w in self.workers if w["kind"] == "score")
        running = self.jobs[scorer["job"]] if scorer["job"] else None
        warm = any(j.kind == "score" and j.state == "done" for j in self.jobs.values())
        scoring = running is not None and running.kind == "score"  # what is left of it, at its planned cost
        cost = (self.study["busy-score-seconds"] if warm else self.study["first-score-seconds"]) if scoring else 0.0
        free_at = time.time() - self.t0 + (max(cost - (time.time() - (running.started or 0)), 0) if running else 0)
        warm = warm or scoring
        ends = timeline(self.jobs, self.order, [scale * r for r in table], self.study, len(self.workers) - 1,
                        now=time.time() - self.t0, compiled=True, scorer_free_at=free_at, scorer_warm=warm)
        return ends["end"]

    def after_pass(self) -> None:
        store_finished_scores(self.jobs, self.study["evaluator"], self.say)


def store_finished_scores(jobs: dict[str, Job], evaluator: str, say: Any = print) -> None:
    """Store each new score in its round's record once its run trains no more (nothing of it todo or running);
    one that cannot be stored is said, and kept in the job's result (and so in its row of the JSON)."""
    busy = {j.args["config"]["out"] for j in jobs.values() if j.kind == "run" and j.state in ("todo", "running")}
    for job in jobs.values():
        if job.kind == "score" and job.state == "done" and not job.result.get("stored", True) \
                and job.args["path"] not in busy:
            try:
                store_scores(job.args["path"], job.args["round"], evaluator, job.result["scores"])
            except Exception as exc:  # the JSON still has the scores; a rerun scores the round again
                job.result["store_error"] = f"{type(exc).__name__}: {exc}"
                say(f"could not store the scores of {job.id}: {job.result['store_error']}")
            job.result["stored"] = True


# -- part 1's incremental curve ----------------------------------------------------------------------
def part1_reference(path: Path, run_cfg: Any, sample_steps: int) -> dict[str, Any]:
    """Part 1's incremental cells (seed 0: its curve; the seed-1 cell: the spread), with each cell's
    per-group profile from the schedule's math and its MACs estimated from it (see :func:`estimate_macs`)."""
    from ticketforge import RunConfig

    doc = json.loads(path.read_text())
    known = {f.name for f in dataclasses.fields(RunConfig)}
    cfg = RunConfig(**{k: v for k, v in doc["run_config"].items() if k in known})  # part 1's run: its preset, its p, q
    cells = [c for c in doc["cells"] if c["kind"] == "ticket"]
    plan = plan_rounds(cfg, max(c["round"] for c in cells))
    curve = []
    for c in sorted((c for c in cells if c["seed"] == 0), key=lambda c: c["round"]):
        k = c["round"]
        curve.append({"round": k, "cell": c["cell"], "sparsity": c["sparsity"], "planned_sparsity": plan.sparsity[k],
                      "fd_lenet": c["fd_lenet"], "kid": c["kid"], "kid_std": c["kid_std"], "n_samples": c["n_samples"],
                      "final_loss": c.get("final_loss"), "kept_params": sum(group_kept(plan.groups[k])),
                      "groups": plan.groups[k], **estimate_macs(cfg, plan, group_kept(plan.groups[k]), sample_steps)})
    spread = None
    for c in cells:
        mate = next((m for m in curve if m["round"] == c["round"]), None)
        if c["seed"] not in (0, None) and mate is not None and c["fd_lenet"] is not None:
            gap = abs(c["fd_lenet"] - mate["fd_lenet"])
            spread = {"round": c["round"], "sparsity": c["sparsity"], "fd_lenet": [mate["fd_lenet"], c["fd_lenet"]],
                      "seeds": [0, c["seed"]], "abs": gap, "rel": gap / ((c["fd_lenet"] + mate["fd_lenet"]) / 2)}
    settings = {k: v for k, v in doc["run_config"].items() if k not in ("out", "schedule", "p", "q")}
    ours = dataclasses.asdict(run_cfg)
    return {"file": str(path), "commit": doc.get("commit"), "device": doc.get("device"), "curve": curve,
            "seed_spread": spread, "schedule": {"schedule": cfg.schedule, "p": cfg.p, "q": cfg.q},
            "settings_differing": {k: {"part1": v, "part2": ours.get(k)} for k, v in settings.items() if ours.get(k) != v}}


_COUNTS: dict[str, Any] = {}


def group_kept(groups: list[dict[str, Any]]) -> list[int]:
    """Weights kept per group, from a round record's ``groups`` (params and sparsity)."""
    return [round(g["params"] * (1.0 - g["sparsity"])) for g in groups]


def estimate_macs(cfg: Any, plan: PlannedRounds, kept: list[int], sample_steps: int) -> dict[str, Any]:
    """Sparse MACs from the weights ``kept`` in each group alone (part 1 kept no masks): each group's kept
    weights spread over its layers in proportion to their size, and the bounds that any split of them
    gives (the kept weights in the layers of fewest, or most, MACs per weight first). Counted with the
    MACs of ``ticketforge flops`` (fvcore, one forward pass of one image) on a fresh network of ``cfg``'s
    model; ``plan`` gives its pruned tensors."""
    from ticketforge.metrics.flops import LeafMacs, MacCount, count_macs
    from ticketforge.registry import get_registry

    key = f"{cfg.model}:{cfg.preset}"
    if key not in _COUNTS:
        spec = get_registry().create("models", cfg.model, **{**cfg.model_options, "preset": cfg.preset})
        _COUNTS[key] = count_macs(spec.build().eval(), spec.example_inputs(1))
    count: MacCount = _COUNTS[key]
    sizes = plan.kept[0]
    by_group: dict[int, list[int]] = {}
    for i, (_, g) in enumerate(plan.targets):
        by_group.setdefault(g, []).append(i)
    per_weight = [count.leaves[name].weight / sizes[i] for i, (name, _) in enumerate(plan.targets)]

    def sparse(kept: list[float]) -> float:
        leaves = dict(count.leaves)
        for i, (name, _) in enumerate(plan.targets):
            leaf = count.leaves[name]
            leaves[name] = LeafMacs(leaf.dense, leaf.weight, kept[i] / sizes[i])
        return MacCount(count.total, leaves).sparse

    prop = [0.0] * len(sizes)
    low, high = [0.0] * len(sizes), [0.0] * len(sizes)
    for g, idx in by_group.items():
        total = sum(sizes[i] for i in idx)
        for i in idx:
            prop[i] = kept[g] * sizes[i] / total
        for fill, reverse in ((low, False), (high, True)):
            rest = kept[g]
            for i in sorted(idx, key=lambda i: per_weight[i], reverse=reverse):
                fill[i] = min(sizes[i], rest)
                rest -= fill[i]
    est, lo, hi = sparse(prop), sparse(low), sparse(high)
    return {"dense_macs": count.dense, "sparse_macs": round(est), "sparse_macs_bounds": [round(lo), round(hi)],
            "sampling_dense_macs": count.dense * sample_steps, "sampling_sparse_macs": round(est) * sample_steps,
            "sampling_sparse_macs_bounds": [round(lo) * sample_steps, round(hi) * sample_steps],
            "macs_estimated": True}


# -- what comes out ---------------------------------------------------------------------------------
def collect(jobs: dict[str, Job], chosen: dict[str, Any], study: dict[str, Any], out: Path, run_cfg: Any
            ) -> list[dict[str, Any]]:
    """One row per scored round: its scores, parameters kept, MACs and per-group profile; and the estimate
    part 1's MACs get (:func:`estimate_macs`) made from the row's per-group counts, to check it by."""
    from ticketforge.store import RunStore

    ev, steps = study["evaluator"], study["sample-steps"]
    structure = plan_rounds(run_cfg, 0)  # the pruned tensors, for the estimate's check
    rows = []
    for job in jobs.values():
        if job.kind != "score" or job.state != "done":
            continue
        name, k = job.args["schedule"], job.args["round"]
        traj = chosen["trajectories"][name]
        record = RunStore(job.args["path"]).round_record(k)
        scores = job.result["scores"]
        flops = jobs[job.id.replace("score:", "flops:", 1)]
        macs = flops.result if flops.state == "done" else None
        metric = ev.replace("-", "_")
        check = estimate_macs(run_cfg, structure, group_kept(record["groups"]), steps)
        rows.append({
            "id": job.id.removeprefix("score:"), "schedule": name, "round": k, "sparsity": record["sparsity"],
            "cell": next((f"{c['target']:g}" for c in traj["cells"] if c["round"] == k), "dense"),
            "fd_lenet": scores.get(metric), "kid": scores.get(metric.replace("fd_", "kid_")),
            "kid_std": scores.get(metric.replace("fd_", "kid_") + "_std"), "n_samples": scores.get("n_samples"),
            "featurizer_sha256": scores.get("featurizer_sha256"),
            "featurizer_test_accuracy": scores.get("featurizer_test_accuracy"),
            "final_loss": record["metrics"].get("loss"), "train_seconds": record["metrics"].get("seconds"),
            "score_seconds": job.result.get("seconds"), "score_reused": job.result.get("reused"),
            "store_error": job.result.get("store_error"),
            "folder": str(Path(job.args["path"]).relative_to(out)),
            "params": macs and macs["params"], "nonzero_params": macs and macs["nonzero_params"],
            "prunable_params": record["metrics"].get("prunable_params"),
            "dense_macs": macs and macs["dense_macs"], "sparse_macs": macs and macs["sparse_macs"],
            "other_macs": macs and macs["other_macs"],
            "sampling_dense_macs": macs and macs["dense_macs"] * steps,
            "sampling_sparse_macs": macs and macs["sparse_macs"] * steps,
            "estimated_sampling_sparse_macs": check["sampling_sparse_macs"],
            "estimated_sampling_sparse_macs_bounds": check["sampling_sparse_macs_bounds"],
            "groups": [{**g, **({"nonzero_params": f["nonzero_params"], "dense_macs": f["dense_macs"],
                                 "sparse_macs": f["sparse_macs"]} if f else {})}
                       for g, f in zip(record["groups"], (macs or {}).get("by_group") or [None] * len(record["groups"]))]})
    return sorted(rows, key=lambda r: (study["schedules"].index(r["schedule"]), r["round"]))


def final_profiles(chosen: dict[str, Any], out: Path, reference: dict[str, Any] | None) -> dict[str, Any]:
    """Each trajectory's last finished round: its per-group sparsity in forward order (part 1's incremental
    from its schedule's math at its last scored round)."""
    from ticketforge.store import RunStore

    profiles: dict[str, Any] = {}
    for name in chosen["trajectories"]:
        store = RunStore(out / name)
        finished = store.finished_rounds() if store.exists() else []
        if finished:
            record = store.round_record(finished[-1])
            profiles[name] = {"round": finished[-1], "sparsity": record["sparsity"], "groups": record["groups"]}
    if reference and reference["curve"]:
        top = reference["curve"][-1]
        profiles[f"{reference['schedule']['schedule']} (part 1)"] = {
            "round": top["round"], "sparsity": top["sparsity"], "groups": top["groups"], "from_part1": True}
    return profiles


def interpolate(points: list[tuple[float, float]], x: float) -> float | None:
    """Piecewise-linear in x through sorted ``points`` (x, y); None outside their range."""
    xs = [p[0] for p in points]
    if not points or x < xs[0] or x > xs[-1]:
        return None
    i = min(max(bisect.bisect_left(xs, x), 1), len(xs) - 1)
    (x0, y0), (x1, y1) = points[i - 1], points[i]
    return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def compare(rows: list[dict[str, Any]], reference: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Each schedule's cell against part 1's incremental curve at the same sparsity (log fd-lenet
    interpolated between part 1's rounds), with the margin against part 1's seed spread (relative, as
    measured at its first cell), and the sparsity at which the incremental curve has the cell's fd-lenet."""
    if not reference or not reference["curve"]:
        return []
    curve = [(c["sparsity"], math.log(c["fd_lenet"])) for c in reference["curve"] if c["fd_lenet"]]
    spread = reference["seed_spread"]
    out = []
    for r in rows:
        if r["cell"] == "dense" or not r["fd_lenet"]:
            continue
        at = interpolate(curve, r["sparsity"])
        inc = math.exp(at) if at is not None else None
        by_fd = sorted((y, x) for x, y in curve[1:])  # fd rises with sparsity past the dense round
        same_quality = interpolate(by_fd, math.log(r["fd_lenet"])) if by_fd else None
        margin = r["fd_lenet"] - inc if inc is not None else None
        allowed = spread["rel"] * inc if spread and inc is not None else None
        verdict = None if margin is None or allowed is None else \
            "incremental better" if margin > allowed else "schedule better" if margin < -allowed else "within the seed spread"
        out.append({"schedule": r["schedule"], "cell": r["cell"], "round": r["round"], "sparsity": r["sparsity"],
                    "fd_lenet": r["fd_lenet"], "incremental_fd_lenet_at_sparsity": inc, "margin": margin,
                    "seed_spread_at_this_fd": allowed, "verdict": verdict,
                    "incremental_sparsity_at_this_fd": same_quality,
                    "sampling_sparse_macs": r["sampling_sparse_macs"]})
    return out


def claim(comparisons: list[dict[str, Any]], schedule: str = "uniform") -> dict[str, Any]:
    """The paper's claim against ``schedule``: held where incremental wins by more than the seed spread at
    every scored cell, not held where the schedule wins at any, not decided otherwise."""
    mine = [c for c in comparisons if c["schedule"] == schedule]
    verdicts = [c["verdict"] for c in mine]
    status = "not decided" if not mine or None in verdicts else \
        "not held" if "schedule better" in verdicts else \
        "held" if all(v == "incremental better" for v in verdicts) else "not decided"
    return {"against": schedule, "status": status, "cells": [c["cell"] for c in mine], "verdicts": verdicts}


def markdown(rows: list[dict[str, Any]], reference: dict[str, Any] | None, comparisons: list[dict[str, Any]]) -> str:
    """The table for docs/results.md: every scored round, part 1's incremental cells marked as from part 1."""
    def g(macs: float | None) -> str:
        return "" if macs is None else f"{macs / 1e9:.2f}"

    lines = ["| schedule | cell | round | sparsity | fd-lenet | KID on LeNet features (± over subsets) | params kept "
             "(prunable) | sampling MACs per sample, dense -> sparse (G) | final training loss |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| `{r['schedule']}` | {r['cell']} | {r['round']} | {100 * r['sparsity']:.2f}% | {r['fd_lenet']:.2f} | "
                     f"{r['kid']:.1f} ± {r['kid_std']:.1f} | {(r['prunable_params'] or 0) - round(r['sparsity'] * (r['prunable_params'] or 0)):,} | "
                     f"{g(r['sampling_dense_macs'])} -> {g(r['sampling_sparse_macs'])} | {r['final_loss']:.4f} |")
    for c in (reference or {}).get("curve", []):
        lo, hi = c["sampling_sparse_macs_bounds"]
        lines.append(f"| `{reference['schedule']['schedule']}` (part 1) | {c['cell']} | {c['round']} | {100 * c['sparsity']:.2f}% | "
                     f"{c['fd_lenet']:.2f} | {c['kid']:.1f} ± {c['kid_std']:.1f} | {c['kept_params']:,} | "
                     f"{g(c['sampling_dense_macs'])} -> ~{g(c['sampling_sparse_macs'])} ({g(lo)}-{g(hi)}, estimated) | "
                     f"{'' if c['final_loss'] is None else format(c['final_loss'], '.4f')} |")
    if comparisons:
        lines += ["", "| schedule | cell | sparsity | fd-lenet | incremental (part 1) at that sparsity | margin | "
                  "seed spread there | verdict | incremental's sparsity at this fd-lenet |", "|---|---|---:|---:|---:|---:|---:|---|---:|"]
        for c in comparisons:
            def f(x: float | None, spec: str = ".2f") -> str:
                return "" if x is None else format(x, spec)
            same = "" if c["incremental_sparsity_at_this_fd"] is None else f"{100 * c['incremental_sparsity_at_this_fd']:.1f}%"
            lines.append(f"| `{c['schedule']}` | {c['cell']} | {100 * c['sparsity']:.2f}% | {c['fd_lenet']:.2f} | "
                         f"{f(c['incremental_fd_lenet_at_sparsity'])} | {f(c['margin'])} | {f(c['seed_spread_at_this_fd'])} | "
                         f"{c['verdict'] or 'not decided'} | {same} |")
    return "\n".join(lines) + "\n"


# -- the plots --------------------------------------------------------------------------------------
def _plt() -> Any:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_fd(rows: list[dict[str, Any]], reference: dict[str, Any] | None, x: str, file: Path, n_samples: int) -> None:
    """fd-lenet against sparsity (``x`` "sparsity") or sparse sampling MACs (``x`` "macs"), a line per schedule."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    value = (lambda r: 100 * r["sparsity"]) if x == "sparsity" else (lambda r: r["sampling_sparse_macs"] / 1e9)
    for name in dict.fromkeys(r["schedule"] for r in rows):
        pts = sorted((value(r), r["fd_lenet"]) for r in rows if r["schedule"] == name and r["round"] > 0
                     and r["fd_lenet"] is not None and (x == "sparsity" or r["sampling_sparse_macs"]))
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=name)
    if reference and reference["curve"]:
        inc = [c for c in reference["curve"] if c["round"] > 0 and c["fd_lenet"]]
        label = f"{reference['schedule']['schedule']} (from part 1{', MACs estimated' if x == 'macs' else ''})"
        xs = [value(c) for c in inc]
        line, = ax.plot(xs, [c["fd_lenet"] for c in inc], "s--", color="k", label=label)
        if x == "macs":
            lo = [c["sampling_sparse_macs_bounds"][0] / 1e9 for c in inc]
            hi = [c["sampling_sparse_macs_bounds"][1] / 1e9 for c in inc]
            ax.errorbar(xs, [c["fd_lenet"] for c in inc], xerr=[[a - b for a, b in zip(xs, lo)],
                        [b - a for a, b in zip(xs, hi)]], fmt="none", ecolor=line.get_color(), capsize=3)
    dense = next((r for r in rows if r["round"] == 0 and r["fd_lenet"] is not None), None)
    if dense is not None:
        ax.axhline(dense["fd_lenet"], ls=":", color="gray", label="dense (round 0)")
    ax.set_xlabel("sparsity (% of prunable weights removed)" if x == "sparsity"
                  else "sparse MACs per sample (G; DDIM steps x one forward pass, theoretical)")
    ax.set_ylabel(f"fd-lenet ({n_samples} samples; lower is better)")
    ax.set_yscale("log")
    if x == "macs":
        ax.invert_xaxis()  # sparser to the right, as in the sparsity plot
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(file, dpi=130)
    plt.close(fig)


def plot_groups(profiles: dict[str, Any], file: Path) -> None:
    """Each schedule's final per-group sparsity over the U-Net's blocks in forward order."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 4.8))
    names = [g["name"] for g in next(iter(profiles.values()))["groups"]]
    for label, prof in profiles.items():
        if [g["name"] for g in prof["groups"]] != names:
            print(f"part2_groups.png leaves out {label}: its model has other module groups")
            continue
        ax.plot(range(len(prof["groups"])), [100 * g["sparsity"] for g in prof["groups"]],
                "s--" if prof.get("from_part1") else "o-", ms=4,
                label=f"{label}: round {prof['round']}, {100 * prof['sparsity']:.1f}% overall")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("sparsity of the group (%)")
    ax.set_xlabel("module group (the U-Net's blocks in forward order)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(file, dpi=130)
    plt.close(fig)


# -- the command ----------------------------------------------------------------------------------
def print_plan(jobs: list[Job], chosen: dict[str, Any], projection: dict[str, Any]) -> None:
    for name, traj in chosen["trajectories"].items():
        print(f"{name}: rounds 0-{traj['last_round']} ({100 * traj['planned_sparsity'][-1]:.2f}%), cells "
              + ", ".join(f"{c['target']:g} -> round {c['round']} ({100 * c['planned_sparsity']:.2f}%)"
                          for c in traj["cells"]))
    ends, uncut = projection["ends"], projection["uncut_ends"]
    for job in jobs:
        needs = f" after {', '.join(job.needs_jobs)}" if job.needs_jobs else ""
        span = f" rounds {job.args['first_round']}-{job.args['config']['rounds']}, {job.steps} steps" \
            if job.kind == "run" else ""
        when = f"ends at {ends[job.id] / 60:5.1f} min" if job.id in ends else \
            f"CUT (uncut it would end at {uncut[job.id] / 60:.1f} min)"
        print(f"  {job.id:24s} {job.kind:5s} {when}{span}{needs}")
    print(f"projected end, uncut: {projection['uncut_end_s'] / 60:.1f} min; with the cuts below: "
          f"{projection['end_s'] / 60:.1f} min of the {projection['budget_s'] / 60:.0f} min budget"
          + ("" if projection["fits"] else " (STILL OVER: the script cuts more as it runs)"))
    for c in projection["cuts"]:
        print(f"  cut {c['job']}" + (f" (and {', '.join(c['with'])})" if c["with"] else "")
              + f": the plan would end at {c['projected_end_s'] / 60:.1f} min")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = study_parser(__doc__).parse_args(argv)
    run_cfg, study, out = read_run(args, STUDY_KEYS)
    jobs, chosen = make_plan(run_cfg, study, out)
    check_cut_order(args, study, jobs, [j for j in jobs if j.kind in TRAINING], "training")
    projection = dry_run(jobs, study)
    if args.plan:
        print_plan(jobs, chosen, projection)
        return {"plan": chosen, "projection": projection}
    part1_json = Path(study["part1-json"]) if study.get("part1-json") else None
    if part1_json is not None and not part1_json.is_absolute():
        part1_json = (args.config.parent / part1_json).resolve()
    (out / "results").mkdir(parents=True, exist_ok=True)
    mps = not args.no_mps and start_mps(out)
    log = open(out / "results" / "part2.log", "a")
    sched = Part2Scheduler(jobs, {**study, "log-dir": str(out / "results")}, study["train-workers"], log)
    sched.say(f"plan: {sum(j.kind == 'run' for j in jobs)} trainings, {sum(j.kind == 'score' for j in jobs)} scores; "
              + "; ".join(f"{n} cells at rounds {[c['round'] for c in t['cells']]}" for n, t in chosen["trajectories"].items())
              + f"; projected {projection['uncut_end_s'] / 60:.1f} min uncut at the TOML's rates; MPS {'on' if mps else 'off'}")
    try:
        sched.run(run_cfg.precision, run_cfg.compile)
    finally:
        sched.close()
        if mps:
            stop_mps()
    store_finished_scores(sched.jobs, study["evaluator"], sched.say)
    reference = part1_reference(part1_json, run_cfg, study["sample-steps"]) if part1_json else None
    rows = collect(sched.jobs, chosen, study, out, run_cfg)
    comparisons = compare(rows, reference)
    result = {
        "evaluator": study["evaluator"], "rows": rows, "part1": reference, "comparisons": comparisons,
        "claim": claim(comparisons), "final_profiles": final_profiles(chosen, out, reference),
        "dense_vs_part1": {"part2": next((r["fd_lenet"] for r in rows if r["round"] == 0), None),
                           "part1": next((c["fd_lenet"] for c in (reference or {}).get("curve", []) if c["round"] == 0), None)},
        "plan": chosen, "projection_at_start": {k: projection[k] for k in ("uncut_end_s", "end_s", "cuts", "budget_s")},
        **run_facts(args, study, run_cfg, sched, mps)}
    (out / "results" / "part2.json").write_text(json.dumps(result, indent=1, default=str))
    (out / "results" / "part2_table.md").write_text(markdown(rows, reference, comparisons))
    if rows:
        plot_fd(rows, reference, "sparsity", out / "results" / "part2_fd.png", study["samples"])
        plot_fd(rows, reference, "macs", out / "results" / "part2_macs.png", study["samples"])
    if result["final_profiles"]:
        plot_groups(result["final_profiles"], out / "results" / "part2_groups.png")
    sched.say(f"wrote {out / 'results'} ({time.time() - sched.t0:.0f} s)")
    return result


if __name__ == "__main__":
    main()

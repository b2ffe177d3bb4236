"""MNIST study, part 1: the ticket against its controls at three sparsities, and the rewind point.

    python experiments/study/part1.py experiments/study/rewind.toml --out runs/study-part1

Trains the run the TOML describes (seed 0, rounds until its target sparsity) and, at the rounds nearest
``[study] sparsities``, the lottery branches that are its controls (``ticketforge branch``: the ticket's
masks from theta_0, from another rewind point, from a fresh init; random masks at the ticket's
per-tensor counts from theta_tau), a dense branch from theta_tau, and the first cell again from a run of
``spread-seed``. Everything is scored with one evaluator in one process (the denoiser compiled once)
while training goes on. Several training processes share the GPU (under CUDA MPS where the machine has
it), each keeping its compiled step across jobs. The plan is timed against ``budget-minutes`` once the
first round has run; cells are cut in ``cut-order`` while it does not fit (never the sample count), and
the JSON says which.

Resumable: runs and branches resume from their checkpoints, a stored score with the same settings is
not redone. Writes ``OUT/results/part1.json``, ``part1_fd.png`` and ``part1_samples.png``.
``--set KEY=VALUE`` and ``--study-set KEY=VALUE`` (TOML values) override the file, for a smoke test:

    python experiments/study/part1.py experiments/study/rewind.toml --out /tmp/p1 --set preset=\\"tiny\\" \\
        --set steps-per-round=20 --set compile=false --set precision=\\"auto\\" --set dataset=\\"mnist-sample\\" ...
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # common.py, the scheduler part 2 shares

from common import (  # noqa: E402
    CLOSING_LAYERS,
    Job,
    Scheduler,
    check_cut_order,
    last_round,
    nearest_rounds,
    planned_sparsities,
    run_facts,
    start_mps,
    stop_mps,
    study_arguments,
)
from common import read_study as read_any_study  # noqa: E402

STUDY_KEYS = {"sparsities", "controls", "spread-seed", "repro-round", "evaluator", "samples", "sample-steps",
              "sample-seed", "train-workers", "budget-minutes", "score-seconds", "cut-order", "evaluator-options"}


# -- the plan -------------------------------------------------------------------------------------
def read_study(path: Path, sets: list[str], study_sets: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run's settings (paths made relative to the TOML file) and the [study] table, overrides applied."""
    return read_any_study(path, sets, study_sets, STUDY_KEYS)


def parse_control(name: str) -> dict[str, Any]:
    """``ticket-tau0.2`` -> masks ticket, start tau, rewind fraction 0.2 (the branch folder's own spelling)."""
    masks, _, start = name.partition("-")
    fraction = None
    if start.startswith("tau") and start != "tau":
        start, fraction = "tau", float(start[3:])
    if masks not in ("ticket", "random", "none") or start not in ("tau", "init", "reinit"):
        sys.exit(f"unknown control {name!r}: give <ticket|random|none>-<tau|tauF|init|reinit>")
    return {"masks": masks, "start": start, "rewind_fraction": fraction}


def make_plan(run_cfg: Any, study: dict[str, Any], out: Path) -> tuple[list[Job], dict[str, Any]]:
    """Every job of the part, in the order of preference, and what the plan chose."""
    steps = run_cfg.steps_per_round
    planned, cap = planned_sparsities(run_cfg, 40)
    last = last_round(planned, run_cfg.target_sparsity, cap)
    cells = nearest_rounds(planned, study["sparsities"], last)
    s0, s1 = out / "seed0", out / "seed1"
    spread_seed = study.get("spread-seed")
    controls = [parse_control(c) for c in study["controls"]]
    jobs = [Job("run-s0", "run", {"config": dataclasses.asdict(dataclasses.replace(run_cfg, out=str(s0)))},
                steps=(last + 1) * steps)]
    if spread_seed is not None:
        cfg1 = dataclasses.replace(run_cfg, seed=spread_seed, out=str(s1), rounds=cells[0], target_sparsity=None)
        jobs.append(Job("run-s1", "run", {"config": dataclasses.asdict(cfg1)}, steps=(cells[0] + 1) * steps))

    def branch_job(seed_tag: str, run: Path, k: int, label: str, ctl: dict[str, Any], cell: str) -> Job:
        return Job(f"{seed_tag}{cell}-{label}", "branch", {"run": str(run), "round": k, **ctl}, steps=steps,
                   needs_rounds=[(str(run), k)])

    jobs.append(branch_job("s0", s0, 0, "none-tau", parse_control("none-tau"), "@dense"))
    if study.get("repro-round"):
        jobs.append(dataclasses.replace(branch_job("s0", s0, study["repro-round"], "ticket-tau",
                                                   parse_control("ticket-tau"), "@repro"), id="repro"))
    # highest sparsity first: gated by its round, it starts as soon as that round is done, ahead of
    # lower cells still queued (the run is the critical path)
    for target, k in reversed(list(zip(study["sparsities"], cells))):
        for name, ctl in zip(study["controls"], controls):
            jobs.append(branch_job("s0", s0, k, name, ctl, f"@{target:g}"))
        if target == study["sparsities"][0] and spread_seed is not None:
            for name, ctl in zip(study["controls"], controls):
                jobs.append(branch_job("s1", s1, k, name, ctl, f"@{target:g}"))
    # scores: branches as they finish; rounds once their run is done (a run holds its lock while it trains)
    for job in list(jobs):
        if job.kind == "branch" and job.id != "repro":
            jobs.append(Job(f"score:{job.id}", "score", {"branch_job": job.id}, needs_jobs=[job.id]))
    for k in sorted({0, *cells, last}):
        jobs.append(Job(f"score:s0-r{k}", "score", {"path": str(s0), "round": k}, needs_jobs=["run-s0"]))
    if spread_seed is not None:
        jobs.append(Job(f"score:s1-r{cells[0]}", "score", {"path": str(s1), "round": cells[0]}, needs_jobs=["run-s1"]))
    chosen = {"planned_sparsity": planned[:last + 1], "last_round": last,
              "cells": [{"target": t, "round": k, "planned_sparsity": planned[k]} for t, k in zip(study["sparsities"], cells)]}
    return jobs, chosen


class Part1Scheduler(Scheduler):
    """Part 1's projection: the seed-0 run is the critical path, the branches fill the other workers."""

    def projected_end(self) -> float | None:
        """Seconds from the start at which the plan ends, at the training rate seen now."""
        rates = [r for w in self.workers if w["kind"] == "train" and (r := self.rate(w))]
        if not rates or self.first_round_s is None:
            return None
        per_proc = sum(rates) / len(rates)
        n_train = sum(w["kind"] == "train" for w in self.workers)
        aggregate = per_proc * n_train
        s0 = self.jobs["run-s0"]
        spr = s0.args["config"]["steps_per_round"]
        s0_left = 0 if s0.state == "done" else s0.steps - s0.progress
        critical = (s0_left + spr) / per_proc  # the run, then a branch of its last cell
        train_end = max(self.remaining_steps() / aggregate, critical)
        scores_left = sum(j.kind == "score" and j.state in ("todo", "running") for j in self.jobs.values())
        tail = min(scores_left, 8) * self.study["score-seconds"] + 60  # run rounds and last branches, grids
        return time.time() - self.t0 + train_end + tail


# -- what comes out ---------------------------------------------------------------------------------
def weight_stats(run: Path, k: int, start_file: str | None) -> dict[str, Any]:
    """Kept fraction and RMS of the surviving weights of the layers that close a residual branch (DDPM
    initialises them at 1e-10 scale) against all others, trained and at the start weights."""
    from ticketforge.store import RunStore
    from ticketforge.store.run_store import round_dir

    store = RunStore(run)
    masks = store.read_tensors(f"{round_dir(k)}/masks.safetensors")
    trained = store.read_tensors(f"{round_dir(k)}/weights.safetensors")
    start = RunStore(run).read_tensors(start_file) if start_file else None
    out: dict[str, Any] = {}
    for group, pick in (("closing", True), ("other", False)):
        names = [n for n in masks if n.endswith(CLOSING_LAYERS) == pick]
        kept = sum(int(masks[n].sum()) for n in names)
        total = sum(masks[n].numel() for n in names)

        def rms(tensors: dict[str, Any]) -> float:
            sq = sum(float((tensors[f"{n}.weight"].float()[masks[n]] ** 2).sum()) for n in names)  # noqa: B023
            return (sq / max(kept, 1)) ** 0.5  # noqa: B023 (called in this iteration only)

        per_layer = [float(masks[n].float().mean()) for n in names]
        out[group] = {"layers": len(names), "weights": total, "kept_fraction": kept / max(total, 1),
                      "min_layer_kept_fraction": min(per_layer, default=None),
                      "layers_under_1pct_kept": sum(f < 0.01 for f in per_layer),
                      "rms_trained": rms(trained), **({"rms_start": rms(start)} if start else {})}
    return out


def collect(jobs: dict[str, Job], chosen: dict[str, Any], study: dict[str, Any], out: Path) -> dict[str, Any]:
    from ticketforge.store import RunStore

    ev = study["evaluator"]
    arch = "lenet"
    cells = []
    for job in jobs.values():
        if job.kind != "score" or job.state != "done":
            continue
        scores = job.result["scores"]
        if "branch_job" in job.args:
            made = jobs[job.args["branch_job"]]
            path, k = Path(made.args["run"]) / "branches" / made.result["name"], 0
            seed_tag, cell = made.id.split("@")[0], made.id.split("@")[1]
            kind = cell.split("-", 1)[1] if "-" in cell else cell
            of_round, target = made.args["round"], cell.split("-", 1)[0]
        else:
            path, k = Path(job.args["path"]), job.args["round"]
            seed_tag, kind, of_round = ("s0" if path.name == "seed0" else "s1"), "ticket", k
            target = next((f"{c['target']:g}" for c in chosen["cells"] if c["round"] == k), "dense" if k == 0 else f"r{k}")
        record = RunStore(path).round_record(k)
        cells.append({"id": job.id.removeprefix("score:"), "seed": 0 if seed_tag == "s0" else study.get("spread-seed"),
                      "cell": target, "kind": kind, "round": of_round, "sparsity": record["sparsity"],
                      "fd_lenet": scores.get(f"fd_{arch}"), "kid": scores.get(f"kid_{arch}"),
                      "kid_std": scores.get(f"kid_{arch}_std"), "final_loss": record["metrics"].get("loss"),
                      "train_seconds": record["metrics"].get("seconds"), "folder": str(path.relative_to(out)),
                      "score_seconds": job.result.get("seconds"), "score_reused": job.result.get("reused"),
                      "featurizer_test_accuracy": scores.get("featurizer_test_accuracy"),
                      "featurizer_sha256": scores.get("featurizer_sha256"), "n_samples": scores.get("n_samples")})
    return {"evaluator": ev, "cells": sorted(cells, key=lambda c: (c["sparsity"], c["seed"] or 0, c["kind"]))}


def plot_fd(cells: list[dict[str, Any]], n_samples: int, file: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    kinds = sorted({c["kind"] for c in cells if c["seed"] == 0 and c["cell"] != "dense"} - {"ticket"})
    colors = {}
    for kind in ["ticket", *kinds]:
        pts = sorted((c["sparsity"], c["fd_lenet"]) for c in cells if c["seed"] == 0 and c["kind"] == kind
                     and c["fd_lenet"] is not None and (kind != "ticket" or c["round"] > 0))
        if pts:
            line, = ax.plot([100 * s for s, _ in pts], [f for _, f in pts], "o-", lw=2.5 if kind == "ticket" else 1.2,
                            label=f"{kind} (seed 0)")
            colors[kind] = line.get_color()
    other = [c for c in cells if c["seed"] not in (0, None) and c["fd_lenet"] is not None]
    for c in other:
        ax.plot(100 * c["sparsity"], c["fd_lenet"], "x", color=colors.get(c["kind"], "k"), ms=8, mew=2)
    if other:
        ax.plot([], [], "x", color="k", label=f"seed {other[0]['seed']} (colour of its kind)")
    for c in cells:
        if c["cell"] == "dense" or (c["kind"] == "ticket" and c["round"] == 0 and c["seed"] == 0):
            label = "dense, round 0" if c["kind"] == "ticket" else f"dense from theta_tau ({c['kind']})"
            ax.axhline(c["fd_lenet"], ls="--" if c["kind"] == "ticket" else ":", color="gray", label=label)
    ax.set_xlabel("sparsity (% of prunable weights removed)")
    ax.set_ylabel(f"fd-lenet ({n_samples} samples; lower is better)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(file, dpi=130)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = study_arguments(__doc__, "folder of the runs, their branches and results/")
    args = ap.parse_args(argv)

    from ticketforge import RunConfig

    run_data, study = read_study(args.config, args.sets, args.study_sets)
    out = args.out.resolve()
    run_cfg = RunConfig.from_dict(run_data, source=str(args.config))
    if run_cfg.target_sparsity is None or run_cfg.steps_per_round is None:
        sys.exit(f"{args.config}: give target-sparsity and steps-per-round")
    (out / "results").mkdir(parents=True, exist_ok=True)
    jobs, chosen = make_plan(run_cfg, study, out)
    check_cut_order(args, study, jobs, [j for j in jobs if j.kind in ("run", "branch")], "training")
    mps = not args.no_mps and start_mps(out)
    log = open(out / "results" / "part1.log", "a")
    sched = Part1Scheduler(jobs, {**study, "log-dir": str(out / "results")}, study["train-workers"], log,
                           first_round_of="run-s0")
    sched.say(f"plan: {len([j for j in jobs if j.kind in ('run', 'branch')])} trainings, "
              f"{len([j for j in jobs if j.kind == 'score'])} scores; cells at rounds "
              f"{[c['round'] for c in chosen['cells']]} (planned sparsity "
              f"{[round(c['planned_sparsity'], 4) for c in chosen['cells']]}); MPS {'on' if mps else 'off'}")
    try:
        sched.run(run_cfg.precision, run_cfg.compile)
        result = collect(sched.jobs, chosen, study, out)
        cells = result["cells"]
        top: dict[str, Any] | None = max((c for c in cells if c["cell"] not in ("dense",) and c["kind"] != "ticket" and c["seed"] == 0
                   and c["fd_lenet"] is not None), key=lambda c: c["sparsity"], default=None)
        grids = None
        if top is not None:
            at = [c for c in cells if c["seed"] == 0 and c["round"] == top["round"] and c["fd_lenet"] is not None]
            ticket = next((c for c in at if c["kind"] == "ticket"), None)
            controls = sorted((c for c in at if c["kind"] != "ticket"), key=lambda c: c["fd_lenet"])
            dense = next((c for c in cells if c["kind"] == "ticket" and c["round"] == 0 and c["seed"] == 0), None)
            picks = [("dense (round 0)", dense)] + [(f"ticket, {100 * top['sparsity']:.1f}%", ticket)] + \
                    [(f"best control: {controls[0]['kind']}", controls[0]), (f"worst control: {controls[-1]['kind']}", controls[-1])]
            panels = [(f"{title}\nfd-lenet {c['fd_lenet']:.1f}", str(out / c["folder"]),
                       0 if "branches" in c["folder"] else c["round"]) for title, c in picks if c is not None]
            grids = sched.call("grids", {"panels": panels, "seed": study["sample-seed"],
                                         "steps": study["sample-steps"], "file": str(out / "results" / "part1_samples.png")})
    finally:
        sched.close()
        if mps:
            stop_mps()
    repro = sched.jobs.get("repro")
    result.update({
        **run_facts(args, study, run_cfg, sched, mps), "plan": chosen,
        "repro": repro_check(out, repro) if repro is not None and repro.state == "done" else None,
        "weights": {f"s0-r{k}": weight_stats(out / "seed0", k, "rewind.safetensors")
                    for k in sorted({0, *[c["round"] for c in chosen["cells"]]})
                    if (out / "seed0" / f"rounds/{k:04d}/record.json").exists()},
        "branch_weights": {c["id"]: weight_stats(out / c["folder"], 0, None) for c in result["cells"]
                           if top is not None and "branches" in c["folder"] and c["round"] == top["round"]},
        "samples_png": grids})
    (out / "results" / "part1.json").write_text(json.dumps(result, indent=1, default=str))
    if result["cells"]:
        plot_fd(result["cells"], study["samples"], out / "results" / "part1_fd.png")
    sched.say(f"wrote {out / 'results'}")
    return result


def repro_check(out: Path, job: Job) -> dict[str, Any]:
    """Does the ticket-tau branch of a round repeat that round (masks, loss, weights)?"""
    import torch

    from ticketforge.store import RunStore
    from ticketforge.store.run_store import round_dir

    run, k = out / "seed0", job.args["round"]
    branch = RunStore(run / "branches" / job.result["name"])
    a, b = branch.read_tensors(f"{round_dir(0)}/weights.safetensors"), RunStore(run).read_tensors(f"{round_dir(k)}/weights.safetensors")
    rec_a, rec_b = branch.round_record(0), RunStore(run).round_record(k)
    return {"round": k, "masks_equal": rec_a["mask_sha256"] == rec_b["mask_sha256"],
            "loss_branch": rec_a["metrics"]["loss"], "loss_round": rec_b["metrics"]["loss"],
            "weights_bit_identical": all(torch.equal(a[n], b[n]) for n in a),
            "max_abs_weight_gap": max(float((a[n].float() - b[n].float()).abs().max()) for n in a)}




if __name__ == "__main__":
    main()

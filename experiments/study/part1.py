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

import argparse
import dataclasses
import json
import multiprocessing as mp
import os
import queue
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ticketforge import hookimpl

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

STUDY_KEYS = {"sparsities", "controls", "spread-seed", "repro-round", "evaluator", "samples", "sample-steps",
              "sample-seed", "train-workers", "budget-minutes", "score-seconds", "cut-order", "evaluator-options"}
PATH_KEYS = ("data-root", "data_root", "ticket-run", "ticket_run")


# -- the plan -------------------------------------------------------------------------------------
@dataclass
class Job:
    id: str
    kind: str  # "run", "branch" (training workers) or "score", "grids" (the scoring worker)
    args: dict[str, Any]
    steps: int = 0  # training steps it costs
    needs_rounds: list[tuple[str, int]] = field(default_factory=list)  # (run folder, finished round)
    needs_jobs: list[str] = field(default_factory=list)
    state: str = "todo"  # todo, running, done, failed, cut
    result: Any = None
    progress: int = 0  # steps done, from the training hooks
    rounds_done: int = 0  # a run's rounds finished while it ran
    started: float | None = None
    seconds: float | None = None


def read_study(path: Path, sets: list[str], study_sets: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run's settings (paths made relative to the TOML file) and the [study] table, overrides applied."""
    data = tomllib.loads(path.read_text())
    study = data.pop("study", {})
    for target, items in ((data, sets), (study, study_sets)):
        for item in items:
            key, _, value = item.partition("=")
            if value == "":  # KEY= drops the file's setting
                target.pop(key, None)
            else:
                target[key] = tomllib.loads(f"v = {value}")["v"]
    unknown = sorted(set(study) - STUDY_KEYS)
    if unknown:
        sys.exit(f"{path}: unknown [study] key {unknown[0]!r} (known: {', '.join(sorted(STUDY_KEYS))})")
    for key in PATH_KEYS:
        if isinstance(data.get(key), str) and data[key] and not Path(data[key]).is_absolute():
            data[key] = str((path.parent / data[key]).resolve())
    return data, study


def planned_sparsities(config: Any, rounds: int) -> tuple[list[float], int]:
    """Sparsity of rounds 0..rounds as the engine's schedule prunes them (counts do not depend on the
    scores), and the run's cap on rounds once the preset's defaults are filled in."""
    import torch

    from ticketforge import Engine
    from ticketforge.engine.groups import flatten, group_tensors, module_groups, prune_targets

    engine = Engine(dataclasses.replace(config, device="cpu", compile=False, out=None))
    network = engine.spec.build()
    targets = prune_targets(module_groups(engine.spec, network))
    masks = [torch.ones_like(t.module.weight, dtype=torch.bool) for t in targets]
    gen = torch.Generator().manual_seed(0)
    out = [0.0]
    total = sum(m.numel() for m in masks)
    for _ in range(rounds):
        if out[-1] >= (config.target_sparsity or 1.0):  # the run stops here
            break
        scores = [torch.rand(m.shape, generator=gen) for m in masks]
        new = engine.schedule.prune(group_tensors(targets, scores), group_tensors(targets, masks))
        masks = [m.bool() for m in flatten(new)]
        out.append(1.0 - sum(int(m.sum()) for m in masks) / total)
    return out, engine.config.rounds


def nearest_rounds(planned: list[float], targets: list[float], last: int) -> list[int]:
    """For each target sparsity, the round (1..last) whose planned sparsity lies nearest it."""
    return [min(range(1, last + 1), key=lambda k: (abs(planned[k] - s), k)) for s in targets]


def last_round(planned: list[float], target: float, cap: int) -> int:
    """The run's own stopping rule: the first round at or above ``target``, or round ``cap``."""
    return min(cap, next((k for k, s in enumerate(planned) if s >= target), cap))


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


# -- the workers (each its own process: one compiled step, or one compiled denoiser, for all its jobs) ----
class _StepReporter:
    """Tells the scheduler each logged step (for its rates and projection) and each finished round."""

    def __init__(self, outbox: Any, wid: int) -> None:
        self.outbox, self.wid = outbox, wid

    @hookimpl
    def ticketforge_train_step(self, run: Any, round_index: int, step: int, metrics: dict) -> None:
        self.outbox.put(("step", self.wid, round_index, step, time.time()))

    @hookimpl
    def ticketforge_round_end(self, run: Any, round_index: int, record: dict) -> None:
        self.outbox.put(("round", self.wid, round_index, 0, time.time()))


def worker(wid: int, kind: str, inbox: Any, outbox: Any, study: dict[str, Any]) -> None:
    import torch

    from ticketforge import Engine, RunConfig, branch
    from ticketforge.registry import get_registry

    log = os.open(study["log-dir"] + f"/worker{wid}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)  # the engine's own progress goes to this worker's log, not into the scheduler's
    os.dup2(log, 2)
    if not torch.cuda.is_available():
        torch.set_num_threads(1)  # small convolutions on a shared CPU
    get_registry().pm.register(_StepReporter(outbox, wid), name="study-progress")
    scoring = None
    while (job := inbox.get()) is not None:
        jid, jkind, args = job
        t0 = time.perf_counter()
        try:
            if jkind == "run":
                records = Engine(RunConfig(**args["config"])).run()
                result: Any = [{"round": r["round"], "sparsity": r["sparsity"]} for r in records]
            elif jkind == "branch":
                record = branch(args["run"], args["round"], masks=args["masks"], start=args["start"],
                                rewind_fraction=args["rewind_fraction"])
                result = {"name": record["branch"]["name"], "sparsity": record["sparsity"]}
            elif jkind == "score":
                if scoring is None:
                    from ticketforge.evaluation import Scoring
                    scoring = Scoring(study["evaluator"], n_samples=study["samples"], sampler="ddim",
                                      steps=study["sample-steps"], options=dict(study.get("evaluator-options", {})),
                                      seed=study["sample-seed"], precision=args["precision"], compile=args["compile"])
                result = score_once(scoring, args)
            else:
                result = draw_grids(args)
            outbox.put(("done", wid, jid, result, time.perf_counter() - t0))
        except BaseException as exc:  # reported, and this worker goes on with the next job
            outbox.put(("failed", wid, jid, f"{type(exc).__name__}: {exc}", time.perf_counter() - t0))


def score_once(scoring: Any, args: dict[str, Any]) -> dict[str, Any]:
    """Score one item unless its record already holds a score made with these settings."""
    from ticketforge.evaluation import EvalItem
    from ticketforge.store import RunStore

    path, k = args["path"], args["round"]
    stored = RunStore(path).round_record(k).get("metrics", {}).get(scoring.evaluator_name)
    same = stored and all(stored.get(key) == want for key, want in (
        ("n_samples", scoring.n_samples), ("steps", scoring.steps), ("seed", scoring.seed), ("ema", scoring.ema)))
    if same:
        return {"scores": stored, "reused": True}
    t0 = time.perf_counter()
    out = scoring.score(EvalItem(path, k, args.get("branch")))
    return {"scores": out["scores"], "reused": False, "seconds": time.perf_counter() - t0}


def draw_grids(args: dict[str, Any]) -> str:
    """64 samples of each panel's network (DDIM, EMA weights, seed fixed), side by side in one PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from torchvision.utils import make_grid

    from ticketforge import load_round

    device = "cuda" if torch.cuda.is_available() else "cpu"
    panels = args["panels"]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 4.0))
    for ax, (title, path, k) in zip(list(getattr(axes, "flat", [axes])), panels):
        loaded = load_round(path, k, device=device)
        gen = torch.Generator(device=device).manual_seed(args["seed"])
        with torch.no_grad():
            images = loaded.spec.sample(loaded.network, 64, generator=gen, sampler="ddim", steps=args["steps"])
        grid = make_grid(images.float().cpu(), nrow=8, padding=1, pad_value=1.0)
        ax.imshow(grid.permute(1, 2, 0).clamp(0, 1).numpy(), cmap="gray", interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(args["file"], dpi=130)
    plt.close(fig)
    return args["file"]


# -- the scheduler ----------------------------------------------------------------------------------
def start_mps(root: Path) -> bool:
    """Start the CUDA MPS daemon for this part's processes, if the machine has one."""
    binary = shutil.which("nvidia-cuda-mps-control")
    if binary is None or shutil.which("nvidia-smi") is None:
        return False
    for name, sub in (("CUDA_MPS_PIPE_DIRECTORY", "mps-pipe"), ("CUDA_MPS_LOG_DIRECTORY", "mps-log")):
        (root / sub).mkdir(parents=True, exist_ok=True)
        os.environ[name] = str(root / sub)
    return subprocess.run([binary, "-d"], capture_output=True).returncode == 0


def stop_mps() -> None:
    binary = shutil.which("nvidia-cuda-mps-control")
    if binary and os.environ.get("CUDA_MPS_PIPE_DIRECTORY"):
        subprocess.run([binary], input=b"quit\n", capture_output=True)


def ready(job: Job, jobs: dict[str, Job], finished: dict[str, list[int]]) -> bool:
    """Whether what the job needs is done; ``finished`` caches each run's finished rounds for one pass."""
    from ticketforge.store import RunStore
    if any(jobs[j].state != "done" for j in job.needs_jobs):
        return False
    for path, k in job.needs_rounds:
        if path not in finished:
            store = RunStore(path)
            finished[path] = store.finished_rounds() if store.exists() else []  # not started yet: none
        if k not in finished[path]:
            return False
    return True


def blocked(job: Job, jobs: dict[str, Job]) -> bool:
    """Whether a job can never run: something it needs failed or was cut."""
    return any(jobs[j].state in ("failed", "cut") or blocked(jobs[j], jobs) for j in job.needs_jobs) or any(
        j.kind == "run" and j.state in ("failed", "cut") and j.args["config"]["out"] == path
        for path, _ in job.needs_rounds for j in jobs.values())


class Scheduler:
    def __init__(self, jobs: list[Job], study: dict[str, Any], n_train: int, log: Any) -> None:
        self.jobs = {j.id: j for j in jobs}
        self.order = [j.id for j in jobs]
        self.study, self.log = study, log
        self.ctx = mp.get_context("spawn")
        self.outbox = self.ctx.Queue()
        self.workers: list[dict[str, Any]] = []
        for wid, kind in enumerate(["train"] * n_train + ["score"]):
            inbox = self.ctx.Queue()
            proc = self.ctx.Process(target=worker, args=(wid, kind, inbox, self.outbox, study), daemon=True)
            proc.start()
            self.workers.append({"kind": kind, "inbox": inbox, "proc": proc, "job": None, "rate": []})
        self.t0 = time.time()
        self.cuts: list[dict[str, Any]] = []
        self.first_round_s: float | None = None
        self.last_cut = 0.0

    def say(self, text: str) -> None:
        line = f"[{time.time() - self.t0:7.1f}s] {text}"
        print(line, flush=True)
        self.log.write(line + "\n")
        self.log.flush()

    def assign(self, precision: str, compile_: bool) -> None:
        finished: dict[str, list[int]] = {}  # each run's manifest read once a pass, not once a job
        for w in self.workers:
            if w["job"] is not None:
                continue
            kinds = ("run", "branch") if w["kind"] == "train" else ("score", "grids")
            for jid in self.order:
                job = self.jobs[jid]
                if job.state == "todo" and job.kind in kinds and blocked(job, self.jobs):
                    job.state = "cut"
                    self.say(f"skip {jid}: something it needs failed or was cut")
                elif job.state == "todo" and job.kind in kinds and ready(job, self.jobs, finished):
                    args = dict(job.args)
                    if job.kind == "score":
                        args.update(self.score_target(job), precision=precision, compile=compile_)
                    job.state, job.started, w["job"] = "running", time.time(), jid
                    w["inbox"].put((jid, job.kind, args))
                    self.say(f"start {jid} on worker {self.workers.index(w)}")
                    break

    def score_target(self, job: Job) -> dict[str, Any]:
        if "branch_job" not in job.args:
            return {}
        made = self.jobs[job.args["branch_job"]]
        return {"path": str(Path(made.args["run"]) / "branches" / made.result["name"]), "round": 0,
                "branch": made.result["name"]}

    def receive(self, timeout: float) -> None:
        try:
            msg = self.outbox.get(timeout=timeout)
        except queue.Empty:
            return
        kind, wid, a, b, c = msg
        w = self.workers[wid]
        if kind == "step" and w["job"]:
            job = self.jobs[w["job"]]
            job.progress = a * job.args.get("config", {}).get("steps_per_round", 0) + b  # a run counts its rounds
            w["rate"] = (w["rate"] + [(c, job.progress)])[-8:]
        elif kind == "round" and w["job"]:
            job = self.jobs[w["job"]]
            job.rounds_done = max(job.rounds_done, a + 1)
            if job.id == "run-s0" and self.first_round_s is None:
                self.first_round_s = time.time() - (job.started or self.t0)
                self.say(f"first round of run-s0 took {self.first_round_s:.1f} s (compilation included)")
        elif kind in ("done", "failed"):
            job = self.jobs[a]
            job.state, job.result, w["job"], w["rate"] = kind, b, None, []
            job.seconds = c
            self.say(f"{kind} {a} in {c:.1f} s" + (f": {b}" if kind == "failed" else ""))

    def rate(self, w: dict[str, Any]) -> float | None:
        pts = w["rate"]
        if len(pts) < 2 or pts[-1][1] <= pts[0][1] or pts[-1][0] <= pts[0][0]:
            return None
        return (pts[-1][1] - pts[0][1]) / (pts[-1][0] - pts[0][0])

    def remaining_steps(self) -> int:
        total = 0
        for job in self.jobs.values():
            if job.kind == "run" and job.state in ("todo", "running"):
                total += job.steps - (job.progress if job.state == "running" else 0)
            elif job.kind == "branch" and job.state in ("todo", "running"):
                total += job.steps - (job.progress if job.state == "running" else 0)
        return max(total, 0)

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

    def maybe_cut(self) -> None:
        budget = self.study["budget-minutes"] * 60
        if time.time() - self.t0 > budget - 120:  # no new training now: what is trained still gets scored
            for job in self.jobs.values():
                if job.kind in ("run", "branch") and job.state == "todo":
                    job.state = "cut"
                    self.cuts.append({"job": job.id, "at_s": time.time() - self.t0, "budget_s": budget,
                                      "why": "not started 2 minutes before the budget ends"})
                    self.say(f"cut {job.id}: not started 2 minutes before the budget ends")
        end = self.projected_end()
        if end is None or end <= budget or time.time() - self.last_cut < 30:
            return
        for jid in self.study.get("cut-order", []):
            job = self.jobs.get(jid)
            if job is not None and job.state == "todo":
                job.state = "cut"
                self.last_cut = time.time()
                self.cuts.append({"job": jid, "projected_end_s": end, "budget_s": budget,
                                  "at_s": time.time() - self.t0})
                self.say(f"cut {jid}: the plan would end at {end / 60:.1f} min, over the {budget / 60:.0f} min budget")
                return

    def status(self) -> None:
        running = [f"{w['job']}@{self.jobs[w['job']].progress}" for w in self.workers if w["job"]]
        done = sum(j.state == "done" for j in self.jobs.values())
        end = self.projected_end()
        self.say(f"{done}/{len(self.jobs)} done; running {', '.join(running) or 'nothing'}"
                 + (f"; projected end {end / 60:.1f} min" if end else ""))

    def run(self, precision: str, compile_: bool) -> None:
        last_status, gone = 0.0, False
        while any(j.state in ("todo", "running") for j in self.jobs.values()):
            self.assign(precision, compile_)
            self.receive(timeout=2.0)
            while not self.outbox.empty():
                self.receive(timeout=0.1)
            self.maybe_cut()
            for w in self.workers:
                if w["job"] and not w["proc"].is_alive():
                    job = self.jobs[w["job"]]
                    job.state, job.result, w["job"] = "failed", f"worker died (exit {w['proc'].exitcode})", None
                    self.say(f"failed {job.id}: {job.result}")
                    w["kind"] = "dead"
            kinds = {w["kind"] for w in self.workers}
            if not gone and not {"score", "train"} <= kinds:
                gone = True
                for j in self.jobs.values():
                    if j.state == "todo" and (j.kind in ("run", "branch")) != ("train" in kinds):
                        j.state = "cut"
                self.say("every worker of one kind died: the jobs of that kind left are skipped")
            if time.time() - last_status > 30:
                self.status()
                last_status = time.time()

    def call(self, kind: str, args: dict[str, Any]) -> Any:
        """Run one more job on the scoring worker and wait for it."""
        w = next(w for w in self.workers if w["kind"] == "score")
        self.jobs[kind] = job = Job(kind, kind, args, state="running", started=time.time())
        w["job"] = kind
        w["inbox"].put((kind, kind, args))
        while job.state == "running" and w["proc"].is_alive():
            self.receive(timeout=2.0)
        return job.result if job.state == "done" else None

    def close(self) -> None:
        for w in self.workers:
            if w["proc"].is_alive():
                w["inbox"].put(None)
        for w in self.workers:
            w["proc"].join(timeout=60)


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
        names = [n for n in masks if n.endswith(("conv2", "proj_out", "conv_out")) == pick]
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


def commit_of(repo: Path) -> str | None:
    """The checkout's commit (STUDY_COMMIT where the tree travelled without its history)."""
    if os.environ.get("STUDY_COMMIT"):
        return os.environ["STUDY_COMMIT"]
    res = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=repo)
    return res.stdout.strip() or None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", type=Path)
    ap.add_argument("--out", type=Path, required=True, help="folder of the runs, their branches and results/")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--study-set", dest="study_sets", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--no-mps", action="store_true", help="do not start CUDA MPS")
    args = ap.parse_args(argv)

    from ticketforge import RunConfig

    run_data, study = read_study(args.config, args.sets, args.study_sets)
    out = args.out.resolve()
    run_cfg = RunConfig.from_dict(run_data, source=str(args.config))
    if run_cfg.target_sparsity is None or run_cfg.steps_per_round is None:
        sys.exit(f"{args.config}: give target-sparsity and steps-per-round")
    (out / "results").mkdir(parents=True, exist_ok=True)
    jobs, chosen = make_plan(run_cfg, study, out)
    unknown = sorted(set(study.get("cut-order", [])) - {j.id for j in jobs})
    if unknown:
        sys.exit(f"{args.config}: cut-order names {unknown[0]!r}, which is no training of this plan "
                 f"(they are: {', '.join(j.id for j in jobs if j.kind == 'branch')})")
    mps = not args.no_mps and start_mps(out)
    log = open(out / "results" / "part1.log", "a")
    sched = Scheduler(jobs, {**study, "log-dir": str(out / "results")}, study["train-workers"], log)
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
        "config_file": str(args.config), "overrides": args.sets, "study_overrides": args.study_sets, "study": study,
        "run_config": dataclasses.asdict(run_cfg), "commit": commit_of(Path(__file__).parent),
        "device": device_name(), "mps": mps, "train_workers": study["train-workers"],
        "wall_seconds": time.time() - sched.t0, "first_round_seconds": sched.first_round_s,
        "plan": chosen, "cuts": sched.cuts,
        "jobs": {j.id: {"state": j.state, "seconds": getattr(j, "seconds", None),
                        **({"error": j.result} if j.state == "failed" else {})} for j in sched.jobs.values()},
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


def device_name() -> str:
    import torch
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


if __name__ == "__main__":
    main()

"""CIFAR-10 at a small budget (issue 20): the 35.7M-parameter U-Net, its ticket and its controls.

    python experiments/study/cifar10.py experiments/study/cifar10.toml --out /tmp/c10
    python experiments/study/cifar10.py experiments/study/cifar10.toml --out /tmp/c10 --plan  # no GPU

Trains one trajectory (the top-level run settings of the TOML: preset ``cifar10``, incremental p=20
q=1, rewind to theta_tau at 5%, seed 0, ``rounds`` prunings of ``steps-per-round`` steps each) and,
at its last round, the branches of ``[study] controls`` (``ticketforge branch``: the ticket's masks
from a fresh init, random masks at the ticket's per-tensor counts from theta_tau), plus
``dense-branch`` (the dense network from theta_tau, for the same steps). One scoring process scores
the rounds of ``score-rounds`` (as soon as each is done, while the run trains on: stored in the round
records once the run is done) and every branch with one evaluator (``fd-resnet`` with KID: 10,000
samples, DDIM 50, EMA weights), and counts each scored network with ``ticketforge flops``'s function
(fvcore: dense and sparse MACs of one forward pass, parameters kept). At the end it draws the sample
grids and denoising strips of the dense network, the ticket and the controls.

The plan is timed against ``budget-minutes`` of the script's whole wall time (planning included):
:func:`timeline` projects it at the TOML's rates (one GPU shared equally by whatever trains or scores
on it at the moment, the aggregate training rate not growing with more processes), and once the first
round has run, at those rates scaled by what the trainings and scores show. While the projection is
over the budget, the jobs of ``cut-order`` are cut (cells: a score, a branch with its score), never the
sample count; the JSON says which. ``--plan`` prints the job graph, the projection at the TOML's rates
and at slower ones, what the cut order would cut, and the GPU-hours of a faithful reproduction, without
training anything.

Resumable: the run and the branches resume from their checkpoints, a stored score with the same
settings is not redone. Writes ``OUT/results/cifar10.json`` (rows, comparisons, the GPU-hours of a
faithful reproduction at the measured rates, cuts, job times), ``cifar10_table.md``, ``cifar10_fd.png``
(fd-resnet and KID against sparsity), ``cifar10_samples.png`` (sample grids) and
``cifar10_denoising.png`` (denoising strips). ``--set`` and ``--study-set`` as in part1.py. The GPU
session's steps (wheels, data, the calls through device.sh) are in README-cifar10.md.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

T_START = time.time()  # the budget is the script's whole wall time: planning and start-up included

sys.path.insert(0, str(Path(__file__).resolve().parent))  # common.py and the MNIST parts it shares

from common import (  # noqa: E402
    TRAINING,
    Job,
    PlannedRounds,
    Scheduler,
    blocked,
    check_cut_order,
    cut_to_fit,
    draw_strips,
    finished_rounds,
    last_round,
    nearest_rounds,
    plan_rounds,
    read_run,
    read_study,  # noqa: F401 (the tests read the TOML with it, as parts 2 and 3 do)
    run_facts,
    start_mps,
    stop_mps,
    study_parser,
)
from part1 import parse_control  # noqa: E402
from part2 import store_finished_scores  # noqa: E402

STUDY_KEYS = {"controls", "dense-branch", "score-rounds", "evaluator", "samples", "sample-steps", "sample-seed",
              "train-workers", "budget-minutes", "train-rates", "start-seconds", "data-seconds", "compile-seconds",
              "round-seconds", "branch-seconds", "score-seconds", "scorer-data-seconds", "featurizer-seconds",
              "sampler-compile-seconds", "flops-seconds", "figures-seconds", "report-seconds", "cut-order",
              "spread-rel", "faithful", "evaluator-options"}
SLOWER = (1.0, 0.9, 0.8, 0.7, 0.6)  # training rates, as fractions of the TOML's, that --plan projects
MIN_SCALE = 0.05  # the lowest measured scale of the training rates (a training that shows no step)


# -- the plan -------------------------------------------------------------------------------------
def make_plan(run_cfg: Any, study: dict[str, Any], out: Path) -> tuple[list[Job], dict[str, Any]]:
    """Every job of the part, in the order of preference, and what the plan chose.

    The training order is the run, then the controls, then the dense branch: what is cut first trains
    last. The scoring worker takes the scores in the order of the rounds and branches, and the MAC
    counts (CPU only) when no score is ready."""
    spr = run_cfg.steps_per_round
    plan = plan_rounds(run_cfg, run_cfg.rounds)
    last = len(plan.sparsity) - 1  # the run stops at its target sparsity, if it has one
    run = str(out / "seed0")
    cfg = dataclasses.replace(run_cfg, out=run, rounds=last)
    jobs = [Job("run", "run", {"config": dataclasses.asdict(cfg)}, steps=(last + 1) * spr)]
    cells = [(name, last) for name in study["controls"]]
    if study.get("dense-branch"):
        cells.append((study["dense-branch"], 0))
    branches = [Job(f"{name}@r{k}", "branch", {"run": run, "round": k, **parse_control(name)}, steps=spr,
                    needs_rounds=[(run, k)]) for name, k in cells]
    rounds = sorted({0, last, *(k for k in study.get("score-rounds", []) if k <= last)})
    jobs += branches
    jobs += [Job(f"score:r{k}", "score", {"path": run, "round": k, "store": False}, needs_rounds=[(run, k)])
             for k in rounds]
    jobs += [Job(f"score:{b.id}", "score", {"branch_job": b.id}, needs_jobs=[b.id]) for b in branches]
    jobs += [Job(f"flops:r{k}", "flops", {"path": run, "round": k}, needs_rounds=[(run, k)]) for k in rounds]
    jobs += [Job(f"flops:{b.id}", "flops", {"branch_job": b.id}, needs_jobs=[b.id]) for b in branches]
    chosen = {"planned_sparsity": plan.sparsity, "last_round": last, "steps_per_round": spr,
              "scored_rounds": rounds, "branches": {b.id: {"control": b.id.split("@")[0], "of_round": b.args["round"]}
                                                    for b in branches},
              "planned_groups_last": plan.groups[last], "extrapolated_sparsity": extrapolate(plan, 30)}
    return jobs, chosen


def extrapolate(plan: PlannedRounds, rounds: int) -> list[float]:
    """Overall sparsity of rounds 0..rounds of a schedule that prunes each group by a constant fraction
    of its remaining weights every round (``uniform``, ``incremental``): each group's kept fraction after
    round 1 of the plan, raised to the round's power (the rounding of each tensor's count left out)."""
    if len(plan.groups) < 2:
        return plan.sparsity[:1] * (rounds + 1)
    params = [g["params"] for g in plan.groups[0]]
    keep = [1.0 - g["sparsity"] for g in plan.groups[1]]
    total = sum(params)
    return [1.0 - sum(n * f ** k for n, f in zip(params, keep)) / total for k in range(rounds + 1)]


# -- the projection ---------------------------------------------------------------------------------
def training_rate(study: dict[str, Any], n: int, scorer_busy: int) -> float:
    """Steps/s of each of ``n`` trainings, with the scorer on the GPU (1) or not (0): ``train-rates[n-1]``
    each (the aggregate stays at the last entry's beyond the table), the GPU shared equally with the
    scorer."""
    rates = study["train-rates"]
    aggregate = rates[n - 1] * n if n <= len(rates) else rates[-1] * len(rates)
    return aggregate / (n + scorer_busy)


def phases(job: Job, study: dict[str, Any], *, fresh: bool, first_training: bool, warm: bool
           ) -> list[tuple[str, float, int | None]]:
    """What a job does, in order: ``(kind, amount, round)`` with kind ``cpu`` (seconds of wall time, the
    GPU left to others), ``train`` (steps) or ``gpu`` (seconds with the GPU to itself); ``round`` is the
    round of the run that ends with that phase. ``fresh``: the first job of its training process (it
    compiles the step); ``first_training``: the first of the part (it decodes the images into the data
    cache); ``warm``: the scoring process has made a score (the featurizer and the compiled denoiser)."""
    s = study
    if job.kind in TRAINING:
        spr = job.steps if job.kind == "branch" else job.args["config"]["steps_per_round"]
        head = [("cpu", s["data-seconds"], None)] if first_training else []
        head += [("cpu", s["branch-seconds"], None)] if job.kind == "branch" else []
        head += [("cpu", s["compile-seconds"], None)] if fresh else []
        rounds = job.steps // spr
        return head + [p for k in range(rounds) for p in (("train", spr, None), ("cpu", s["round-seconds"], k))]
    if job.kind == "score":
        first = [] if warm else [("cpu", s["scorer-data-seconds"], None), ("gpu", s["featurizer-seconds"], None),
                                 ("cpu", s["sampler-compile-seconds"], None)]
        return first + [("gpu", s["score-seconds"], None)]
    return [("cpu", s["flops-seconds"], None)]


@dataclasses.dataclass
class Lane:
    """A worker process in the projection: the job it runs and what is left of it."""

    kind: str  # "train" or "score"
    job: str | None = None
    left: list[list[Any]] = dataclasses.field(default_factory=list)  # [kind, amount, round] of the job
    fresh: bool = True  # a training process that has not compiled yet


def timeline(jobs: dict[str, Job], order: list[str], study: dict[str, Any], n_train: int, *, now: float | None = None,
             running: dict[int, tuple[str, list[list[Any]]]] | None = None, compiled: set[int] | None = None,
             done_rounds: set[tuple[str, int]] | None = None, warm: bool = False, data_ready: bool = False,
             train_scale: float = 1.0, score_scale: float = 1.0) -> dict[str, float]:
    """When each job not yet done or cut ends (seconds from the script's start), ``"end"`` the part's.

    ``n_train`` training processes and one scoring process take the ready jobs in ``order``. At any
    moment the GPU is shared equally by the trainings and a scoring phase on it (:func:`training_rate`,
    times ``train_scale``; a ``gpu`` phase of S seconds takes S x (number sharing) seconds, times
    ``score_scale``); ``cpu`` phases take their seconds whatever runs beside them. The live
    projection passes what runs now (``running``: lane -> (job, its phases left); lanes
    0..n_train-1 train, n_train scores), the training lanes that have compiled, the rounds done and
    whether the scorer is ``warm``. The grids, strips and report (``figures-seconds``,
    ``report-seconds``) close the part."""
    now = study["start-seconds"] if now is None else now
    lanes = [Lane("train", fresh=i not in (compiled or set())) for i in range(n_train)] + [Lane("score")]
    for i, (jid, left) in (running or {}).items():
        lanes[i].job, lanes[i].left = jid, [list(p) for p in left]
    rounds = set(done_rounds or ())
    done = {jid for jid, j in jobs.items() if j.state == "done"}
    pending = [jid for jid in order if jobs[jid].state == "todo" and not blocked(jobs[jid], jobs)]
    first_training = not data_ready
    ends: dict[str, float] = {}
    t = now

    def ready(job: Job) -> bool:
        return all(j in done for j in job.needs_jobs) and all(tuple(r) in rounds for r in job.needs_rounds)

    while True:
        for lane in lanes:
            if lane.job is not None:
                continue
            take = next((jid for jid in pending if (jobs[jid].kind in TRAINING) == (lane.kind == "train")
                         and ready(jobs[jid])), None)
            if take is None:
                continue
            pending.remove(take)
            lane.job = take
            lane.left = [list(p) for p in phases(jobs[take], study, fresh=lane.fresh, first_training=first_training,
                                                 warm=warm)]
            for p in lane.left:
                p[1] *= score_scale if p[0] == "gpu" else 1.0
            if lane.kind == "train":
                lane.fresh, first_training = False, False
            elif jobs[take].kind == "score":
                warm = True
        busy = [lane for lane in lanes if lane.job is not None]
        if not busy:
            break
        n = sum(1 for lane in lanes if lane.kind == "train" and lane.left and lane.left[0][0] == "train")
        s = int(any(lane.kind == "score" and lane.left and lane.left[0][0] == "gpu" for lane in lanes))
        speed = {"cpu": 1.0, "train": training_rate(study, n, s) * train_scale if n else 0.0, "gpu": 1.0 / max(n + s, 1)}
        times = [lane.left[0][1] / speed[lane.left[0][0]] if lane.left else 0.0 for lane in busy
                 if not lane.left or speed[lane.left[0][0]] > 0]
        if not times:  # at train_scale 0 nothing trains: the rest never ends
            break
        dt = min(times)
        t += dt
        for lane in busy:
            if lane.left:
                lane.left[0][1] -= dt * speed[lane.left[0][0]]
            while lane.left and lane.left[0][1] <= 1e-9:
                _, _, k = lane.left.pop(0)
                if k is not None and lane.job is not None and jobs[lane.job].kind == "run":
                    rounds.add((jobs[lane.job].args["config"]["out"], k))
            if not lane.left:
                assert lane.job is not None
                ends[lane.job] = t
                done.add(lane.job)
                lane.job = None
    ends["end"] = max([now, *ends.values()]) + study["figures-seconds"] + study["report-seconds"]
    return ends


def dry_run(jobs: list[Job], study: dict[str, Any], train_scale: float = 1.0) -> dict[str, Any]:
    """The projection at the TOML's rates (times ``train_scale``), and the cuts in ``cut-order`` that
    make it fit the budget."""
    return {"train_scale": train_scale, **cut_to_fit(jobs, study, lambda by_id, order: timeline(
        by_id, order, study, study["train-workers"], train_scale=train_scale))}


# -- the live projection ----------------------------------------------------------------------------
def branch_path(made: Job) -> str:
    """The folder of a finished branch job."""
    return str(Path(made.args["run"]) / "branches" / made.result["name"])


def round_length(job: Job) -> int:
    return job.steps if job.kind == "branch" else job.args["config"]["steps_per_round"]


class CifarScheduler(Scheduler):
    """The part's projection (:func:`timeline` from what runs now, at the TOML's rates scaled by what the
    trainings and scores show), its clock started with the script (``t_start``), the branches' folders
    given to their MAC counts, the round scores stored once the run is done.

    Once a pass it samples what each training process has done and whether the scorer is on the GPU
    (``samples``): the measured rates compare with the TOML's moment by moment, so a score beside a
    training is not taken for a slow GPU."""

    def __init__(self, *args: Any, t_start: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.t0 = t_start
        self.samples: list[tuple[float, dict[int, tuple[str, int]], int, int]] = []  # t, lane -> (job, steps), n, scorer
        self.compiled: set[int] = set()  # training lanes that have trained (their step is compiled)
        self.scale: float | None = None

    def lanes(self) -> list[dict[str, Any]]:
        return [w for w in self.workers if w["kind"] == "train"]

    def assign(self, precision: str, compile_: bool) -> None:
        for job in self.jobs.values():
            made = self.jobs.get(job.args.get("branch_job", ""))
            if job.kind == "flops" and made is not None and made.state == "done" and "path" not in job.args:
                job.args.update(path=branch_path(made), round=0)
        super().assign(precision, compile_)

    def after_pass(self) -> None:
        now = time.time()
        lanes = {i: (w["job"], self.jobs[w["job"]].progress) for i, w in enumerate(self.lanes()) if w["job"]}
        self.compiled |= {i for i, (_, done) in lanes.items() if done > 0}
        _, left = self.scorer_left(now)
        self.samples.append((now, lanes, len(lanes), int(bool(left) and left[0][0] == "gpu")))
        store_finished_scores(self.jobs, self.study["evaluator"], self.say)

    def warm(self) -> bool:
        return any(j.kind == "score" and j.state == "done" and not j.result.get("reused") for j in self.jobs.values())

    def scorer_left(self, now: float) -> tuple[Job | None, list[list[Any]]]:
        """The scoring worker's job and what the plan says is left of it: its phases, consumed by the
        time it has run (its ``gpu`` phases shared with the trainings running now)."""
        w = next(w for w in self.workers if w["kind"] == "score")
        if not w["job"]:
            return None, []
        job = self.jobs[w["job"]]
        if job.kind not in ("score", "flops"):  # the grids and strips at the end
            return job, [["gpu", self.study["figures-seconds"], None]]
        left: list[list[Any]] = [list(p) for p in phases(job, self.study, fresh=False, first_training=False,
                                                         warm=self.warm())]
        share, elapsed = 1.0 / (1 + sum(1 for lane in self.lanes() if lane["job"])), now - (job.started or now)
        while left and elapsed > 0:
            speed = 1.0 if left[0][0] == "cpu" else share
            used = min(elapsed, left[0][1] / speed)
            left[0][1] -= used * speed
            elapsed -= used
            if left[0][1] <= 1e-9:
                left.pop(0)
        return job, left or [["gpu" if job.kind == "score" else "cpu", 1.0, None]]  # overran: it ends soon

    def intervals(self, since: float = 0.0) -> list[tuple[float, int, int, int]]:
        """(seconds, steps made, trainings, scorer on the GPU) of each training lane between two samples
        inside one round of one job (the start of a job or round, with its compile or saving, left out)."""
        out = []
        window = [s for s in self.samples if s[0] >= since]
        for (ta, la, na, sa), (tb, lb, _, _) in zip(window, window[1:]):
            for lane, (jid, pa) in la.items():
                jid_b, pb = lb.get(lane, (None, -1))
                spr = round_length(self.jobs[jid])
                if jid_b == jid and pb >= pa and pa % spr and pa // spr == (pb - 1) // spr:  # step spr ends a round
                    out.append((tb - ta, pb - pa, na, sa))
        return out

    def train_scale(self) -> float | None:
        """Steps the trainings made over the last 90 s against what the TOML's rates give for the same
        moments; None until the first round has run (then the last scale while nothing trains)."""
        if self.first_round_s is None or not self.samples:
            return None
        spans = self.intervals(self.samples[-1][0] - 90.0)
        expected = sum(dt * training_rate(self.study, n, s) for dt, _, n, s in spans)
        if expected > 0 and sum(dt for dt, *_ in spans) >= 20.0:  # no step in that time: as good as stopped
            self.scale = max(sum(made for _, made, _, _ in spans) / expected, MIN_SCALE)
        return self.scale

    def gpu_share(self, start: float, end: float) -> float:
        """The scorer's GPU seconds between ``start`` and ``end``: each moment's share of it (1 over one
        plus the trainings running then), as the samples saw them."""
        total = 0.0
        for (ta, _, n, _), (tb, _, _, _) in zip(self.samples, self.samples[1:]):
            overlap = min(tb, end) - max(ta, start)
            if overlap > 0:
                total += overlap / (1 + n)
        return total

    def score_scale(self) -> float:
        """The measured GPU seconds of the later scores (the first trains the featurizer) over
        ``score-seconds``; 1 until one is done."""
        made = sorted((j for j in self.jobs.values() if j.kind == "score" and j.state == "done" and j.started
                       and j.seconds and not j.result.get("reused")), key=lambda j: j.started or 0.0)[1:]
        shares = [self.gpu_share(j.started or 0.0, (j.started or 0.0) + (j.seconds or 0.0)) for j in made]
        return sum(shares) / len(shares) / self.study["score-seconds"] if shares else 1.0

    def projected_end(self) -> float | None:
        """:meth:`projection`, or None (nothing cut for the budget) where it fails: said once, the part goes on."""
        try:
            return self.projection()
        except Exception as exc:  # a slip in the projection must not cost the session its run
            if not getattr(self, "projection_failed", False):
                self.projection_failed = True
                self.say(f"the projection failed ({type(exc).__name__}: {exc}); nothing is cut for the budget now")
            return None

    def projection(self) -> float | None:
        """Seconds from the script's start at which the part ends, from what runs now; None before the
        first round has run."""
        scale = self.train_scale()
        if scale is None:
            return None
        now, study = time.time(), self.study
        running: dict[int, tuple[str, list[list[Any]]]] = {}
        done_rounds = {(path, k) for path in {p for j in self.jobs.values() for p, _ in j.needs_rounds}
                       for k in finished_rounds(path)}
        for i, w in enumerate(self.lanes()):
            if w["job"]:
                job = self.jobs[w["job"]]
                spr = round_length(job)
                k = max(job.rounds_done, job.progress // spr) if job.kind == "run" else 0
                left = [["train", max(spr - (job.progress - k * spr), 0), None], ["cpu", study["round-seconds"], k]]
                left += [p for j in range(k + 1, job.steps // spr) for p in (["train", spr, None],
                                                                             ["cpu", study["round-seconds"], j])]
                running[i] = (job.id, left)
                if job.kind == "run":  # its rounds before this one are done, whatever the store says yet
                    done_rounds |= {(job.args["config"]["out"], j) for j in range(k)}
        job, left = self.scorer_left(now)
        if job is not None:
            running[len(self.lanes())] = (job.id, left)
        ends = timeline(self.jobs, self.order, study, len(self.lanes()), now=now - self.t0, running=running,
                        compiled=self.compiled, done_rounds=done_rounds,
                        warm=self.warm() or (job is not None and job.kind == "score"), data_ready=True,
                        train_scale=scale, score_scale=self.score_scale())
        return ends["end"]

    def measured(self) -> dict[str, Any]:
        """The rates the part ran at: steps/s of a training alone on the GPU and beside a score (inside
        rounds), the scale against the TOML's, and the GPU seconds of the later scores."""
        spans = self.intervals()

        def rate(n: int, s: int) -> float | None:
            picked = [(dt, made) for dt, made, n_, s_ in spans if (n_, s_) == (n, s)]
            seconds = sum(dt for dt, _ in picked)
            return sum(made for _, made in picked) / seconds if seconds >= 10 else None

        return {"train_steps_per_s_alone": rate(1, 0), "train_steps_per_s_beside_a_score": rate(1, 1),
                "train_scale_last": self.scale, "score_scale": self.score_scale(),
                "score_gpu_seconds": self.score_scale() * self.study["score-seconds"],
                "first_round_seconds": self.first_round_s}


HANDLERS = {"strips": draw_strips}  # the scoring worker's own job: the denoising strips


# -- what comes out ---------------------------------------------------------------------------------
LABELS = {"dense": "the run's round 0", "ticket": "**ticket** (`ticket`, theta_tau)",
          "ticket-reinit": "`ticket` masks, fresh init (`reinit`)", "random-tau": "`random` masks, theta_tau",
          "none-tau": "dense from theta_tau (`none`, `tau`)"}  # the table's
TITLES = {"dense": "dense (round 0)", "ticket": "ticket", "ticket-reinit": "reinit (ticket masks, fresh init)",
          "random-tau": "random masks (theta_tau)", "none-tau": "dense from theta_tau"}  # the figures'


def collect(jobs: dict[str, Job], chosen: dict[str, Any], study: dict[str, Any], out: Path) -> list[dict[str, Any]]:
    """One row per scored network: its scores, parameters kept, MACs and training figures."""
    from ticketforge.store import RunStore

    metric, steps = study["evaluator"].replace("-", "_"), study["sample-steps"]
    rows = []
    for job in jobs.values():
        if job.kind != "score" or job.state != "done":
            continue
        if "branch_job" in job.args:
            made = jobs[job.args["branch_job"]]
            path, k, kind, of_round = branch_path(made), 0, made.id.split("@")[0], made.args["round"]
            count = jobs[f"flops:{made.id}"]
        else:
            path, k = job.args["path"], job.args["round"]
            kind, of_round, count = ("ticket" if k else "dense"), k, jobs[f"flops:r{k}"]
        record = RunStore(path).round_record(k)
        scores, macs = job.result["scores"], count.result if count.state == "done" else None
        kid = metric.replace("fd_", "kid_")
        rows.append({
            "id": job.id.removeprefix("score:"), "kind": kind, "round": of_round, "sparsity": record["sparsity"],
            metric: scores.get(metric), "kid": scores.get(kid), "kid_std": scores.get(f"{kid}_std"),
            "n_samples": scores.get("n_samples"), "steps": scores.get("steps"), "ema": scores.get("ema"),
            "featurizer_sha256": scores.get("featurizer_sha256"),
            "featurizer_test_accuracy": scores.get("featurizer_test_accuracy"),
            "final_loss": record["metrics"].get("loss"), "train_seconds": record["metrics"].get("seconds"),
            "train_steps_per_s": record["metrics"].get("steps_per_s"),
            "score_seconds": job.result.get("seconds"), "score_reused": job.result.get("reused"),
            "store_error": job.result.get("store_error"),
            "prunable_params": record["metrics"].get("prunable_params"),
            "kept_prunable": record["metrics"].get("nonzero_params"), "total_params": record["metrics"].get("total_params"),
            "params": macs and macs["params"], "nonzero_params": macs and macs["nonzero_params"],
            "dense_macs": macs and macs["dense_macs"], "sparse_macs": macs and macs["sparse_macs"],
            "sampling_dense_macs": macs and macs["dense_macs"] * steps,
            "sampling_sparse_macs": macs and macs["sparse_macs"] * steps,
            "counted": macs and f"{Path(macs['run']).resolve().relative_to(out)} r{macs['round']}",
            "folder": str(Path(path).relative_to(out))})
    order = ["dense", "none-tau", "ticket", *study["controls"]]
    return sorted(rows, key=lambda r: (r["round"], order.index(r["kind"]) if r["kind"] in order else len(order)))


def compare(rows: list[dict[str, Any]], metric: str, last: int, spread_rel: float) -> dict[str, Any]:
    """The ticket of the last round against each control of that round: the margin (control minus ticket;
    > 0: the ticket is better) against ``spread_rel`` of the ticket's value (no seed spread is measured
    here: part 1's on MNIST stands in), and whether part 1's finding (the ticket beats reinit and random
    masks beyond the spread, at 68% and 85% on MNIST) holds."""
    ticket = next((r for r in rows if r["kind"] == "ticket" and r["round"] == last and r[metric] is not None), None)
    out = []
    for r in rows:
        if ticket is None or r["kind"] in ("dense", "ticket", "none-tau") or r["round"] != last or r[metric] is None:
            continue
        margin, allowed = r[metric] - ticket[metric], spread_rel * ticket[metric]
        out.append({"control": r["kind"], "round": last, "sparsity": r["sparsity"], "ticket": ticket[metric],
                    "control_value": r[metric], "margin": margin, "relative": margin / ticket[metric],
                    "spread": allowed, "verdict": "ticket better" if margin > allowed else
                    "control better" if margin < -allowed else "within the spread"})
    verdicts = [c["verdict"] for c in out]
    status = "not decided" if not out else "holds" if all(v == "ticket better" for v in verdicts) else \
        "does not hold" if "control better" in verdicts else "not decided"
    dense = {r["kind"]: r[metric] for r in rows if r["kind"] in ("dense", "none-tau")}
    return {"comparisons": out, "mnist_finding": {"status": status, "verdicts": verdicts, "spread_rel": spread_rel},
            "ticket_over_dense": ticket[metric] / dense["dense"] if ticket and dense.get("dense") else None,
            "dense_from_tau_over_dense": dense["none-tau"] / dense["dense"] if dense.get("none-tau") and
            dense.get("dense") else None}


def faithful(study: dict[str, Any], chosen: dict[str, Any], rate: float, score_seconds: float) -> dict[str, Any]:
    """GPU-hours on one H200 of the paper's protocol and of what deciding its 90-99% claim needs, at
    ``rate`` steps/s (one training alone) and ``score_seconds`` a score of ``samples`` samples with the
    GPU to itself (scaled to ``score-samples``): the training steps and one score per trained network."""
    f, planned = study["faithful"], chosen["extrapolated_sparsity"]
    steps, n_controls = f["steps-per-round"], len(study["controls"])

    def cost(trainings: int, scores: int) -> dict[str, Any]:
        train_h = trainings * steps / rate / 3600
        score_h = scores * score_seconds * f["score-samples"] / study["samples"] / 3600
        return {"trainings": trainings, "training_gpu_hours": train_h, "scores": scores, "score_gpu_hours": score_h,
                "gpu_hours": train_h + score_h, "h200_sessions_of_25_min": math.ceil((train_h + score_h) * 60 / 25)}

    top = max(f["sparsities"])
    last = last_round(planned, top, len(planned) - 1) if planned[-1] >= top else None
    decide: dict[str, Any] = {"reachable": last is not None}
    if last is not None:
        cells = nearest_rounds(planned, f["sparsities"], last)
        per_seed = (last + 1) + n_controls * len(cells)
        decide.update({"last_round": last, "last_sparsity": planned[last], "seeds": f["seeds"],
                       "cells": [{"target": t, "round": k, "sparsity": planned[k]} for t, k in zip(f["sparsities"], cells)],
                       **cost(per_seed * f["seeds"], per_seed * f["seeds"])})
    return {"steps_per_round": steps, "steps_per_s": rate, "score_seconds": score_seconds,
            "score_samples_then": study["samples"], "score_samples": f["score-samples"],
            "paper": {"rounds": f["rounds"], "last_sparsity": planned[min(f["rounds"], len(planned) - 1)],
                      **cost(f["rounds"] + 1, f["rounds"] + 1)},
            "decide_90_99": decide,
            "note": "training steps at one training's rate alone and one score per trained network; round "
                    "overheads, compiles and the controls' per-round cost at other sparsities are left out"}


def markdown(rows: list[dict[str, Any]], verdict: dict[str, Any], estimate: dict[str, Any], metric: str) -> str:
    """The tables for docs/results.md: every scored network, the ticket against its controls, the budget."""
    def g(macs: float | None) -> str:
        return "" if macs is None else f"{macs / 1e9:.2f}"

    def num(v: float | None, spec: str = ".2f") -> str:
        return "" if v is None else format(v, spec)

    name = metric.replace("_", "-")
    lines = [f"| network | round | sparsity | masks, start | {name} | KID on its features (± over subsets) | "
             "weights kept (of prunable) | MACs per forward pass, dense -> sparse (G) | sampling MACs per sample (G) "
             "| final training loss |", "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        kid = "" if r["kid"] is None else f"{r['kid']:.4g} ± {r['kid_std']:.2g}"
        kept = "" if r["kept_prunable"] is None else f"{r['kept_prunable']:,} of {r['prunable_params']:,}"
        lines.append(f"| {r['id']} | {r['round']} | {100 * r['sparsity']:.2f}% | {LABELS.get(r['kind'], r['kind'])} | "
                     f"{num(r[metric])} | {kid} | {kept} | {g(r['dense_macs'])} -> {g(r['sparse_macs'])} | "
                     f"{g(r['sampling_sparse_macs'])} | {num(r['final_loss'], '.4f')} |")
    if verdict["comparisons"]:
        lines += ["", f"| control | sparsity | ticket | control | margin (control - ticket) | relative | "
                      f"spread allowed ({100 * verdict['mnist_finding']['spread_rel']:.0f}% of the ticket) | verdict |",
                  "|---|---:|---:|---:|---:|---:|---:|---|"]
        for c in verdict["comparisons"]:
            lines.append(f"| `{c['control']}` | {100 * c['sparsity']:.2f}% | {c['ticket']:.2f} | {c['control_value']:.2f} "
                         f"| {c['margin']:+.2f} | {100 * c['relative']:+.1f}% | {c['spread']:.2f} | {c['verdict']} |")
        lines += ["", f"Part 1's finding (the ticket beats reinit and random masks beyond the spread): "
                      f"**{verdict['mnist_finding']['status']}** at this budget."]
    lines += ["", "| GPU-hours on one H200 | trainings | training | scores | total | 25-minute sessions |",
              "|---|---:|---:|---:|---:|---:|"]
    for label, c in (("the paper's protocol", estimate["paper"]), ("deciding the 90-99% claim", estimate["decide_90_99"])):
        if "gpu_hours" in c:
            lines.append(f"| {label} | {c['trainings']} | {c['training_gpu_hours']:.1f} h | {c['score_gpu_hours']:.1f} h "
                         f"| **{c['gpu_hours']:.1f} h** | {c['h200_sessions_of_25_min']} |")
    lines += ["", f"At {estimate['steps_per_s']:.1f} steps/s and {estimate['score_seconds']:.0f} s a "
                  f"{estimate['score_samples_then']:,}-sample score ({estimate['score_samples']:,} samples a score here); "
                  f"{estimate['steps_per_round']:,} steps a round; {estimate['note']}."]
    return "\n".join(lines) + "\n"


LOG_SPAN = 3.0  # a score axis is logarithmic only where its values span this factor


def log_axis(values: list[float]) -> bool:
    """Whether a score axis reads better logarithmic: every value positive and spanning ``LOG_SPAN``.
    Over a narrower span a log axis labels its ticks 7.25x10^0 (the 2026-12-03 run's first drawing), and
    KID, an unbiased estimate, can be negative."""
    return bool(values) and min(values) > 0 and max(values) / min(values) >= LOG_SPAN


def plot_fd(rows: list[dict[str, Any]], metric: str, n_samples: int, file: Path) -> None:
    """The evaluator's distance and KID against sparsity: the ticket's rounds as a line, the controls
    as markers at their round's sparsity, the dense branch from theta_tau as a dotted level."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, name in ((axes[0], metric, metric.replace("_", "-")), (axes[1], "kid", "KID")):
        line = sorted((100 * r["sparsity"], r[key]) for r in rows if r["kind"] in ("dense", "ticket") and r[key] is not None)
        if line:
            ax.plot([x for x, _ in line], [y for _, y in line], "o-", lw=2.2, color="k", label="ticket (round 0: dense)")
        for r in rows:
            if r["kind"] not in ("dense", "ticket") and r[key] is not None:
                if r["kind"] == "none-tau":
                    ax.axhline(r[key], ls=":", color="gray", label=TITLES[r["kind"]])
                else:
                    ax.plot(100 * r["sparsity"], r[key], "s", ms=8, label=TITLES.get(r["kind"], r["kind"]))
        ax.set_xlabel("sparsity (% of prunable weights removed)")
        ax.set_ylabel(f"{name} ({n_samples} samples; lower is better)")
        if log_axis([r[key] for r in rows if r[key] is not None]):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(file, dpi=130)
    plt.close(fig)


def panels(rows: list[dict[str, Any]], out: Path, metric: str, last: int) -> list[tuple[str, str, int]]:
    """The networks of the sample grids and strips: dense, the last round's ticket, its controls, the
    dense branch; each titled with its score."""
    picks = [r for r in rows if r["kind"] == "dense" or r["round"] == last and r["kind"] != "dense"]
    picks += [r for r in rows if r["kind"] == "none-tau" and r not in picks]
    name = metric.replace("_", "-")
    return [(f"{TITLES.get(r['kind'], r['kind'])}, {100 * r['sparsity']:.1f}%\n"
             f"{name} {r[metric]:.1f}", str(out / r["folder"]), 0 if "branches" in r["folder"] else r["round"])
            for r in picks if r[metric] is not None]


# -- the command ----------------------------------------------------------------------------------
def print_plan(jobs: list[Job], chosen: dict[str, Any], projection: dict[str, Any], slower: list[dict[str, Any]],
               estimate: dict[str, Any], study: dict[str, Any]) -> None:
    planned = chosen["planned_sparsity"]
    print(f"trajectory: rounds 0-{chosen['last_round']} of {chosen['steps_per_round']} steps "
          f"({', '.join(f'{100 * s:.2f}%' for s in planned)}); branches "
          + ", ".join(f"{b} (of round {v['of_round']})" for b, v in chosen["branches"].items())
          + f"; scored rounds {chosen['scored_rounds']}; {study['samples']} samples a score, DDIM {study['sample-steps']}")
    ends, uncut = projection["ends"], projection["uncut_ends"]
    for job in jobs:
        needs = ", ".join([f"{Path(p).name} r{k}" for p, k in job.needs_rounds] + job.needs_jobs)
        when = f"ends at {ends[job.id] / 60:5.1f} min" if job.id in ends else \
            f"CUT (uncut it would end at {uncut[job.id] / 60:.1f} min)"
        span = f" {job.steps} steps" if job.kind in TRAINING else ""
        print(f"  {job.id:26s} {job.kind:6s} {when}{span}" + (f" after {needs}" if needs else ""))
    print(f"projected end, uncut: {projection['uncut_end_s'] / 60:.1f} min; with the cuts below: "
          f"{projection['end_s'] / 60:.1f} min of the {projection['budget_s'] / 60:.0f} min budget"
          + ("" if projection["fits"] else " (STILL OVER: the script cuts more as it runs)"))
    for c in projection["cuts"]:
        print(f"  cut {c['job']}" + (f" (and {', '.join(c['with'])})" if c["with"] else "")
              + f": the plan would end at {c['projected_end_s'] / 60:.1f} min")
    print(f"cut order (cells, never the sample count): {', '.join(study.get('cut-order', [])) or 'none'}")
    print("at slower training (rates of the TOML times the factor):")
    for p in [projection, *slower]:
        cuts = ", ".join(c["job"] for c in p["cuts"]) or "nothing"
        print(f"  x{p['train_scale']:.2f} ({p['train_scale'] * study['train-rates'][0]:.1f} steps/s alone): uncut "
              f"{p['uncut_end_s'] / 60:.1f} min; cuts {cuts}; {p['end_s'] / 60:.1f} min" + ("" if p["fits"] else " (over)"))
    for label, c in (("the paper's protocol", estimate["paper"]), ("deciding 90-99%", estimate["decide_90_99"])):
        if "gpu_hours" in c:
            print(f"{label}: {c['trainings']} trainings of {estimate['steps_per_round']:,} steps, "
                  f"{c['gpu_hours']:.1f} GPU-hours on one H200 at {estimate['steps_per_s']:.1f} steps/s")


def main(argv: list[str] | None = None, t_start: float | None = None) -> dict[str, Any]:
    args = study_parser(__doc__).parse_args(argv)
    run_cfg, study, out = read_run(args, STUDY_KEYS, needs=("steps_per_round", "rounds"))
    jobs, chosen = make_plan(run_cfg, study, out)
    check_cut_order(args, study, jobs, [j for j in jobs if j.kind in ("branch", "score")], "branch or score")
    projection = dry_run(jobs, study)
    metric = study["evaluator"].replace("-", "_")
    if args.plan:
        slower = [dry_run(jobs, study, s) for s in SLOWER[1:]]
        estimate = faithful(study, chosen, study["train-rates"][0], study["score-seconds"])
        print_plan(jobs, chosen, projection, slower, estimate, study)
        return {"plan": chosen, "projection": projection, "slower": slower, "faithful": estimate}
    results = out / "results"
    results.mkdir(parents=True, exist_ok=True)
    mps = not args.no_mps and start_mps(out)
    log = open(results / "cifar10.log", "a")
    sched = CifarScheduler(jobs, {**study, "log-dir": str(results)}, study["train-workers"], log,
                           first_round_of="run", handlers=HANDLERS, t_start=t_start or time.time())
    sched.say(f"plan: rounds 0-{chosen['last_round']} of {run_cfg.steps_per_round} steps, "
              f"{sum(j.kind == 'branch' for j in jobs)} branches, {sum(j.kind == 'score' for j in jobs)} scores; "
              f"projected {projection['uncut_end_s'] / 60:.1f} min uncut at the TOML's rates; MPS {'on' if mps else 'off'}")
    figures: dict[str, Any] = {}
    try:
        sched.run(run_cfg.precision, run_cfg.compile)
        store_finished_scores(sched.jobs, study["evaluator"], sched.say)
        rows = collect(sched.jobs, chosen, study, out)
        shown = panels(rows, out, metric, chosen["last_round"])
        if shown:
            base = {"panels": shown, "seed": study["sample-seed"], "steps": study["sample-steps"]}
            figures["samples_png"] = sched.call("grids", {**base, "file": str(results / "cifar10_samples.png")})
            figures["denoising_png"] = sched.call("strips", {**base, "n": 4, "frames": 8,
                                                             "file": str(results / "cifar10_denoising.png")})
    finally:
        sched.close()
        if mps:
            stop_mps()
    measured = sched.measured()
    alone = measured["train_steps_per_s_alone"]
    estimate = faithful(study, chosen, alone or study["train-rates"][0], measured["score_gpu_seconds"])
    estimate["rate_from"] = "measured alone in this run" if alone else "the TOML (no interval alone was measured)"
    verdict = compare(rows, metric, chosen["last_round"], study["spread-rel"])
    result = {"evaluator": study["evaluator"], "rows": rows, **verdict, "faithful": estimate, "measured": measured,
              "data": {"dataset": run_cfg.dataset, "data_root": run_cfg.data_root,
                       "note": "the JPEG copy of CIFAR-10 (re-encoded at quality 75), not the original pixels"},
              "plan": chosen, "projection_at_start": {k: projection[k] for k in ("uncut_end_s", "end_s", "cuts", "budget_s")},
              **figures, **run_facts(args, study, run_cfg, sched, mps)}
    (results / "cifar10.json").write_text(json.dumps(result, indent=1, default=str))
    (results / "cifar10_table.md").write_text(markdown(rows, verdict, estimate, metric))
    if rows:
        plot_fd(rows, metric, study["samples"], results / "cifar10_fd.png")
    sched.say(f"wrote {results} ({time.time() - sched.t0:.0f} s)")
    return result


if __name__ == "__main__":
    main(t_start=T_START)

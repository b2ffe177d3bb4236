"""What the MNIST study's parts share: the plan's schedule math, the worker processes (training, scoring)
and the scheduler that runs their jobs side by side on one GPU (under CUDA MPS where the machine has it),
timed against a budget and cut in a given order.

The parts (``part1.py``, ``part2.py``) make the jobs; a part's own projection of its end time is a
subclass of :class:`Scheduler` (its ``projected_end``).
"""

from __future__ import annotations

import argparse
import copy
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
from typing import Any, Callable

from ticketforge import hookimpl

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

PATH_KEYS = ("data-root", "data_root", "ticket-run", "ticket_run")
CLOSING_LAYERS = ("conv2", "proj_out", "conv_out")  # DDPM's layers that close a residual branch, init ~0
TRAINING = ("run", "branch")  # the kinds of job the training workers take; the scoring worker takes the others

# -- the plan -------------------------------------------------------------------------------------
@dataclass
class Job:
    id: str
    kind: str  # "run", "branch" (training workers) or "score", "flops", "grids" (the scoring worker)
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


def study_arguments(doc: str | None, out_help: str) -> argparse.ArgumentParser:
    """The command line every part takes: its TOML, ``--out``, ``--set``/``--study-set`` overrides, ``--no-mps``."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", type=Path)
    ap.add_argument("--out", type=Path, required=True, help=out_help)
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--study-set", dest="study_sets", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--no-mps", action="store_true", help="do not start CUDA MPS")
    return ap


def checks_of_finished(argv: list[str] | None, doc: str | None, name: str, figure: str, figure_help: str,
                       check: Callable[[dict[str, Any]], dict[str, Any]],
                       options: Callable[[argparse.ArgumentParser], Any] | None = None
                       ) -> tuple[argparse.Namespace, dict[str, Any], dict[str, Any]]:
    """A checks script's command line (a finished part's JSON, ``--FIGURE`` to draw a plot again, what
    ``options`` adds) and ``check`` run on the JSON: (args, the JSON, what ``check`` found). A file that
    is not that part's finished JSON is a one-line error."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("result", type=Path, help=f"a finished part's results/{name}")
    ap.add_argument(f"--{figure}", type=Path, help=figure_help)
    if options is not None:
        options(ap)
    args = ap.parse_args(argv)
    return (args, *read_finished(args.result, name, check))


def read_finished(path: Path, name: str, check: Callable[[dict[str, Any]], Any]) -> tuple[dict[str, Any], Any]:
    """A finished part's JSON ``name`` at ``path`` and ``check`` run on it; a file that is not one (or
    lacks what ``check`` reads) is a one-line error."""
    try:
        result = json.loads(path.read_text())
        return result, check(result)
    except (OSError, ValueError, KeyError, TypeError) as e:
        sys.exit(f"{path} is not a finished part's {name} ({e.__class__.__name__}: {e}); give results/{name}")


def read_study(path: Path, sets: list[str], study_sets: list[str], known: set[str] | None
               ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run's settings (paths made relative to the TOML file) and the [study] table, overrides applied
    (its keys checked against ``known`` unless that is None)."""
    data = tomllib.loads(path.read_text())
    study = data.pop("study", {})
    for target, items in ((data, sets), (study, study_sets)):
        for item in items:
            key, _, value = item.partition("=")
            if value == "":  # KEY= drops the file's setting
                target.pop(key, None)
            else:
                target[key] = tomllib.loads(f"v = {value}")["v"]
    unknown = sorted(set(study) - known) if known is not None else []
    if unknown:
        sys.exit(f"{path}: unknown [study] key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    for key in PATH_KEYS:
        if isinstance(data.get(key), str) and data[key] and not Path(data[key]).is_absolute():
            data[key] = str((path.parent / data[key]).resolve())
    return data, study


@dataclass
class PlannedRounds:
    """What a run's rounds prune to, from its schedule alone.

    ``sparsity[k]`` is round k's overall sparsity (the counts do not depend on the scores); ``groups[k]``
    and ``kept[k]`` its per-group profile (as a round record's ``groups``) and each pruned tensor's kept
    weights, exact for a per-group schedule (``uniform``, ``incremental``: a group's count depends on its
    ratio alone), drawn from random scores for one that ranks across groups (``global``, ``erk``).
    ``cap`` is the run's cap on rounds once the preset's defaults are filled in; ``targets`` the pruned
    tensors (qualified name, group index) in forward order."""

    sparsity: list[float]
    groups: list[list[dict[str, Any]]]
    kept: list[list[int]]
    cap: int
    targets: list[tuple[str, int]]


_PLANS: dict[tuple[str, int], PlannedRounds] = {}


def plan_rounds(config: Any, rounds: int) -> PlannedRounds:
    """Rounds 0..rounds of ``config``'s run as the engine's schedule prunes them (the run stops at its
    target sparsity), on a network built on the CPU and random scores (seeded: the same plan every
    time, so a process computes each config's once; a copy is returned)."""
    key = (json.dumps(dataclasses.asdict(config), sort_keys=True, default=str), rounds)
    if key not in _PLANS:
        _PLANS[key] = _plan_rounds(config, rounds)
    return copy.deepcopy(_PLANS[key])


def _plan_rounds(config: Any, rounds: int) -> PlannedRounds:
    import torch

    from ticketforge import Engine
    from ticketforge.pruning.targets import flatten, group_summary, group_tensors, module_groups, prune_targets

    engine = Engine(dataclasses.replace(config, device="cpu", compile=False, out=None))
    network = engine.spec.build()
    groups = module_groups(engine.spec, network)
    targets = prune_targets(groups)
    masks = [torch.ones_like(t.module.weight, dtype=torch.bool) for t in targets]
    gen = torch.Generator().manual_seed(0)
    total = sum(m.numel() for m in masks)
    plan = PlannedRounds([0.0], [group_summary(groups, targets, masks)], [[m.numel() for m in masks]],
                         engine.config.rounds, [(t.name, t.group) for t in targets])
    for _ in range(rounds):
        if plan.sparsity[-1] >= (config.target_sparsity or 1.0):  # the run stops here
            break
        scores = [torch.rand(m.shape, generator=gen) for m in masks]
        new = engine.schedule.prune(group_tensors(targets, scores), group_tensors(targets, masks))
        masks = [m.bool() for m in flatten(new)]
        plan.sparsity.append(1.0 - sum(int(m.sum()) for m in masks) / total)
        plan.groups.append(group_summary(groups, targets, masks))
        plan.kept.append([int(m.sum()) for m in masks])
    return plan


def planned_sparsities(config: Any, rounds: int) -> tuple[list[float], int]:
    """Sparsity of rounds 0..rounds as the engine's schedule prunes them (counts do not depend on the
    scores), and the run's cap on rounds once the preset's defaults are filled in."""
    plan = plan_rounds(config, rounds)
    return plan.sparsity, plan.cap


def nearest_rounds(planned: list[float], targets: list[float], last: int) -> list[int]:
    """For each target sparsity, the round (1..last) whose planned sparsity lies nearest it."""
    return [min(range(1, last + 1), key=lambda k: (abs(planned[k] - s), k)) for s in targets]


def last_round(planned: list[float], target: float, cap: int) -> int:
    """The run's own stopping rule: the first round at or above ``target``, or round ``cap``."""
    return min(cap, next((k for k, s in enumerate(planned) if s >= target), cap))


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


def worker(wid: int, kind: str, inbox: Any, outbox: Any, study: dict[str, Any],
           handlers: dict[str, Any] | None = None) -> None:
    """One worker process. ``handlers``: a part's own kinds of job, each ``(args, state) -> result``, with
    ``state`` one dict for all the jobs of this process (what it keeps across them: compiled denoisers)."""
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
    state: dict[str, Any] = {}
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
            elif jkind == "flops":
                from ticketforge.inspection import model_report  # what `ticketforge flops --json` prints
                result = model_report(args["path"], None, None, {}, args["round"])
            elif handlers and jkind in handlers:
                result = handlers[jkind](args, state)
            else:
                result = draw_grids(args)
            outbox.put(("done", wid, jid, result, time.perf_counter() - t0))
        except BaseException as exc:  # reported, and this worker goes on with the next job
            outbox.put(("failed", wid, jid, f"{type(exc).__name__}: {exc}", time.perf_counter() - t0))


def score_once(scoring: Any, args: dict[str, Any]) -> dict[str, Any]:
    """Score one item unless its record already holds a score made with these settings.

    ``args["store"]`` False: the scores are returned, not stored (the run may still be training under its
    lock); the scheduler's process stores them (:func:`store_scores`) once the run is done."""
    from ticketforge.evaluation import EvalItem
    from ticketforge.store import RunStore

    path, k = args["path"], args["round"]
    stored = RunStore(path).round_record(k).get("metrics", {}).get(scoring.evaluator_name)
    same = stored and all(stored.get(key) == want for key, want in (
        ("n_samples", scoring.n_samples), ("steps", scoring.steps), ("seed", scoring.seed), ("ema", scoring.ema)))
    if same:
        return {"scores": stored, "reused": True}
    t0 = time.perf_counter()
    out = scoring.score(EvalItem(path, k, args.get("branch")), store=args.get("store", True))
    return {"scores": out["scores"], "reused": False, "seconds": time.perf_counter() - t0,
            "stored": args.get("store", True)}


def store_scores(path: str, k: int, evaluator: str, scores: dict[str, Any]) -> None:
    """Store scores made with ``store`` False in the round's record (as ``Scoring`` would have)."""
    from ticketforge import record_metrics
    record_metrics(path, k, {evaluator: scores})


def draw_panels(args: dict[str, Any], rows: int, cols: int, figsize: tuple[float, float], draw: Any,
                rect: tuple[float, float, float, float] = (0, 0, 1, 1)) -> str:
    """One PNG of ``args["panels"]`` (title, run folder, round), each panel's network loaded (EMA weights)
    and drawn by ``draw(ax, loaded, generator)`` with the generator seeded at ``args["seed"]`` (the same
    noise for every panel)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from ticketforge import load_round

    device = "cuda" if torch.cuda.is_available() else "cpu"
    fig, axes = plt.subplots(rows, cols, figsize=figsize, squeeze=False)
    for ax, (title, path, k) in zip(axes.flat, args["panels"]):
        loaded = load_round(path, k, device=device)
        with torch.no_grad():
            draw(ax, loaded, torch.Generator(device=device).manual_seed(args["seed"]))
        ax.set_title(title, fontsize=9)
    fig.tight_layout(rect=rect)
    fig.savefig(args["file"], dpi=130)
    plt.close(fig)
    return args["file"]


def draw_grids(args: dict[str, Any]) -> str:
    """64 samples of each panel's network (DDIM, EMA weights, seed fixed), side by side in one PNG."""
    from torchvision.utils import make_grid

    def draw(ax: Any, loaded: Any, gen: Any) -> None:
        images = loaded.spec.sample(loaded.network, 64, generator=gen, sampler="ddim", steps=args["steps"])
        grid = make_grid(images.float().cpu(), nrow=8, padding=1, pad_value=1.0)
        ax.imshow(grid.permute(1, 2, 0).clamp(0, 1).numpy(), cmap="gray", interpolation="nearest")
        ax.axis("off")

    n = len(args["panels"])
    return draw_panels(args, 1, n, (3.2 * n, 4.0), draw, rect=(0, 0, 1, 0.97))


def draw_strips(args: dict[str, Any], state: dict[str, Any] | None = None) -> str:
    """A denoising strip of each panel's network (x_T ... x_0 of ``n`` samples at ``frames`` steps,
    DDIM, EMA weights, one seed: the same noise for every panel), the panels one under another. A
    handler of the scoring worker (``state``, its cache, unused)."""
    from torchvision.utils import make_grid

    def draw(ax: Any, loaded: Any, gen: Any) -> None:
        levels, states = loaded.spec.denoising_trajectory(loaded.network, args["n"], frames=args["frames"],
                                                          generator=gen, sampler="ddim", steps=args["steps"])
        rows = states.transpose(0, 1).reshape(-1, *states.shape[2:])  # a row per sample, noisiest first
        grid = make_grid(rows.float().cpu(), nrow=len(levels), padding=1, pad_value=1.0)
        ax.imshow(grid.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
        ax.set_xticks([(i + 0.5) * grid.shape[2] / len(levels) for i in range(len(levels))])
        ax.set_xticklabels([f"t={t}" for t in levels], fontsize=6)
        ax.set_yticks([])

    n = len(args["panels"])
    return draw_panels(args, n, 1, (1.0 * args["frames"] + 0.6, (1.0 * args["n"] + 0.5) * n), draw)


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


def finished_rounds(path: str) -> list[int]:
    """The rounds a run folder has finished (none before the run has started)."""
    from ticketforge.store import RunStore
    store = RunStore(path)
    return store.finished_rounds() if store.exists() else []


def ready(job: Job, jobs: dict[str, Job], finished: dict[str, list[int]]) -> bool:
    """Whether what the job needs is done; ``finished`` caches each run's finished rounds for one pass."""
    if any(jobs[j].state != "done" for j in job.needs_jobs):
        return False
    for path, k in job.needs_rounds:
        if path not in finished:
            finished[path] = finished_rounds(path)
        if k not in finished[path]:
            return False
    return True


def blocked(job: Job, jobs: dict[str, Job]) -> bool:
    """Whether a job can never run: something it needs failed or was cut."""
    return any(jobs[j].state in ("failed", "cut") or blocked(jobs[j], jobs) for j in job.needs_jobs) or any(
        j.kind == "run" and j.state in ("failed", "cut") and j.args["config"]["out"] == path
        for path, _ in job.needs_rounds for j in jobs.values())


def cut(jobs: dict[str, Job], jid: str) -> list[str]:
    """Cut a todo job and every todo job that can then never run (:func:`blocked`); the ids cut, ``jid``
    first. Setting them back to todo undoes it exactly."""
    if jobs[jid].state != "todo":
        return []
    jobs[jid].state, out = "cut", [jid]
    grew = True
    while grew:
        grew = False
        for job in jobs.values():
            if job.state == "todo" and blocked(job, jobs):
                job.state = "cut"
                out.append(job.id)
                grew = True
    return out


def cut_to_fit(jobs: list[Job], study: dict[str, Any],
               project: Callable[[dict[str, Job], list[str]], dict[str, float]]) -> dict[str, Any]:
    """A part's ``--plan``: ``project(by_id, order)`` (each job's end, ``"end"`` the part's) on copies of
    ``jobs``, and the cuts in ``cut-order`` (each with what it takes along) that bring it inside
    ``budget-minutes``."""
    by_id = {j.id: dataclasses.replace(j) for j in jobs}
    order = [j.id for j in jobs]
    budget = study["budget-minutes"] * 60
    full = ends = project(by_id, order)
    cuts: list[dict[str, Any]] = []
    for jid in study.get("cut-order", []):
        if ends["end"] <= budget:
            break
        if by_id[jid].state == "todo":
            cuts.append({"job": jid, "with": cut(by_id, jid)[1:], "projected_end_s": ends["end"]})
            ends = project(by_id, order)
    return {"uncut_end_s": full["end"], "uncut_ends": full, "end_s": ends["end"], "budget_s": budget,
            "cuts": cuts, "ends": ends, "fits": ends["end"] <= budget}


class Scheduler:
    """Runs the jobs in ``n_train`` training processes and one scoring process, in the order given as far
    as each job's needs allow; cuts jobs in ``study["cut-order"]`` while :meth:`projected_end` says the plan
    ends after ``study["budget-minutes"]``, and restores the last cut (while none of it has started) once
    the plan with it back ends ``RESTORE_MARGIN_S`` before the budget. ``first_round_of``: the run whose
    first round (compilation included) is timed (None: the first run job to finish a round)."""

    # A projection made while the first score trains its featurizer beside the trainings runs long (part 2's
    # first attempt cut three cells it then had the time for): a cut is undone when the rate recovers. The
    # margin keeps a restore from being cut again by the next projection's noise.
    RESTORE_MARGIN_S = 60.0

    def __init__(self, jobs: list[Job], study: dict[str, Any], n_train: int, log: Any,
                 first_round_of: str | None = None, handlers: dict[str, Any] | None = None) -> None:
        self.handlers = dict(handlers or {})  # job kind -> module-level function, run by the scoring worker
        self.jobs = {j.id: j for j in jobs}
        self.first_round_of = first_round_of
        self.order = [j.id for j in jobs]
        self.study, self.log = study, log
        self.ctx = mp.get_context("spawn")
        self.outbox = self.ctx.Queue()
        self.workers: list[dict[str, Any]] = []
        for wid, kind in enumerate(["train"] * n_train + ["score"]):
            inbox = self.ctx.Queue()
            proc = self.ctx.Process(target=worker, args=(wid, kind, inbox, self.outbox, study, self.handlers),
                                    daemon=True)
            proc.start()
            self.workers.append({"kind": kind, "inbox": inbox, "proc": proc, "job": None, "rate": []})
        self.t0 = time.time()
        self.cuts: list[dict[str, Any]] = []  # what stays cut (a restored cut moves to ``restored``)
        self.restored: list[dict[str, Any]] = []
        self.undoable: list[tuple[dict[str, Any], list[str]]] = []  # projection cuts, the latest last
        self.first_round_s: float | None = None
        self.last_cut = 0.0  # the last cut or restore

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
            kinds = TRAINING if w["kind"] == "train" else ("score", "grids", "flops", *self.handlers)
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
            if job.kind == "run" and self.first_round_of in (None, job.id) and self.first_round_s is None:
                self.first_round_s = time.time() - (job.started or self.t0)
                self.say(f"first round of {job.id} took {self.first_round_s:.1f} s (compilation included)")
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
        """Seconds from the start at which the plan ends, at the rates seen now (None: not known yet).
        Each part projects its own plan (a subclass); without a projection nothing is cut for the budget."""
        return None

    def after_pass(self) -> None:
        """Called once a scheduling pass, after the messages are read (a part's own bookkeeping)."""

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
        if end is None or time.time() - self.last_cut < 30:
            return
        if end <= budget:
            self.maybe_restore(budget)
            return
        for jid in self.study.get("cut-order", []):
            job = self.jobs.get(jid)
            if job is not None and job.state == "todo":
                ids = cut(self.jobs, jid)
                self.last_cut = time.time()
                entry = {"job": jid, "with": ids[1:], "projected_end_s": end, "budget_s": budget,
                         "at_s": time.time() - self.t0}
                self.cuts.append(entry)
                self.undoable.append((entry, ids))
                self.say(f"cut {jid}" + (f" (and {', '.join(ids[1:])})" if ids[1:] else "")
                         + f": the plan would end at {end / 60:.1f} min, over the {budget / 60:.0f} min budget")
                return

    def maybe_restore(self, budget: float) -> None:
        """Undo the latest projection cut if the plan with it back ends ``RESTORE_MARGIN_S`` before the
        budget; none after the last two minutes, when no new training starts anyway."""
        if not self.undoable or time.time() - self.t0 > budget - 120:
            return
        entry, ids = self.undoable[-1]
        if any(self.jobs[i].state != "cut" for i in ids):
            return  # not ours to undo any more (the two-minute rule or a dead worker cut it for good)
        for i in ids:
            self.jobs[i].state = "todo"
        end = self.projected_end()
        if end is None or end > budget - self.RESTORE_MARGIN_S:
            for i in ids:
                self.jobs[i].state = "cut"
            return
        self.undoable.pop()
        self.cuts.remove(entry)
        self.restored.append({**entry, "restored_at_s": time.time() - self.t0, "projected_end_with_it_s": end})
        self.last_cut = time.time()
        self.say(f"restore {entry['job']}: the plan with it ends at {end / 60:.1f} min, "
                 f"within the {budget / 60:.0f} min budget")

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
            self.after_pass()
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


def commit_of(repo: Path) -> str | None:
    """The checkout's commit (STUDY_COMMIT where the tree travelled without its history)."""
    if os.environ.get("STUDY_COMMIT"):
        return os.environ["STUDY_COMMIT"]
    res = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=repo)
    return res.stdout.strip() or None


def device_name() -> str:
    import torch
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"



# -- a part's command line and the facts its JSON records (part 3 uses them) ------------------------
def study_parser(doc: str | None) -> Any:
    """:func:`study_arguments` with ``--plan`` (print the job graph and its projection, train nothing)."""
    ap = study_arguments(doc, "folder of the runs and results/")
    ap.add_argument("--plan", action="store_true", help="print the job graph and its projected minutes, train nothing")
    return ap


def check_cut_order(args: Any, study: dict[str, Any], jobs: list[Job], cuttable: list[Job], what: str) -> None:
    """Exit in one line when the TOML's ``cut-order`` names a job that is not among ``cuttable``."""
    unknown = sorted(set(study.get("cut-order", [])) - {j.id for j in cuttable})
    if unknown:
        sys.exit(f"{args.config}: cut-order names {unknown[0]!r}, which is no {what} of this plan "
                 f"(they are: {', '.join(j.id for j in cuttable)})")


def read_run(args: Any, known: set[str], needs: tuple[str, ...] = ("target_sparsity", "steps_per_round")
             ) -> tuple[Any, dict[str, Any], Path]:
    """The part's run config, its [study] table (overrides applied) and its output folder, from the
    parsed arguments of :func:`study_parser`; exits unless the run sets each of ``needs``."""
    from ticketforge import RunConfig

    run_data, study = read_study(args.config, args.sets, args.study_sets, known)
    run_cfg = RunConfig.from_dict(run_data, source=str(args.config))
    missing = [name.replace("_", "-") for name in needs if getattr(run_cfg, name) is None]
    if missing:
        sys.exit(f"{args.config}: give {' and '.join(missing)}")
    return run_cfg, study, args.out.resolve()


def run_facts(args: Any, study: dict[str, Any], run_cfg: Any, sched: Scheduler, mps: bool) -> dict[str, Any]:
    """What a part's JSON records of how it ran: its settings and overrides, commit, device, wall time,
    first round, cuts and each job's state and seconds (``error`` for a failed one, ``reused`` for a job
    whose result says so)."""
    return {
        "config_file": str(args.config), "overrides": args.sets, "study_overrides": args.study_sets, "study": study,
        "run_config": dataclasses.asdict(run_cfg), "commit": commit_of(Path(__file__).parent),
        "device": device_name(), "mps": mps, "train_workers": study["train-workers"],
        "wall_seconds": time.time() - sched.t0, "first_round_seconds": sched.first_round_s, "cuts": sched.cuts,
        "restored_cuts": sched.restored,
        "jobs": {j.id: {"state": j.state, "seconds": j.seconds,
                        **({"reused": j.result["reused"]} if isinstance(j.result, dict) and "reused" in j.result else {}),
                        **({"error": j.result} if j.state == "failed" else {})} for j in sched.jobs.values()}}


def rate_scale(sched: Scheduler) -> float | None:
    """The training rate measured now against ``study["train-rates"]`` at as many trainings as run now
    (None until a rate is measured and the first round has run): what a projection scales its table by."""
    rates = [r for w in sched.workers if w["kind"] == "train" and (r := sched.rate(w))]
    if not rates or sched.first_round_s is None:
        return None
    table = sched.study["train-rates"]
    n_now = sum(1 for w in sched.workers if w["kind"] == "train" and w["job"])
    return (sum(rates) / len(rates)) / table[min(max(n_now, 1), len(table)) - 1]


def scorer_free_at(sched: Scheduler, cost: Any) -> float:
    """Seconds from the part's start at which the scoring worker's running job ends, ``cost(job)`` its
    projected seconds (now when it runs nothing or has overrun)."""
    scorer = next(w for w in sched.workers if w["kind"] == "score")
    running = sched.jobs[scorer["job"]] if scorer["job"] else None
    now = time.time() - sched.t0
    return now + (max(cost(running) - (time.time() - (running.started or 0)), 0) if running else 0)


def serve_in_order(pending: list[Any], start: float, ready_at: Any, cost: Any) -> dict[Any, float]:
    """One server (the scoring worker) taking, from ``start`` on, the first of ``pending`` that is ready
    (``ready_at(item)`` seconds) each time it is free; ``cost(item, t)`` the seconds of an item started at
    ``t``. When each item ends."""
    left, ends, t = list(pending), {}, start
    while left:
        ready = [item for item in left if ready_at(item) <= t]
        if not ready:
            t = min(ready_at(item) for item in left)
            continue
        left.remove(ready[0])
        t += cost(ready[0], t)
        ends[ready[0]] = t
    return ends

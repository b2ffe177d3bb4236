"""The train-prune-rewind loop, as it runs: for each round, its masks, its start weights, training, saving.

Round 0 trains the dense network from theta_0 and keeps theta_tau after ``tau`` steps. Each later
round scores the previous round's trained weights, lets the schedule choose new masks, rewinds the
surviving weights (to theta_tau by default), resets optimizer and EMA, and trains again. Everything
a round produces is written to the run store before the next one starts, so the same command
resumes after any interruption: a finished round is read back, an unfinished one continues from
its checkpoint. A branch (branch.py) trains one job through :func:`train` into a store of its own.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import Tensor, nn

from ..config import EXTENT_FIELDS, config_differences
from ..errors import CheckpointError, ConfigError
from ..progress import Task
from ..protocols import Grouped, ModelSpec
from ..pruning import sparsity_of
from ..pruning.select import prune_tensorwise_like
from ..pruning.state import load_plain_state_dict, plain_state_dict
from ..pruning.targets import PrunableNetwork, all_kept, by_name, flatten, group_summary, group_tensors, mask_digest
from ..store.read_checks import checked_masks, redo_advice, round_masks
from ..store.run_store import round_dir
from .artifacts import artifact_caption, artifacts_seed
from .contract import check_masks, check_scores, component
from .data import BatchSource, hash_seed
from .distributed import Store
from .ema import EMA
from .interrupts import InterruptedAt, StepBoundary, attach
from .rewind import THETA_TAU, RewindPoints, point_step
from .run_folder import default_run_dir
from .step_graph import WARMUP_STEPS
from .ticket_run import ticket_masks
from .train import make_optimizer, make_stepper, train_round

if TYPE_CHECKING:
    from .engine import Engine

CHECKPOINT = "checkpoint.pt"


@dataclass
class RunState:
    """What lifecycle hooks see of a run."""

    run_dir: Path
    config: dict[str, Any]
    spec: ModelSpec
    group_names: list[str]
    device: torch.device
    network: nn.Module | None = None
    rounds: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Run:
    """What the rounds of one run (or a branch's one training) share.

    ``finished`` and ``theta_0``: the rounds an earlier attempt finished and the initial weights
    (a run's; a branch has neither).
    """

    engine: Engine
    store: Store
    net: PrunableNetwork
    batches: BatchSource
    state: RunState
    finished: list[int] = field(default_factory=list)
    theta_0: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class TrainingJob:
    """One training of fixed masks: round ``index`` of a run, or a branch (its folder 0, seeds of a round).

    Attributes:
        seed_round: the round whose data order and noise seeds are used.
        index: the round folder (``rounds/NNNN``) and record index written in the run's store.
        masks: one bool mask per prune target, in target order.
        start: the start weights (plain layout) and ``start_source``, a name for error messages.
        steps: training steps.
        points: the rewind points to take on the way (round 0 of a run only).
        record_extra: keys added to the record (a branch's description).
    """

    seed_round: int
    index: int
    masks: list[Tensor]
    start: dict[str, Tensor]
    start_source: str
    steps: int
    points: RewindPoints
    record_extra: dict[str, Any] = field(default_factory=dict)


# -- the loop -------------------------------------------------------------------------------------
def run_rounds(engine: Engine, net: PrunableNetwork) -> list[dict[str, Any]]:
    """Run (or resume) every round of the engine's run: masks, start weights, train, save; the records."""
    run = open_run(engine, net)
    for k in itertools.count():
        if k in run.finished:
            record = run.store.round_record(k)
        else:
            masks = next_masks(run, k)
            start, source = start_weights(run, k)
            record = train(run, round_job(run, k, masks, start, source))  # and saved, record last
            run.state.rounds.append(record)
        if is_last_round(run, k, record):
            break
    engine.hooks.ticketforge_run_end(run=run.state, rounds=run.state.rounds)
    return run.state.rounds


def open_run(engine: Engine, net: PrunableNetwork) -> Run:
    """The run folder checked against this config (new, resumed, or taken further), the data, theta_0."""
    store = engine.store
    store.clean()
    resolved = {**dataclasses.asdict(engine.config), "model_config": engine.spec.config}
    stored = store.read_config() if store.exists() else None
    if stored is not None:
        diff = config_differences(stored, resolved)
        if diff:
            raise ConfigError(f"{engine.run_dir} holds a run with another config ({'; '.join(diff[:3])}): "
                              f"use another --out, or --fresh to overwrite it")
    net.network.to(engine.device)
    state = RunState(engine.run_dir, resolved, engine.spec, [g.name for g in net.groups], engine.device, net.network)
    finished = store.finished_rounds()
    state.rounds = [store.round_record(k) for k in finished]  # before run_start: hooks see a resume
    engine.hooks.ticketforge_run_start(run=state)
    batches = engine.batches()
    # The config is written once the data has loaded: a wrong --data-root leaves a folder with nothing
    # in it, which the corrected command starts in, instead of a run of the wrong path refusing it.
    if stored is None:
        store.write_config(resolved)
    elif any(stored.get(k) != resolved[k] for k in EXTENT_FIELDS):
        store.write_config({**stored, **{k: resolved[k] for k in EXTENT_FIELDS}})  # goes further (or less far)
    return Run(engine, store, net, batches, state, finished, initial_weights(store, net.network))


def is_last_round(run: Run, k: int, record: dict[str, Any]) -> bool:
    cfg = run.engine.config
    return k >= cfg.rounds or (cfg.target_sparsity is not None and record["sparsity"] >= cfg.target_sparsity)


def initial_weights(store: Store, network: nn.Module) -> dict[str, Tensor]:
    """theta_0: built from the seed once, then always read back from the run."""
    if store.has("init.safetensors"):
        return store.read_tensors("init.safetensors")
    theta_0 = plain_state_dict(network)
    store.write_tensors("init.safetensors", theta_0, {"format": "ticketforge-weights/1"})
    return theta_0


def round_job(run: Run, k: int, masks: list[Tensor], start: dict[str, Tensor], source: str) -> TrainingJob:
    """Round k's training: its masks, start weights, steps and (round 0) rewind points."""
    cfg = run.engine.config
    points = RewindPoints.for_round_0(point_step(cfg.tau_frac, cfg.steps_per_round), cfg.keep_rewind_points,
                                      cfg.steps_per_round) if k == 0 else RewindPoints({})
    return TrainingJob(k, k, masks, start, source, cfg.steps_per_round, points)


# -- masks ----------------------------------------------------------------------------------------
def next_masks(run: Run, k: int) -> list[Tensor]:
    """Round k's masks, checked the same on every rank."""
    masks = _masks(run, k)
    run.engine.dist.check_same(mask_digest(masks), f"round {k}'s masks")
    return masks


def _masks(run: Run, k: int) -> list[Tensor]:
    """All ones for round 0, else pruned from round k-1's masks (by the schedule on the scorer's
    scores of round k-1's weights, or at random for the random-prune baseline) and stored."""
    targets, store = run.net.targets, run.store
    if k == 0:
        return all_kept(targets)
    rel = f"{round_dir(k)}/masks.safetensors"
    if store.has(rel):
        try:
            stored = checked_masks(store, rel, targets)
            return [stored[t.name] for t in targets]
        except (CheckpointError, KeyError):
            pass  # an unfinished round's masks are recomputed, never trusted when damaged
    prev_masks = round_masks(store, k - 1, targets) if k > 1 else None
    old = [prev_masks[t.name].bool() for t in targets] if prev_masks else all_kept(targets)
    prune = random_pruned if run.engine.config.baseline == "random-prune" else scored_pruned
    masks = [m.bool().cpu() for m in flatten(prune(run, k, old))]
    store.write_tensors(rel, by_name(targets, masks))
    return masks


def scored_pruned(run: Run, k: int, old: list[Tensor]) -> Grouped:
    """The schedule's masks from the scorer's scores of round k-1's trained weights under ``old``."""
    engine, cfg, targets, network = run.engine, run.engine.config, run.net.targets, run.net.network
    weights = f"{round_dir(k - 1)}/weights.safetensors"
    run.net.load(old, run.store.read_tensors(weights), source=str(run.store.path / weights),
                 advice=redo_advice(run.store, weights))
    gen = torch.Generator(device=engine.device).manual_seed(hash_seed(cfg.seed, "score", k))
    ctx = _Context(network, gen, lambda: engine.spec.loss(network, run.batches.batch(k - 1, 0), gen))
    scores = engine.scorer.score(targets, ctx)
    check_scores(scores, targets, component("scorer", cfg.scorer, engine.registry))
    new = engine.schedule.prune(group_tensors(targets, scores),
                                group_tensors(targets, [m.to(engine.device) for m in old]))
    check_masks(engine.schedule, new, group_tensors(targets, old), targets,
                component("schedule", cfg.schedule, engine.registry))
    return new


def random_pruned(run: Run, k: int, old: list[Tensor]) -> Grouped:
    """The random-prune baseline: the ticket's round-k count per tensor, random positions inside ``old``."""
    engine, cfg, targets = run.engine, run.engine.config, run.net.targets
    reference = engine.dist.on_main(lambda: ticket_masks(k, cfg, engine.asked, engine.spec.config,
                                                         targets, default_run_dir))
    rand_gen = torch.Generator().manual_seed(hash_seed(cfg.seed, "random-prune", k))
    return prune_tensorwise_like(group_tensors(targets, reference), group_tensors(targets, old), rand_gen)


@dataclass
class _Context:
    """Score context handed to scorers."""

    network: nn.Module
    generator: torch.Generator
    _loss: Any

    def loss_on_batch(self) -> Tensor:
        return self._loss()


# -- start weights --------------------------------------------------------------------------------
def start_weights(run: Run, k: int) -> tuple[dict[str, Tensor], str]:
    """The weights round k starts from (theta_0 for round 0, else the rewind point) and the file they
    come from, named in any error about them."""
    engine, cfg, store = run.engine, run.engine.config, run.store
    init = str(engine.run_dir / "init.safetensors")
    if k == 0:
        return run.theta_0, init
    if cfg.baseline == "random-reinit":
        rel = "reinit.safetensors"
        if not store.has(rel):
            torch.manual_seed(hash_seed(cfg.seed, "reinit"))
            store.write_tensors(rel, plain_state_dict(engine.spec.build()))
    elif cfg.rewind == "init":
        return run.theta_0, init
    elif cfg.rewind == "none":
        rel = f"{round_dir(k - 1)}/weights.safetensors"
    else:
        rel = THETA_TAU
        if not store.has(rel):
            raise CheckpointError(f"{engine.run_dir}/{THETA_TAU} (theta_tau) is missing: start over with --fresh")
    return store.read_tensors(rel), str(engine.run_dir / rel)


# -- training -------------------------------------------------------------------------------------
@dataclass
class Training:
    """One training's moving parts: optimizer, EMA and noise generator, and the step it starts from."""

    optimizer: torch.optim.Optimizer
    ema: EMA | None
    generator: torch.Generator
    start: int = 0


def train(run: Run, job: TrainingJob) -> dict[str, Any]:
    """Train ``job.masks`` from ``job.start`` (or from the job's checkpoint) and save the round; its record.

    Optimizer, EMA, warm-up, precision, compile and CUDA graphs are the run's; seeds and data order are
    those of round ``job.seed_round``; everything is written to the run's store as folder ``job.index``.
    """
    engine, cfg, network = run.engine, run.engine.config, run.net.network
    t = begin(run, job)
    forward, compiling = engine.forward_network(network)
    engine.hooks.ticketforge_round_start(run=run.state, round_index=job.index, sparsity=sparsity_of(job.masks),
                                         steps=job.steps, start_step=t.start, compiling=compiling)
    watch = _Watch(run, job, t, compiling)
    # Ctrl-C and SIGTERM finish the step in flight and checkpoint it (one process only: under
    # torchrun the checkpoint gathers every rank, which the ranks' signals would reach at different
    # steps); the command line then says what was kept and how to resume (cli/failures.py).
    boundary = StepBoundary(enabled=engine.dist.world_size == 1)
    try:
        with boundary:
            t0 = time.perf_counter()
            stepper = make_stepper(engine.spec, network, t.optimizer, t.ema, t.generator, run.batches.device, t.start,
                                   lr=cfg.lr, warmup_steps=cfg.warmup_steps, grad_clip=cfg.grad_clip,
                                   precision=engine.precision, capture=engine.capture, forward_network=forward)
            summary = train_round(stepper, engine.dist.shard(run.batches), round_index=job.seed_round,
                                  start_step=t.start, steps=job.steps, log_every=cfg.log_every,
                                  checkpoint_every=cfg.checkpoint_every, on_log=watch.on_log,
                                  on_checkpoint=watch.on_checkpoint, on_step=watch.on_step,
                                  reduce=engine.dist.reduce_window, boundary=boundary)
            seconds = time.perf_counter() - t0
            record = save_round(run, job, t, {**summary, "steps": job.steps, "seconds": seconds,
                                              "steps_per_s": (job.steps - t.start) / max(seconds, 1e-9),
                                              "world_size": engine.dist.world_size,
                                              "threads": torch.get_num_threads()})
            watch.finished = True
            engine.hooks.ticketforge_round_end(run=run.state, round_index=job.index, record=record)
    except KeyboardInterrupt as exc:
        attach(exc, watch.interrupted(boundary))
        raise
    return record


def begin(run: Run, job: TrainingJob) -> Training:
    """The job's masks and a fresh optimizer, EMA and generators at the start weights, or the state of the
    job's checkpoint (a damaged or foreign one costs the round's progress, never the run)."""
    t = fresh(run, job)
    t.start = resume(run, job, t)
    if t.start == 0 and run.store.has(CHECKPOINT):  # a checkpoint refused part-way may have left some of its state
        t = fresh(run, job)
        job.points.restore(None)
    if t.start == 0:
        job.points.at_step(0, run.net.network)  # a point at step 0 (tau_frac 0): the start weights themselves
    return t


def fresh(run: Run, job: TrainingJob) -> Training:
    """The masks applied and the start weights loaded, a new optimizer and EMA, round ``job.seed_round``'s seeds."""
    engine, cfg, k = run.engine, run.engine.config, job.seed_round
    network = run.net.load([m.to(engine.device) for m in job.masks], job.start, source=job.start_source)
    optimizer = make_optimizer(network, cfg.lr, cfg.weight_decay, engine.device, capturable=engine.capture,
                               beta2=cfg.adam_beta2)
    ema = EMA(network, cfg.ema_decay) if cfg.ema_decay else None
    gen = torch.Generator(device=engine.device).manual_seed(engine.dist.seed(hash_seed(cfg.seed, "train", k)))
    torch.manual_seed(engine.dist.seed(hash_seed(cfg.seed, "dropout", k)))
    return Training(optimizer, ema, gen)


class _Watch:
    """What one training reports as it goes (progress, the compile time, log lines, checkpoints), and
    where an interruption leaves it."""

    def __init__(self, run: Run, job: TrainingJob, t: Training, compiling: bool):
        engine, i = run.engine, job.index
        self.run, self.job, self.t, self.clock = run, job, t, engine.progress_clock
        # Progress goes by the clock: one time read per step, no wait for the GPU.
        self.ticker = Task(lambda e: e.kind == "update" and engine.hooks.ticketforge_train_progress(
            run=run.state, round_index=i, step=e.done, steps=job.steps, steps_per_s=e.rate),
            f"round {i}", job.steps, done=t.start, clock=self.clock)
        # The steps that compile: the first (and with the whole-step graph, its eager warm-up and capture).
        self.compiled_at = min(t.start + (WARMUP_STEPS + 1 if engine.capture else 1), job.steps) \
            if compiling else None
        self.saved: int | None = t.start if t.start else None  # the step the checkpoint holds
        self.finished = False
        self.t_start = self.clock()

    def on_step(self, done: int) -> None:
        self.job.points.at_step(done, self.run.net.network)
        self.ticker.set(done)
        if done == self.compiled_at:
            self.run.engine.hooks.ticketforge_compiled(run=self.run.state, round_index=self.job.index,
                                                       steps=done - self.t.start, seconds=self.clock() - self.t_start)

    def on_log(self, done: int, metrics: dict[str, float]) -> None:
        self.run.store.append_log({"round": self.job.index, "step": done, **metrics})
        self.run.engine.hooks.ticketforge_train_step(run=self.run.state, round_index=self.job.index, step=done,
                                                     metrics=metrics)

    def on_checkpoint(self, done: int) -> None:
        checkpoint(self.run, self.job, self.t, done)
        self.saved = done

    def interrupted(self, boundary: StepBoundary) -> InterruptedAt:
        extra, i = self.job.record_extra, self.job.index
        what = f"branch {extra['branch']['name']}" if "branch" in extra else f"round {i}"
        return InterruptedAt(str(self.run.store.path), what, self.saved, self.job.steps,
                             now=boundary.held or self.saved == self.ticker.done, finished=self.finished)


# -- checkpoints ----------------------------------------------------------------------------------
def checkpoint(run: Run, job: TrainingJob, t: Training, step: int) -> None:
    """The training's state after ``step`` steps, for :func:`resume`."""
    engine, network = run.engine, run.net.network
    cuda_rng = torch.cuda.get_rng_state(engine.device) if engine.device.type == "cuda" else None
    run.store.write_checkpoint(CHECKPOINT, {
        "round": job.index, "step": step,
        "weights": plain_state_dict(network),
        "optimizer": t.optimizer.state_dict(),
        "ema": t.ema.state_dict() if t.ema else None,
        "generator": t.generator.get_state(),
        "cpu_rng": torch.get_rng_state(),
        "cuda_rng": cuda_rng,
        "rewind_points": job.points.state(),  # written when the round finishes
        **engine.dist.rng_checkpoint(t.generator),  # every rank's streams, under torchrun
    })


def resume(run: Run, job: TrainingJob, t: Training) -> int:
    """Restore the job's last checkpoint into ``t`` if there is one; returns the step to start from."""
    engine, network, store = run.engine, run.net.network, run.store
    if not store.has(CHECKPOINT):
        return 0
    try:
        ckpt = store.read_checkpoint(CHECKPOINT)
        if ckpt["round"] != job.index:
            return 0
        load_plain_state_dict(network, ckpt["weights"], source=CHECKPOINT)
        t.optimizer.load_state_dict(ckpt["optimizer"])
        if t.ema is not None and ckpt["ema"] is not None:
            t.ema.load_state_dict(ckpt["ema"])
        t.generator.set_state(ckpt["generator"])
        torch.set_rng_state(ckpt["cpu_rng"])
        if ckpt["cuda_rng"] is not None and engine.device.type == "cuda":
            torch.cuda.set_rng_state(ckpt["cuda_rng"], engine.device)
        engine.dist.rng_restore(ckpt, t.generator,
                                hash_seed(engine.config.seed, "train", job.seed_round, "resume", int(ckpt["step"])))
        job.points.restore(ckpt.get("rewind_points"))
        return int(ckpt["step"])
    except (CheckpointError, KeyError, ValueError, RuntimeError):
        # A damaged checkpoint costs the round's progress, never the run.
        return 0


# -- saving ---------------------------------------------------------------------------------------
def save_round(run: Run, job: TrainingJob, t: Training, metrics: dict[str, Any]) -> dict[str, Any]:
    """Masks, weights, EMA weights, artifacts, rewind points, then the record (a round's last file)."""
    engine, store, network, rdir = run.engine, run.store, run.net.network, round_dir(job.index)
    targets, masks, ema = run.net.targets, job.masks, t.ema
    if not store.has(f"{rdir}/masks.safetensors"):
        store.write_tensors(f"{rdir}/masks.safetensors", by_name(targets, masks))
    store.write_tensors(f"{rdir}/weights.safetensors", plain_state_dict(network))
    if ema is not None:
        with ema.swapped():
            store.write_tensors(f"{rdir}/ema.safetensors", plain_state_dict(network))
    sparsity = sparsity_of(masks)
    kept = sum(int(m.sum()) for m in masks)
    metrics = {**metrics, "nonzero_params": kept, "prunable_params": sum(m.numel() for m in masks),
               "total_params": sum(p.numel() for p in network.parameters())}
    round_artifacts: Callable[..., Any] | None = getattr(engine.spec, "round_artifacts", None)  # see docs/hooks.md
    if engine.config.artifacts and round_artifacts is not None:
        def artifacts() -> Any:
            gen = torch.Generator(device=engine.device).manual_seed(artifacts_seed(engine.config.seed))
            network.eval()
            with (ema.swapped() if ema is not None else nullcontext()), torch.no_grad():
                return round_artifacts(network, store.path / rdir, gen,
                                       **artifact_caption(engine.spec, job.index, sparsity, job.record_extra))
        written = engine.dist.on_main(artifacts)  # drawn and written once, by rank 0
        for path in written or []:
            store.write_file(str(Path(path).relative_to(store.path)))
    for rel, weights in job.points.files().items():
        # promoted now, before the record: they belong to the trajectory that finished the round
        store.write_tensors(rel, weights, None if rel == THETA_TAU else
                            {"format": "ticketforge-weights/1", "round_0_step": str(job.points.wanted[rel])})
    record = {"round": job.index, "sparsity": sparsity, "mask_sha256": mask_digest(masks),
              "groups": group_summary(run.net.groups, targets, masks), "metrics": metrics, **job.record_extra}
    store.write_json(f"{rdir}/record.json", record)
    store.forget(CHECKPOINT)
    return record

"""The lottery-ticket engine: Algorithm 1 of Jiang et al. on torch.nn.utils.prune.

Round 0 trains the dense network from theta_0 and stores theta_tau after ``tau`` steps. Each later
round scores the previous round's trained weights, lets the schedule choose new masks, rewinds the
surviving weights (to theta_tau by default), resets optimizer and EMA, and trains again. Everything
a round produces is written to the run store before the next one starts, so the same command
resumes after any interruption.
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, cast

import torch
from torch import Tensor, nn

from ..errors import CheckpointError, ConfigError, TicketforgeWarning, TrainingDiverged
from ..progress import ProgressLike, Task
from ..protocols import ModelSpec, ModuleGroup, PruneTarget, Schedule, Scorer
from ..pruning import apply_masks, sparsity_of
from ..pruning.select import prune_tensorwise_like
from ..pruning.state import load_plain_state_dict, plain_state_dict
from ..registry import Registry, get_registry
from ..store import RunStore
from ..store.read_checks import checked_masks, redo_advice, round_masks
from ..store.run_store import round_dir
from . import distributed
from .artifacts import artifact_caption, artifacts_seed
from .config import EXTENT_FIELDS, ResolvedConfig, RunConfig, config_differences
from .contract import check_images, check_masks, check_scores, component
from .data import BatchSource, cache_path, hash_seed, materialize
from .ema import EMA
from .groups import flatten, group_summary, group_tensors, mask_digest, module_groups, prune_targets
from .interrupts import InterruptedAt, StepBoundary, attach
from .rewind import THETA_TAU, RewindPoints, point_step
from .run_folder import default_run_dir
from .settings import component_settings
from .step_graph import WARMUP_STEPS
from .threads import threads_applied
from .ticket_run import ticket_masks
from .train import RoundSetup, make_optimizer, train_round

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
class TrainingJob:
    """One training of fixed masks: round ``index`` of a run, or a branch (its folder 0, seeds of a round).

    Attributes:
        seed_round: the round whose data order and noise seeds are used.
        index: the round folder (``rounds/NNNN``) and record index written in ``store``.
        store: where the checkpoint, log, weights and record go.
        masks: one bool mask per prune target, in target order.
        start: the start weights (plain layout) and ``start_source``, a name for error messages.
        steps: training steps.
        points: the rewind points to take on the way (round 0 of a run only).
        record_extra: keys added to the record (a branch's description).
    """

    seed_round: int
    index: int
    store: Any
    masks: list[Tensor]
    start: dict[str, Tensor]
    start_source: str
    steps: int
    points: RewindPoints
    record_extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Context:
    """Score context handed to scorers."""

    network: nn.Module
    generator: torch.Generator
    _loss: Any

    def loss_on_batch(self) -> Tensor:
        return self._loss()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is visible: use --device cpu")
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        return "tf32" if device.type == "cuda" else "fp32"
    if precision == "tf32" and device.type == "cpu":
        return "fp32"
    return precision


def compile_options(device: torch.device, capture: bool, channels_last: bool = True) -> dict[str, Any]:
    """``torch.compile`` keyword arguments for the training network.

    CUDA graphs remove the launch overhead that bounds these U-Nets: our own over the whole step
    (step_graph.py), inside which torch.compile must not make its own, or torch.compile's over the
    network alone (under DDP); none on a CPU. On a GPU, inductor is also told to compute convolutions
    and the ops between them in channels-last layout: its heuristic declines that for a U-Net (some
    convolutions halve the channels), and cuDNN then transposes every convolution's input and output,
    a fifth of the compiled cifar10 step's GPU time (profiled on an H100; 33.5 -> 39.6 steps/s,
    docs/performance.md). Inputs, weights and gradients keep their layout.
    """
    if device.type == "cpu":
        return {}
    options: dict[str, Any] = {} if capture else {"triton.cudagraphs": True}  # the latter: mode="reduce-overhead"
    if channels_last:
        options["force_layout_optimization"] = True
    return {"options": options}


def cpu_compile_warning(device: torch.device, what: str = "the training step") -> str | None:
    """The one-line warning for compiling on a CPU (None elsewhere): it takes minutes before the first
    step and seldom pays off there, and the user is waiting without a word."""
    if device.type != "cpu":
        return None
    return (f"--compile on a CPU compiles {what} for minutes before it starts (a quarter of an hour and more "
            f"for the larger presets) and seldom makes it faster there: give the command without --compile "
            f"to start at once")


def set_matmul_precision(precision: str) -> None:
    """TF32 on for ``tf32`` (and ``bf16``, for the ops autocast leaves in float32), off for ``fp32``."""
    tf32 = precision in ("tf32", "bf16")
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    torch.backends.cudnn.allow_tf32 = tf32


def _component_name(obj: Any, kind: str = "component") -> str:
    """A config value for a component: its registered name, or its class and settings for an object.

    The settings (``settings()``, else the public attributes; see settings.py) go into the run's hash,
    so two differently configured objects of one class never share a run folder; an object whose
    settings cannot be written down is refused.
    """
    if isinstance(obj, str):
        return obj
    name = f"python:{type(obj).__module__}.{type(obj).__qualname__}"
    settings = component_settings(obj, kind)
    return name + (json.dumps(settings, separators=(",", ":"), sort_keys=True) if settings else "")


class Engine:
    """Runs the train-prune-rewind loop.

    Components may be given by name (resolved through the plugin registry) or as objects::

        Engine(RunConfig(steps_per_round=200), schedule=MySchedule()).run()

    Keyword arguments that are fields of :class:`RunConfig` override the config. :meth:`run` takes
    ``progress`` (``"rich"``, ``"log"``, ``"none"`` or a callable; see :mod:`ticketforge.progress`).
    """

    # The clock of progress updates and of the compile time (tests give their own).
    progress_clock: Callable[[], float] = staticmethod(time.monotonic)
    # The compiled training network, and the network it compiles (see _forward_network).
    _compiled: nn.Module | None = None
    _compiled_of: nn.Module | None = None

    def __init__(self, config: RunConfig | None = None, *, model: ModelSpec | str | None = None,
                 schedule: Schedule | str | None = None, scorer: Scorer | str | None = None,
                 registry: Registry | None = None, fresh: bool = False, **overrides: Any) -> None:
        config = config or RunConfig()
        names = {f.name for f in dataclasses.fields(config)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ConfigError(f"unknown run option {unknown[0]!r}")
        for key, obj in (("model", model), ("schedule", schedule), ("scorer", scorer)):
            if obj is not None:
                overrides[key] = _component_name(obj, key)
        asked = dataclasses.replace(config, **overrides)
        asked.check()
        self._asked = asked  # before the preset's defaults: what a command line would say
        self.registry = registry or get_registry()
        self.fresh = fresh
        self._objects: dict[str, Any] = {"model": model, "schedule": schedule, "scorer": scorer}
        if asked.model is None:  # no default in the core: the installed model plugin's
            asked = dataclasses.replace(asked, model=self.registry.only("models"))
        self.spec = self._model(asked)
        self.config: ResolvedConfig = self._checked_options(asked.resolve(self.spec.defaults))
        self.schedule = self._component("schedules", "schedule", self._schedule_options())
        self.scorer = self._component("scorers", "scorer", self.config.scorer_options)
        self.device = resolve_device(self.config.device)
        # Under torchrun: join the process group; a GPU becomes cuda:LOCAL_RANK (see distributed.py).
        self.dist = distributed.setup(self.device)
        self.device = self.dist.device
        self.dist.check_batch_size(self.config.batch_size)
        self.config = dataclasses.replace(self.config, world_size=self.dist.world_size)
        self.precision = resolve_precision(self.config.precision, self.device)
        self.run_dir = Path(self.config.out) if self.config.out else default_run_dir(self.config)
        self.store = self.dist.store(RunStore(self.run_dir))  # rank 0 reads and writes, the others get the results
        self.capture = self._resolve_capture()
        self.compile_options = compile_options(self.device, self.capture)
        warning = cpu_compile_warning(self.device) if self.config.compile and self.dist.is_main else None
        if warning:
            warnings.warn(warning, TicketforgeWarning, stacklevel=2)

    def _resolve_capture(self) -> bool:
        """Whether each round's step is captured as one CUDA graph (see ``RunConfig.cuda_graphs``)."""
        wanted = self.config.cuda_graphs
        if wanted and self.device.type != "cuda":
            raise ConfigError(f"--cuda-graphs needs a CUDA device, not {self.device}: drop the flag")
        if wanted and self.dist.world_size > 1:
            raise ConfigError("--cuda-graphs is for one process; under torchrun leave it off "
                              "(--compile then uses torch.compile's CUDA graphs for the network)")
        if wanted is None:
            wanted = self.config.compile
        return bool(wanted) and self.device.type == "cuda" and self.dist.world_size == 1

    @property
    def hooks(self) -> Any:
        """The lifecycle hooks: rank 0's alone under torchrun."""
        return self.dist.hooks(self.registry.hook)

    # -- components -------------------------------------------------------------------------------
    def _model(self, config: RunConfig) -> ModelSpec:
        obj = self._objects["model"]
        if obj is not None and not isinstance(obj, str):
            return obj
        options = dict(config.model_options)
        if config.preset is not None:
            options["preset"] = config.preset
        return self.registry.create("models", config.model, **options)

    def _checked_options(self, config: ResolvedConfig) -> ResolvedConfig:
        """``config`` with the options of its schedule, scorer and dataset checked against the options each
        declares (a one-line error otherwise) and in the form the hash takes (see ``Registry.options``).

        The model's options were checked when the model was made; they count in the hash as given."""
        changes: dict[str, Any] = {}
        for kind in ("schedule", "scorer", "dataset"):
            given = getattr(config, f"{kind}_options")
            if not given:
                continue
            if not isinstance(self._objects.get(kind) or "", str):
                raise ConfigError(f"--{kind}-option is for a {kind} given by name; this run's {kind} is a Python "
                                  f"object: give the object its settings instead")
            if kind == "dataset" and {"root", "download", "train"} & set(given):
                raise ConfigError("--dataset-option root, download and train are the run's own: give "
                                  "--data-root or --download instead")
            changes[f"{kind}_options"] = self.registry.options(f"{kind}s", getattr(config, kind), given)
        return dataclasses.replace(config, **changes)

    def _schedule_options(self) -> dict[str, Any]:
        """The named schedule's options: p and q (settings of their own) where it declares them, and the rest."""
        if not isinstance(self._objects["schedule"], (str, type(None))):
            return {}
        names = {o.name for o in self.registry.get("schedules", self.config.schedule).options}
        return {**{k: getattr(self.config, k) for k in ("p", "q") if k in names}, **self.config.schedule_options}

    def _component(self, kind: str, key: str, options: dict[str, Any]) -> Any:
        obj = self._objects[key]
        if obj is not None and not isinstance(obj, str):
            return obj
        return self.registry.create(kind, getattr(self.config, key), **options)

    # -- the run ----------------------------------------------------------------------------------
    def run(self, progress: ProgressLike = None) -> list[dict[str, Any]]:
        """Run (or resume) every round; returns the round records.

        ``progress``: ``"rich"`` (bars and the round table on stderr), ``"log"`` (plain lines),
        ``"none"``, or a callable given each :class:`~ticketforge.progress.ProgressEvent`; None: the
        display of a surrounding :func:`ticketforge.progress.using` block, else nothing.
        """
        from ..builtins.reporter import reporting

        with reporting(self.registry, progress):
            return self._run()

    def _run(self) -> list[dict[str, Any]]:
        cfg = self.config
        torch.manual_seed(cfg.seed if cfg.init_seed is None else cfg.init_seed)  # theta_0
        network = self.spec.build()
        groups = module_groups(self.spec, network)
        if not groups:
            raise ConfigError(f"model {cfg.model!r} has no prunable modules")
        self.schedule.validate([g.name for g in groups])  # before any training
        set_matmul_precision(self.precision)
        with self.dist.run_lock(self.run_dir, fresh=self.fresh), threads_applied(self.config.threads, self.device):
            try:
                return self._run_locked(network, groups)
            except TrainingDiverged as exc:
                raise self._diverged(exc) from None

    def _diverged(self, exc: TrainingDiverged) -> TrainingDiverged:
        """The divergence with advice that works: the learning rate is part of the run's identity, so a
        lower one is a new run (a new folder by its hash; under --out another folder, or --fresh)."""
        detail = exc.detail
        lower = f"--lr {self.config.lr / 2:g}" if self.config.lr else "a lower --lr"
        if self.config.out:
            advice = (f"to train with a lower learning rate, give the same command with {lower} and another "
                      f"--out (or with --fresh to discard this run)")
        else:
            advice = f"to train with a lower learning rate, give the same command with {lower} (a new run folder)"
        return TrainingDiverged(detail, advice)

    def _run_locked(self, network: nn.Module, groups: list[ModuleGroup]) -> list[dict[str, Any]]:
        cfg, store = self.config, self.store
        store.clean()
        resolved = {**dataclasses.asdict(cfg), "model_config": self.spec.config}
        stored = store.read_config() if store.exists() else None
        if stored is not None:
            diff = config_differences(stored, resolved)
            if diff:
                raise ConfigError(f"{self.run_dir} holds a run with another config ({'; '.join(diff[:3])}): "
                                  f"use another --out, or --fresh to overwrite it")
        network.to(self.device)
        targets = prune_targets(groups)
        state = RunState(self.run_dir, resolved, self.spec, [g.name for g in groups], self.device, network)
        finished = store.finished_rounds()
        state.rounds = [store.round_record(k) for k in finished]  # before run_start: hooks see a resume
        self.hooks.ticketforge_run_start(run=state)
        batches = self._batches()
        # The config is written once the data has loaded: a wrong --data-root leaves a folder with nothing
        # in it, which the corrected command starts in, instead of a run of the wrong path refusing it.
        if stored is None:
            store.write_config(resolved)
        elif any(stored.get(k) != resolved[k] for k in EXTENT_FIELDS):
            store.write_config({**stored, **{k: resolved[k] for k in EXTENT_FIELDS}})  # goes further (or less far)
        theta_0 = self._initial_weights(network)
        k = 0
        while True:
            if k in finished:
                record = store.round_record(k)
            else:
                record = self._train_round(k, network, groups, targets, batches, theta_0, state)
                state.rounds.append(record)
            if k >= cfg.rounds or (cfg.target_sparsity is not None and record["sparsity"] >= cfg.target_sparsity):
                break
            k += 1
        self.hooks.ticketforge_run_end(run=state, rounds=state.rounds)
        return state.rounds

    def _batches(self) -> BatchSource:
        cfg = self.config
        with self.dist.main_first():  # one process downloads and fills the cache, the others read it
            dataset = self.registry.create("datasets", cfg.dataset, root=cfg.data_root, download=cfg.download,
                                           train=True, **cfg.dataset_options)
            images = materialize(dataset, cache_path(cfg.dataset, cfg.data_root, dataset, cfg.dataset_options))
        check_images(self.spec, images, cfg.dataset)
        return BatchSource(images, cfg.batch_size, cfg.seed, self.device)

    def _initial_weights(self, network: nn.Module) -> dict[str, Tensor]:
        """theta_0: built from the seed once, then always read back from the run."""
        if self.store.has("init.safetensors"):
            theta_0 = self.store.read_tensors("init.safetensors")
        else:
            theta_0 = plain_state_dict(network)
            self.store.write_tensors("init.safetensors", theta_0, {"format": "ticketforge-weights/1"})
        return theta_0

    # -- one round --------------------------------------------------------------------------------
    def _masks_for(self, k: int, network: nn.Module, targets: list[PruneTarget], batches: BatchSource) -> list[Tensor]:
        """Round k's masks: all ones for round 0, else the schedule applied to round k-1's weights."""
        rel = f"{round_dir(k)}/masks.safetensors"
        if k == 0:
            return [torch.ones_like(cast(Tensor, t.module.weight), dtype=torch.bool) for t in targets]
        if self.store.has(rel):
            try:
                stored = checked_masks(self.store, rel, targets)
                return [stored[t.name] for t in targets]
            except (CheckpointError, KeyError):
                pass  # an unfinished round's masks are recomputed, never trusted when damaged
        prev = f"{round_dir(k - 1)}"
        prev_masks = round_masks(self.store, k - 1, targets) if k > 1 else None
        old = [prev_masks[t.name].bool() for t in targets] if prev_masks else \
            [torch.ones_like(cast(Tensor, t.module.weight), dtype=torch.bool) for t in targets]
        if self.config.baseline == "random-prune":  # the ticket's round-k counts, random positions inside `old`
            reference = self.dist.on_main(lambda: ticket_masks(k, self.config, self._asked, self.spec.config,
                                                               targets, default_run_dir))
            rand_gen = torch.Generator().manual_seed(hash_seed(self.config.seed, "random-prune", k))
            new = prune_tensorwise_like(group_tensors(targets, reference), group_tensors(targets, old), rand_gen)
            masks = [m.bool().cpu() for m in flatten(new)]
            self.store.write_tensors(rel, {t.name: m for t, m in zip(targets, masks)})
            return masks
        apply_masks(targets, old)
        weights = f"{prev}/weights.safetensors"
        load_plain_state_dict(network, self.store.read_tensors(weights), source=str(self.store.path / weights),
                              advice=redo_advice(self.store, weights))
        gen = torch.Generator(device=self.device).manual_seed(hash_seed(self.config.seed, "score", k))
        ctx = _Context(network, gen, lambda: self.spec.loss(network, batches.batch(k - 1, 0), gen))
        scores = self.scorer.score(targets, ctx)
        check_scores(scores, targets, component("scorer", self.config.scorer, self.registry))
        new = self.schedule.prune(group_tensors(targets, scores), group_tensors(targets, [m.to(self.device) for m in old]))
        check_masks(self.schedule, new, group_tensors(targets, old), targets, component("schedule", self.config.schedule, self.registry))
        masks = [m.bool().cpu() for m in flatten(new)]
        self.store.write_tensors(rel, {t.name: m for t, m in zip(targets, masks)})
        return masks

    def _start_weights(self, k: int, theta_0: dict[str, Tensor]) -> tuple[dict[str, Tensor], str]:
        """The weights round k starts from (theta_0 for round 0, else the rewind point) and the file they
        come from, named in any error about them."""
        cfg = self.config
        init = str(self.run_dir / "init.safetensors")
        if k == 0:
            return theta_0, init
        if cfg.baseline == "random-reinit":
            rel = "reinit.safetensors"
            if not self.store.has(rel):
                torch.manual_seed(hash_seed(cfg.seed, "reinit"))
                self.store.write_tensors(rel, plain_state_dict(self.spec.build()))
        elif cfg.rewind == "init":
            return theta_0, init
        elif cfg.rewind == "none":
            rel = f"{round_dir(k - 1)}/weights.safetensors"
        else:
            rel = THETA_TAU
            if not self.store.has(rel):
                raise CheckpointError(f"{self.run_dir}/{THETA_TAU} (theta_tau) is missing: start over with --fresh")
        return self.store.read_tensors(rel), str(self.run_dir / rel)

    def _train_round(self, k: int, network: nn.Module, groups: list[ModuleGroup], targets: list[PruneTarget],
                     batches: BatchSource, theta_0: dict[str, Tensor], state: RunState) -> dict[str, Any]:
        cfg = self.config
        masks = self._masks_for(k, network, targets, batches)
        self.dist.check_same(mask_digest(masks), f"round {k}'s masks")
        points = RewindPoints.for_round_0(point_step(cfg.tau_frac, cfg.steps_per_round), cfg.keep_rewind_points,
                                          cfg.steps_per_round) if k == 0 else RewindPoints({})
        start, source = self._start_weights(k, theta_0)
        job = TrainingJob(k, k, self.store, masks, start, source, cfg.steps_per_round, points)
        return self._train_masked(job, network, groups, targets, batches, state)

    def _train_masked(self, job: "TrainingJob", network: nn.Module, groups: list[ModuleGroup],
                      targets: list[PruneTarget], batches: BatchSource, state: RunState) -> dict[str, Any]:
        """Train ``job.masks`` from ``job.start`` once: a round of the run, or a branch of one (branch.py).

        Optimizer, EMA, warm-up, precision, compile and CUDA graphs are the run's; seeds and data order are
        those of round ``job.seed_round``; everything is written to ``job.store`` as folder ``job.index``.
        """
        cfg, store, k, i = self.config, job.store, job.seed_round, job.index
        lr = cfg.lr
        masks = job.masks
        apply_masks(targets, [m.to(self.device) for m in masks])
        sparsity = sparsity_of(masks)
        points = job.points

        def from_the_start() -> tuple[torch.optim.Optimizer, EMA | None, torch.Generator]:
            load_plain_state_dict(network, job.start, source=job.start_source)
            optimizer = make_optimizer(network, lr, cfg.weight_decay, self.device, capturable=self.capture)
            ema = EMA(network, cfg.ema_decay) if cfg.ema_decay else None
            gen = torch.Generator(device=self.device).manual_seed(self.dist.seed(hash_seed(cfg.seed, "train", k)))
            torch.manual_seed(self.dist.seed(hash_seed(cfg.seed, "dropout", k)))
            return optimizer, ema, gen

        optimizer, ema, gen = from_the_start()
        start = self._resume(k, network, optimizer, ema, gen, store=store, index=i, points=points)
        if start == 0 and store.has(CHECKPOINT):  # a checkpoint refused part-way may have left some of its state
            optimizer, ema, gen = from_the_start()
            points.restore(None)
        if start == 0:
            points.at_step(0, network)  # a point at step 0 (tau_frac 0): the start weights themselves
        setup = RoundSetup(k, job.steps, cfg.lr, cfg.warmup_steps, cfg.grad_clip,
                           cfg.log_every, cfg.checkpoint_every, self.precision, capture=self.capture)
        forward, compiling = self._forward_network(network)
        self.hooks.ticketforge_round_start(run=state, round_index=i, sparsity=sparsity, steps=job.steps,
                                           start_step=start, compiling=compiling)
        clock = self.progress_clock
        # Progress goes by the clock: one time read per step, no wait for the GPU.
        ticker = Task(lambda e: e.kind == "update" and self.hooks.ticketforge_train_progress(
            run=state, round_index=i, step=e.done, steps=job.steps, steps_per_s=e.rate),
            f"round {i}", job.steps, done=start, clock=clock)
        # The steps that compile: the first (and with the whole-step graph, its eager warm-up and capture).
        compiled_at = min(start + (WARMUP_STEPS + 1 if self.capture else 1), job.steps) if compiling else None
        saved = {"step": start if start else None}
        t_start = clock()

        def on_step(done: int) -> None:
            points.at_step(done, network)
            ticker.set(done)
            if done == compiled_at:
                self.hooks.ticketforge_compiled(run=state, round_index=i, steps=done - start,
                                                seconds=clock() - t_start)

        def on_log(done: int, metrics: dict[str, float]) -> None:
            store.append_log({"round": i, "step": done, **metrics})
            self.hooks.ticketforge_train_step(run=state, round_index=i, step=done, metrics=metrics)

        def on_checkpoint(done: int) -> None:
            self._checkpoint(i, done, network, optimizer, ema, gen, store=store, points=points)
            saved["step"] = done

        # Ctrl-C and SIGTERM finish the step in flight and checkpoint it (one process only: under
        # torchrun the checkpoint gathers every rank, which the ranks' signals would reach at different
        # steps); the command line then says what was kept and how to resume (cli/failures.py).
        boundary = StepBoundary(enabled=self.dist.world_size == 1)
        try:
            with boundary:
                t0 = time.perf_counter()
                summary = train_round(setup, self.spec, network, optimizer, ema, self.dist.shard(batches), gen,
                                      start, on_log=on_log, on_checkpoint=on_checkpoint, on_step=on_step,
                                      forward_network=forward, reduce=self.dist.reduce_window, boundary=boundary)
                seconds = time.perf_counter() - t0
                record = self._finish_round(i, network, groups, targets, masks, ema, sparsity,
                                            {**summary, "steps": job.steps, "seconds": seconds,
                                             "steps_per_s": (job.steps - start) / max(seconds, 1e-9),
                                             "world_size": self.dist.world_size,
                                             "threads": torch.get_num_threads()},
                                            store=store, points=points, extra=job.record_extra)
                saved["finished"] = True
                self.hooks.ticketforge_round_end(run=state, round_index=i, record=record)
        except KeyboardInterrupt as exc:
            what = f"branch {job.record_extra['branch']['name']}" if "branch" in job.record_extra else f"round {i}"
            attach(exc, InterruptedAt(str(store.path), what, saved["step"], job.steps,
                                      now=boundary.held or saved["step"] == ticker.done,
                                      finished=bool(saved.get("finished"))))
            raise
        return record

    def _forward_network(self, network: nn.Module) -> tuple[nn.Module, bool]:
        """The network the training step calls: under DDP (torchrun) and compiled, once per run (masks change
        in place); and whether it is compiled anew (its first call compiles)."""
        forward = self.dist.wrap(network)  # DistributedDataParallel; the network itself on one process
        if not self.config.compile:
            return forward, False
        if self._compiled is None or self._compiled_of is not forward:
            self._compiled = cast(nn.Module, torch.compile(forward, **self.compile_options))
            self._compiled_of = forward
            return self._compiled, True
        return self._compiled, False

    def _checkpoint(self, k: int, step: int, network: nn.Module, optimizer: torch.optim.Optimizer,
                    ema: EMA | None, gen: torch.Generator, *, store: Any = None,
                    points: RewindPoints | None = None) -> None:
        cuda_rng = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        (store or self.store).write_checkpoint(CHECKPOINT, {
            "round": k, "step": step,
            "weights": plain_state_dict(network),
            "optimizer": optimizer.state_dict(),
            "ema": ema.state_dict() if ema else None,
            "generator": gen.get_state(),
            "cpu_rng": torch.get_rng_state(),
            "cuda_rng": cuda_rng,
            "rewind_points": points.state() if points is not None else {},  # written when the round finishes
            **self.dist.rng_checkpoint(gen),  # every rank's streams, under torchrun
        })

    def _resume(self, k: int, network: nn.Module, optimizer: torch.optim.Optimizer, ema: EMA | None,
                gen: torch.Generator, *, store: Any = None, index: int | None = None,
                points: RewindPoints | None = None) -> int:
        """Restore round k's last checkpoint if there is one; returns the step to start from.

        ``store``/``index``: where the checkpoint lives and the folder index it was written for (a
        branch trains with round k's seeds into folder 0 of its own store).
        """
        store = store or self.store
        if not store.has(CHECKPOINT):
            return 0
        try:
            ckpt = store.read_checkpoint(CHECKPOINT)
            if ckpt["round"] != (k if index is None else index):
                return 0
            load_plain_state_dict(network, ckpt["weights"], source=CHECKPOINT)
            optimizer.load_state_dict(ckpt["optimizer"])
            if ema is not None and ckpt["ema"] is not None:
                ema.load_state_dict(ckpt["ema"])
            gen.set_state(ckpt["generator"])
            torch.set_rng_state(ckpt["cpu_rng"])
            if ckpt["cuda_rng"] is not None and self.device.type == "cuda":
                torch.cuda.set_rng_state(ckpt["cuda_rng"], self.device)
            self.dist.rng_restore(ckpt, gen, hash_seed(self.config.seed, "train", k, "resume", int(ckpt["step"])))
            if points is not None:
                points.restore(ckpt.get("rewind_points"))
            return int(ckpt["step"])
        except (CheckpointError, KeyError, ValueError, RuntimeError):
            # A damaged checkpoint costs the round's progress, never the run.
            return 0

    def _finish_round(self, k: int, network: nn.Module, groups: list[ModuleGroup], targets: list[PruneTarget],
                      masks: list[Tensor], ema: EMA | None, sparsity: float, metrics: dict[str, Any], *,
                      store: Any = None, points: RewindPoints | None = None,
                      extra: dict[str, Any] | None = None) -> dict[str, Any]:
        store, rdir = store or self.store, round_dir(k)
        if not store.has(f"{rdir}/masks.safetensors"):
            store.write_tensors(f"{rdir}/masks.safetensors", {t.name: m for t, m in zip(targets, masks)})
        store.write_tensors(f"{rdir}/weights.safetensors", plain_state_dict(network))
        if ema is not None:
            with ema.swapped():
                store.write_tensors(f"{rdir}/ema.safetensors", plain_state_dict(network))
        kept = sum(int(m.sum()) for m in masks)
        metrics = {**metrics, "nonzero_params": kept, "prunable_params": sum(m.numel() for m in masks),
                   "total_params": sum(p.numel() for p in network.parameters())}
        round_artifacts = getattr(self.spec, "round_artifacts", None)  # optional: see docs/hooks.md
        if self.config.artifacts and round_artifacts is not None:
            def artifacts() -> Any:
                gen = torch.Generator(device=self.device).manual_seed(artifacts_seed(self.config.seed))
                network.eval()
                with (ema.swapped() if ema is not None else nullcontext()), torch.no_grad():
                    return round_artifacts(network, store.path / rdir, gen,
                                                     **artifact_caption(self.spec, k, sparsity, extra))
            written = self.dist.on_main(artifacts)  # drawn and written once, by rank 0
            for path in written or []:
                store.write_file(str(Path(path).relative_to(store.path)))
        for rel, weights in (points.files() if points is not None else {}).items():
            # promoted now, before the record: they belong to the trajectory that finished the round
            assert points is not None
            store.write_tensors(rel, weights, None if rel == THETA_TAU else
                                {"format": "ticketforge-weights/1", "round_0_step": str(points.wanted[rel])})
        record = {"round": k, "sparsity": sparsity, "mask_sha256": mask_digest(masks),
                  "groups": group_summary(groups, targets, masks), "metrics": metrics, **(extra or {})}
        store.write_json(f"{rdir}/record.json", record)
        store.forget(CHECKPOINT)
        return record


"""The lottery-ticket engine: Algorithm 1 of Jiang et al. on torch.nn.utils.prune.

:class:`Engine` resolves a run (config, components, device, precision, run folder, processes);
the loop itself, round by round, is :mod:`ticketforge.engine.loop`.
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from pathlib import Path
from typing import Any, Callable, cast

import torch
from torch import nn

from ..config import ResolvedConfig, RunConfig
from ..errors import ConfigError, TicketforgeWarning, TrainingDiverged
from ..progress import ProgressLike
from ..protocols import ModelSpec, Schedule, Scorer
from ..pruning.targets import PrunableNetwork
from ..registry import Registry, get_registry
from ..store import RunStore
from ..threads import threads_applied
from . import distributed
from .contract import check_images
from .data import BatchSource, cache_path, materialize
from .loop import run_rounds
from .run_folder import default_run_dir
from .settings import component_settings


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
    # The compiled training network, and the network it compiles (see forward_network).
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
        self.asked = asked  # before the preset's defaults: what a command line would say
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
        net = PrunableNetwork.build(self.spec)
        if not net.groups:
            raise ConfigError(f"model {cfg.model!r} has no prunable modules")
        self.schedule.validate([g.name for g in net.groups])  # before any training
        set_matmul_precision(self.precision)
        with self.dist.run_lock(self.run_dir, fresh=self.fresh), threads_applied(self.config.threads, self.device):
            try:
                return run_rounds(self, net)
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

    def batches(self) -> BatchSource:
        """The run's training images, read (and cached) once, served in the run's seeded order."""
        cfg = self.config
        with self.dist.main_first():  # one process downloads and fills the cache, the others read it
            dataset = self.registry.create("datasets", cfg.dataset, root=cfg.data_root, download=cfg.download,
                                           train=True, **cfg.dataset_options)
            images = materialize(dataset, cache_path(cfg.dataset, cfg.data_root, dataset, cfg.dataset_options))
        check_images(self.spec, images, cfg.dataset)
        return BatchSource(images, cfg.batch_size, cfg.seed, self.device)

    def forward_network(self, network: nn.Module) -> tuple[nn.Module, bool]:
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

"""The run configuration: every setting of a run declared once, as one field of :class:`RunConfig`.

A setting is a dataclass field made by :func:`setting`: its annotation is its type, and its
:class:`Setting` metadata holds its help, its kind (whether it names the run), where the model presets
may set it and how the command line spells it. Everything else is derived from that one declaration:
the ``ticketforge run`` options (``cli/settings_options.py``), the TOML keys, ``Engine(**overrides)``,
the run hash (:func:`identity_of`), the presets' :class:`TrainingDefaults` and docs/cli.md.

A preset setting (``preset=...``) holds None until :meth:`RunConfig.resolve` fills it from the model
preset's defaults; the :class:`ResolvedConfig` it returns is frozen and has every one filled.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .errors import ConfigError
from .threads import THREADS_HELP, check_threads
from .typecheck import fits, problem

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, before it joined the standard library
    import tomli as tomllib

REWIND_MODES = ("tau", "init", "none")
BASELINES = ("none", "random-reinit", "random-prune")
PRECISIONS = ("auto", "fp32", "tf32", "bf16")
SEED_MIN, SEED_MAX = -(2 ** 63), 2 ** 64 - 1  # what torch.manual_seed takes

# What a setting is to a run (Setting.kind):
#   identity:  what the run computes; names its folder (the hash lists it when not its default).
#   extent:    how far the run goes; a finished run given more rounds (or a higher target sparsity)
#              continues in the same folder, with the masks an uninterrupted run gets.
#   runtime:   how the run is executed or shown (device, threads, paths, the process count), not what
#              it computes; a run may resume with another value.
#   recording: what the run records on the way (asking for more rewind points never renames a run).
SETTING_KINDS = ("identity", "extent", "runtime", "recording")

_FIXED: Any = object()  # Setting.preset of a setting no preset sets


@dataclass(frozen=True)
class Setting:
    """What a :class:`RunConfig` field is, besides its type and default (see :func:`setting`)."""

    help: str
    kind: str = "identity"
    preset: Any = _FIXED
    flags: tuple[str, ...] = ()
    cli: bool = True
    choices: tuple[str, ...] = ()
    path: bool = False
    shown_default: str | None = None
    metavar: str | None = None
    convert: Callable[[str], Any] | None = None
    unnamed: tuple[Any, ...] = ()
    resolved: bool = False
    named_at_fallback: bool = False

    def option_flags(self, name: str) -> list[str]:
        """The option's spellings for setting ``name``, the first the canonical one (``--steps-per-round``)."""
        return list(self.flags) or [f"--{name.replace('_', '-')}"]

    @property
    def names_run(self) -> bool:
        return self.kind == "identity"

    @property
    def from_preset(self) -> bool:
        return self.preset is not _FIXED

    @property
    def filled(self) -> bool:
        """None until the config is resolved (a preset setting, or ``resolved``): its type has no None."""
        return self.resolved or self.from_preset


_PLAIN = Setting("", cli=False)


def setting(default: Any = None, help: str = "", *, kind: str = "identity", preset: Any = _FIXED,
            flags: tuple[str, ...] = (), cli: bool = True, choices: tuple[str, ...] = (), path: bool = False,
            shown_default: str | None = None, metavar: str | None = None,
            convert: Callable[[str], Any] | None = None, unnamed: tuple[Any, ...] = (),
            resolved: bool = False, named_at_fallback: bool = False) -> Any:
    """A :class:`RunConfig` field: the one declaration of a setting.

    Args:
        default: the value when nobody gives one (a list or dict is copied for every config). A preset
            setting's is None: "the preset's".
        help: the ``--help`` text of its option (``[default: ...]`` is added from ``default``).
        kind: identity, extent, runtime or recording (see :data:`SETTING_KINDS`); only identity
            settings name the run, and only when they differ from ``default``.
        preset: makes it a preset setting: a model preset's :class:`TrainingDefaults` may set it, and
            this is its value when the preset does not.
        flags: the option's spellings (``--name`` with dashes when empty); ``cli=False``: no option.
        choices: the values it takes (the option and :meth:`RunConfig.check` refuse others).
        path: a path, read relative to the TOML file that gives it.
        shown_default: the ``[default: ...]`` text when the value itself does not say it.
        metavar, convert: the option's placeholder and the parser of its text (else the type's).
        unnamed: values that name the run as ``default`` does (kept out of the hash: the defaults of
            earlier versions, so that their run folders keep their names).
        resolved: None until the engine fills it (as a preset setting is filled from the preset), so that
            its type, that of a :class:`ResolvedConfig`'s value, has no None.
        named_at_fallback: a preset setting that names the run at every resolved value, ``preset``'s too
            (the first preset settings: run folders were hashed so). Without it a preset setting names
            the run only where its value differs from ``preset``, so adding one renames no run.
    """
    if kind not in SETTING_KINDS:
        raise ValueError(f"setting kind {kind!r} is not one of {', '.join(SETTING_KINDS)}")
    meta = {"setting": Setting(help, kind, preset, flags, cli, choices, path, shown_default, metavar, convert,
                               unnamed, resolved, named_at_fallback)}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=None if preset is not _FIXED else default, metadata=meta)


def _fractions(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"takes comma-separated fractions such as 0,0.05,0.2, not {text!r}") from None


def _threads(text: str) -> int | str:
    return check_threads(text.strip().lower(), "threads")

COMPONENT_OPTIONS = ("model", "schedule", "scorer", "dataset")
"""The components whose declared options a run sets (``--<kind>-option KEY=VALUE``, ``[<kind>-options]``)."""


def _options_of(kind: str, example: str) -> Any:
    return setting({}, f"Option of the {kind}, repeatable{example}; `ticketforge list {kind}s --options` shows "
                       f"each {kind}'s.", flags=(f"--{kind}-option",), metavar="KEY=VALUE")


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a lottery-ticket run. Percent values are written as in the paper."""

    # Run folders made while the core defaulted to ddpm-unet have no model in their hash: kept so.
    model: str = setting(None, "Model plugin name (see `ticketforge list models`).",
                         shown_default="the only installed model", unnamed=("ddpm-unet",), resolved=True)
    preset: str | None = setting(None, "Model preset, e.g. quickstart, mnist, cifar10.", shown_default="the model's")
    model_options: dict[str, Any] = _options_of("model", " (e.g. ch=64)")
    dataset: str = setting(help="Dataset name (see `ticketforge list datasets`).", preset=None)
    data_root: str | None = setting(None, "Folder (or file) the dataset is read from.", path=True)
    download: bool = setting(False, "Let torchvision download the dataset into --data-root.")
    dataset_options: dict[str, Any] = _options_of("dataset", " (e.g. size=32 for imagefolder)")
    schedule: str = setting("incremental", "Pruning schedule: uniform, incremental, global, ...")
    schedule_options: dict[str, Any] = _options_of("schedule", " (e.g. p=20)")
    # Long names first: after `torchrun`, argparse takes --p for its own --print-completion (torch >= 2.14).
    p: float = setting(20.0, "Percent of each group's remaining weights pruned per round (the paper's p; "
                             "the schedule option p).", flags=("--prune-percent", "--p"))
    q: float = setting(1.0, "Incremental schedule: group j prunes p + j*q percent (the paper's q; the schedule "
                            "option q).", flags=("--prune-increment", "--q"))
    scorer: str = setting("magnitude", "Weight scorer: magnitude, random, ...")
    scorer_options: dict[str, Any] = _options_of("scorer", "")
    rounds: int = setting(help="Number of prunings (round 0 is the dense run).", kind="extent", preset=25)
    steps_per_round: int = setting(help="Training steps per round.", preset=1000, named_at_fallback=True)
    target_sparsity: float | None = setting(None, "Stop once this fraction is pruned (e.g. 0.95).", kind="extent")
    rewind: str = setting("tau", "Rewind survivors to theta_tau (tau), theta_0 (init), or keep trained weights "
                                 "(none).", choices=REWIND_MODES)
    tau_frac: float = setting(0.05, "Rewind point as a fraction of the round's steps.")
    keep_rewind_points: list[float] = setting(
        [], "Also keep theta at these fractions of round 0's steps (e.g. 0,0.05,0.2), so that `ticketforge branch "
            "--rewind-fraction F` can start from them later. Not part of the run's identity; asked for once round "
            "0 is finished, they can no longer be recorded.", kind="recording", metavar="F,F,...",
        convert=_fractions, shown_default="")
    baseline: str = setting("none", "Iterative sanity baseline, a pruning trajectory of its own: random-reinit "
                                    "(rewinds every round to a second init) or random-prune (random positions at "
                                    "the ticket's per-tensor counts). The canonical controls of one ticket are "
                                    "`ticketforge branch`.", choices=BASELINES)
    ticket_run: str | None = setting(None, "random-prune: the run folder of its ticket (the same config with "
                                           "--baseline none), whose per-tensor counts each round copies.",
                                     kind="runtime", path=True, shown_default="the folder that config's hash names")
    seed: int = setting(0, "Seed of init, data order, noise and random choices.")
    init_seed: int | None = setting(None, "Seed of the initial weights alone, so that two runs share theta_0 but "
                                          "not their data order and noise (--seed 1 --init-seed 0).",
                                    shown_default="--seed")
    batch_size: int = setting(help="Training batch size.", preset=128, named_at_fallback=True)
    lr: float = setting(help="Peak learning rate.", preset=2e-4, named_at_fallback=True)
    warmup_steps: int = setting(help="Steps of linear learning-rate warm-up.", preset=0, named_at_fallback=True)
    grad_clip: float | None = setting(help="Clip the gradient norm to this; 0: no clipping.", preset=1.0,
                                      named_at_fallback=True)
    ema_decay: float | None = setting(help="Decay of the weights' EMA; 0: no EMA.", preset=0.9999,
                                      named_at_fallback=True)
    weight_decay: float = setting(help="Adam's weight decay.", preset=0.0, named_at_fallback=True)
    adam_beta2: float = setting(help="Adam's second-moment decay (beta2).", preset=0.999)
    precision: str = setting("auto", "fp32, tf32 or bf16 autocast; auto = tf32 on a GPU, fp32 on a CPU.",
                             choices=PRECISIONS)
    compile: bool = setting(False, "torch.compile the network (on a GPU: channels-last layout inside the compiled "
                                   "graph).")
    cuda_graphs: bool | None = setting(None, "Record each round's whole training step (loss, backward, clipping, "
                                             "Adam, EMA) as one CUDA graph after 3 eager steps and replay it. One "
                                             "GPU only.", kind="runtime", shown_default="on with --compile on one GPU")
    device: str = setting("auto", "auto, cpu, cuda or cuda:N.", kind="runtime")
    threads: int | str = setting("auto", THREADS_HELP + " Recorded, not part of the run's identity (a run may resume "
                                 "with another count).", kind="runtime", metavar="auto|N", convert=_threads)
    out: str | None = setting(None, "Run folder.", kind="runtime", path=True,
                              shown_default="runs/<model>-<schedule>[-<scorer>][-<baseline>]-<config hash>, scorer "
                                            "and baseline when not the default")
    runs_root: str = setting("runs", "Folder the default run folders are made in.", kind="runtime", path=True)
    log_every: int = setting(50, "Log (and check the loss) every N steps.", kind="runtime")
    checkpoint_every: int = setting(500, "Checkpoint the round every N steps.", kind="runtime")
    artifacts: bool = setting(True, "Write sample grids each round.", kind="runtime")
    # World_size (processes under torchrun) is recorded but kept out of the identity, so a run may resume on
    # another number of GPUs: the global batch and its data are the same, only float reduction order and the
    # per-rank noise streams differ. Threads likewise change the order of float sums only.
    world_size: int = setting(1, "Processes under torchrun: set by the engine from WORLD_SIZE.", kind="runtime",
                              cli=False)

    def __post_init__(self) -> None:
        # p and q are the schedule options p and q with flags of their own: given either way, they are kept
        # here, where the hash has always had them (a run folder's name does not depend on the spelling).
        options = self.schedule_options
        if isinstance(options, dict) and any(k in options for k in ("p", "q")):
            for key in ("p", "q"):
                if key in options:
                    value = options[key]
                    bad = problem(f"schedule option {key!r}", value, float)
                    if bad:
                        raise ConfigError(bad)
                    object.__setattr__(self, key, float(value))
            object.__setattr__(self, "schedule_options", {k: v for k, v in options.items() if k not in ("p", "q")})

    @classmethod
    def from_toml(cls, path: str | Path) -> "RunConfig":
        """Read a TOML file holding the same keys as the CLI flags (``steps-per-round`` or ``steps_per_round``;
        component options as tables, ``[schedule-options]``).

        Relative paths in it (``data-root``, ``out``, ``runs-root``, ``ticket-run``) are relative to the
        file's folder, so that a config works from any working directory; absolute ones, and ``~/...``,
        are kept as they are."""
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        return cls.from_dict(relative_to_file(data, Path(path).parent), source=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> "RunConfig":
        names = {f.name for f in fields(cls)}
        clean = {k.replace("-", "_"): v for k, v in data.items()}
        unknown = sorted(set(clean) - names)
        if unknown:
            raise ConfigError(f"{source}: unknown key {unknown[0]!r} (known: {', '.join(sorted(names))})")
        for kind in COMPONENT_OPTIONS:  # option names as the command line writes them: prune-input-conv
            options = clean.get(f"{kind}_options")
            if isinstance(options, dict):
                clean[f"{kind}_options"] = {str(k).replace("-", "_"): v for k, v in options.items()}
        check_types(clean, source, cls)
        return cls(**clean)

    def merged(self, overrides: dict[str, Any]) -> "RunConfig":
        """A copy with every non-None override applied (CLI flags over a config file)."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def check_types(self, source: str = "") -> None:
        """Refuse a value whose type is not its field's annotation (``rounds = true``, ``lr = "1e-3"``)."""
        check_types({f.name: getattr(self, f.name) for f in fields(self)}, source, type(self))

    def check(self) -> None:
        """Refuse impossible values before any work starts."""
        self.check_types()
        self.check_numbers()
        for name, spec in settings(type(self)).items():
            value = getattr(self, name)
            if spec.choices and value is not None and value not in spec.choices:
                raise ConfigError(f"{name} must be one of {', '.join(spec.choices)}, not {value!r}")
        if not 0.0 <= self.tau_frac < 1.0:
            raise ConfigError(f"tau_frac must be in [0, 1), not {self.tau_frac}")
        if self.target_sparsity is not None and not 0.0 < self.target_sparsity < 1.0:
            raise ConfigError(f"target sparsity is a fraction in (0, 1), not {self.target_sparsity} "
                              f"(write 0.9 for 90%)")
        for name in ("rounds", "steps_per_round", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < (0 if name == "rounds" else 1):
                raise ConfigError(f"{name.replace('_', '-')} must be positive, not {value}")
        points = self.keep_rewind_points
        if not isinstance(points, (list, tuple)) or not all(
                isinstance(f, (int, float)) and not isinstance(f, bool) and 0.0 <= f <= 1.0 for f in points):
            raise ConfigError(f"keep-rewind-points must be fractions of round 0's steps in [0, 1] "
                              f"(e.g. 0,0.05,0.2), not {points!r}")
        if self.log_every < 1 or self.checkpoint_every < 1:
            raise ConfigError("log-every and checkpoint-every must be at least 1")
        check_threads(self.threads)

    def check_numbers(self) -> None:
        """Finite, in-range numbers: a NaN or negative learning rate is refused before training, not
        found out after it; seeds must fit the 64 bits torch's generators take."""
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be a positive number (the presets use 2e-4 to 1e-3), not {self.lr}")
        for name in ("p", "q", "grad_clip", "ema_decay", "weight_decay"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name.replace('_', '-')} must be a finite number >= 0, not {value}")
        if self.ema_decay is not None and self.ema_decay >= 1:
            raise ConfigError(f"ema-decay must be below 1 (e.g. 0.999), not {self.ema_decay}")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ConfigError(f"warmup-steps must be 0 or more, not {self.warmup_steps}")
        for name in ("seed", "init_seed"):
            value = getattr(self, name)
            if value is not None and not SEED_MIN <= value <= SEED_MAX:
                raise ConfigError(f"{name.replace('_', '-')} must fit in 64 bits ({SEED_MIN} to {SEED_MAX}), "
                                  f"not {value}")

    def resolve(self, defaults: TrainingDefaults) -> "ResolvedConfig":
        """Every preset setting that is None filled from the model preset's defaults, as a :class:`ResolvedConfig`."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, spec in settings(type(self)).items():
            if spec.from_preset and values[name] is None:
                values[name] = getattr(defaults, name, spec.preset)
        if values["dataset"] is None:
            raise ConfigError(f"model {self.model!r} (preset {self.preset or 'its default'}) names no dataset: "
                              f"give one with --dataset (see `ticketforge list datasets`)")
        return resolved_type(type(self))(**values)

    def identity(self) -> dict[str, Any]:
        """The settings that define what the run computes (what its hash is made of).

        Only identity settings whose value differs from the default count, so that a setting added later
        (with a default that keeps the old behaviour) never renames an existing run's folder; ``data_root``
        counts in its normal form."""
        return identity_of(dataclasses.asdict(self), type(self))

    def digest(self) -> str:
        """Short sha256 of :meth:`identity`: the run directory's name."""
        blob = json.dumps(self.identity(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


@dataclass(frozen=True)
class ResolvedConfig(RunConfig):
    """A :class:`RunConfig` whose preset settings are all filled in (:meth:`RunConfig.resolve`): what a run is
    made of and what the engine reads, each setting of its declared type."""

    def __post_init__(self) -> None:
        super().__post_init__()
        hints = _hints(type(self))
        for name, spec in settings(type(self)).items():
            if spec.filled and getattr(self, name) is None and not fits(None, hints[name]):
                raise ConfigError(f"{name.replace('_', '-')} was not resolved: the engine fills it")


_RESOLVED: dict[type, type[ResolvedConfig]] = {}
_HINTS: dict[type, dict[str, Any]] = {}


def resolved_type(cls: type[RunConfig]) -> type[ResolvedConfig]:
    """The resolved counterpart of ``cls``: :class:`ResolvedConfig`, or one made for a subclass that adds
    settings (as a test does)."""
    if issubclass(cls, ResolvedConfig):
        return cls
    if cls is RunConfig:
        return ResolvedConfig
    if cls not in _RESOLVED:
        made: type[ResolvedConfig] = type(f"Resolved{cls.__name__}", (ResolvedConfig, cls), {})
        _RESOLVED[cls] = dataclass(frozen=True)(made)
    return _RESOLVED[cls]


def _hints(cls: type = RunConfig) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def settings(cls: type = RunConfig) -> dict[str, Setting]:
    """Every setting's declaration, by field name, in declaration order (a field a subclass adds without
    :func:`setting` is an identity setting with no option)."""
    return {f.name: f.metadata.get("setting", _PLAIN) for f in fields(cls)}


def setting_types(cls: type = RunConfig) -> dict[str, Any]:
    """Every setting's type as given before resolution (a preset setting may also be None: the preset's)."""
    hints = _hints(cls)
    return {name: hints[name] | None if spec.filled else hints[name] for name, spec in settings(cls).items()}


def check_types(values: dict[str, Any], source: str = "", cls: type = RunConfig) -> None:
    """Refuse a value whose type is not its setting's (``rounds = true``, ``lr = "1e-3"``)."""
    types = setting_types(cls)
    for name, value in values.items():
        bad = problem(name.replace("_", "-"), value, types[name])
        if bad:
            raise ConfigError(f"{source + ': ' if source else ''}{bad}")


def _of_kind(*kinds: str) -> frozenset[str]:
    return frozenset(name for name, spec in settings().items() if spec.kind in kinds)


RUNTIME_FIELDS = _of_kind("runtime")
RECORDING_FIELDS = _of_kind("recording")
EXTENT_FIELDS = _of_kind("extent")
NON_IDENTITY_FIELDS = _of_kind("runtime", "recording", "extent")
PATH_FIELDS = tuple(name for name, spec in settings().items() if spec.path)
PRESET_FIELDS = tuple(name for name, spec in settings().items() if spec.from_preset)


def _training_defaults() -> type:
    hints = _hints()
    made = dataclasses.make_dataclass(
        "TrainingDefaults",
        [(name, hints[name] | None, field(default=settings()[name].preset)) for name in PRESET_FIELDS],
        frozen=True)
    made.__module__ = "ticketforge.protocols"  # where plugins import it from
    made.__doc__ = ("Hyperparameters a model preset proposes; the user's config overrides any of them.\n\n"
                    "Its fields are the preset settings of RunConfig (``setting(..., preset=...)``), each "
                    "defaulting to the value that declaration gives.")
    return made


if TYPE_CHECKING:
    class TrainingDefaults:
        """The preset settings a model preset proposes (a frozen dataclass made from :class:`RunConfig`)."""

        def __init__(self, **values: Any) -> None: ...

        def __getattr__(self, name: str) -> Any: ...
else:
    TrainingDefaults = _training_defaults()


def relative_to_file(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``data`` with each relative path setting (either spelling of its key) joined to ``folder``.

    The result is normalised (``experiments/../.data`` is ``.data``) and stays relative when ``folder``
    is, so a path means the same file as before and ``data_root`` keeps its identity."""
    out = dict(data)
    for key, value in data.items():
        if key.replace("-", "_") in PATH_FIELDS and isinstance(value, str) and value \
                and not os.path.isabs(value) and not value.startswith("~"):
            out[key] = os.path.normpath(os.path.join(folder, value))
    return out


def _field_defaults(cls: type = RunConfig) -> dict[str, Any]:
    return {f.name: f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            for f in fields(cls)}


def _normal(key: str, value: Any) -> Any:
    """The form a value takes in a run's identity: ``data_root`` as a normal path (``./data/`` is ``data``)."""
    if key == "data_root" and isinstance(value, str) and value:
        return os.path.normpath(value)
    return value


def identity_of(config: dict[str, Any], cls: type = RunConfig) -> dict[str, Any]:
    """The identity of a config given as a dict (a stored ``config.json`` or ``asdict(RunConfig)``).

    Keys that are not settings (``model_config``) count as they are; a setting missing from ``config``
    has its default, so it does not count, nor does one of another kind than identity."""
    defaults, declared = _field_defaults(cls), settings(cls)
    out = {}
    for key, value in config.items():
        spec = declared.get(key)
        if spec is not None and not spec.names_run:
            continue
        value = _normal(key, value)
        if key in defaults and (value == _normal(key, defaults[key]) or (spec is not None and value in spec.unnamed)):
            continue
        if spec is not None and spec.from_preset and not spec.named_at_fallback and value == spec.preset:
            continue
        out[key] = value
    return out


def config_differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Human-readable ``key: stored -> current`` lines for the identity settings that differ.

    Consistent with :meth:`RunConfig.identity`: settings of other kinds are no differences, and a key
    missing on one side equals the setting's default."""
    a, b = identity_of(stored), identity_of(current)
    defaults = _field_defaults()
    return [f"{k}: {a.get(k, defaults.get(k))!r} -> {b.get(k, defaults.get(k))!r}"
            for k in sorted(set(a) | set(b)) if a.get(k, defaults.get(k)) != b.get(k, defaults.get(k))]

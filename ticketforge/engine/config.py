"""The run configuration: one flat, typed record that a TOML file, CLI flags or Python fill in.

``None`` means "the model preset's default"; :meth:`RunConfig.resolve` fills those in, and the
resolved config is what the run directory's hash and ``config.json`` are made of.
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
from typing import Any

from ..errors import ConfigError
from ..protocols import TrainingDefaults
from ..typecheck import problem
from .threads import check_threads

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, before it joined the standard library
    import tomli as tomllib

REWIND_MODES = ("tau", "init", "none")
BASELINES = ("none", "random-reinit", "random-prune")
PRECISIONS = ("auto", "fp32", "tf32", "bf16")
SEED_MIN, SEED_MAX = -(2 ** 63), 2 ** 64 - 1  # what torch.manual_seed takes

# Fields that change how a run is executed or shown, not what it computes: not part of its identity.
# ``world_size`` (processes under torchrun) is recorded but kept out, so a run may resume on another
# number of GPUs: the global batch and its data are the same, only float reduction order and the
# per-rank noise streams differ. ``threads`` (torch's CPU threads) likewise changes the order of float
# sums only.
RUNTIME_FIELDS = frozenset({"device", "out", "log_every", "checkpoint_every", "artifacts", "runs_root",
                            "world_size", "cuda_graphs", "ticket_run", "threads"})

# Fields that say what a run records along the way, not what it computes: not part of its identity
# either (asking for more rewind points never renames or invalidates a run).
RECORDING_FIELDS = frozenset({"keep_rewind_points"})
NON_IDENTITY_FIELDS = RUNTIME_FIELDS | RECORDING_FIELDS


# Fields that say how far a run goes, not what it is: a finished run given more rounds (or a higher
# target sparsity) continues where it stopped, in the same folder, with the masks an uninterrupted
# run gets (round k depends on rounds 0..k-1 only).
EXTENT_FIELDS = frozenset({"rounds", "target_sparsity"})

# Fields that hold a path: in a TOML file they are read relative to the file's own folder.
PATH_FIELDS = ("data_root", "out", "runs_root", "ticket_run")


@dataclass
class RunConfig:
    """Everything that defines a lottery-ticket run. Percent values are written as in the paper."""

    model: str = "ddpm-unet"
    preset: str | None = None
    model_options: dict[str, Any] = field(default_factory=dict)
    dataset: str | None = None
    data_root: str | None = None
    download: bool = False
    schedule: str = "incremental"
    p: float = 20.0
    q: float = 1.0
    scorer: str = "magnitude"
    rounds: int | None = None
    steps_per_round: int | None = None
    target_sparsity: float | None = None
    rewind: str = "tau"
    tau_frac: float = 0.05
    keep_rewind_points: list[float] = field(default_factory=list)  # fractions of round 0 whose weights are kept
    baseline: str = "none"
    seed: int = 0
    init_seed: int | None = None  # seed of the initial weights alone; None: ``seed``
    batch_size: int | None = None
    lr: float | None = None
    warmup_steps: int | None = None
    grad_clip: float | None = None
    ema_decay: float | None = None
    weight_decay: float | None = None
    precision: str = "auto"
    compile: bool = False
    cuda_graphs: bool | None = None  # whole training step as one CUDA graph; None: with compile on one GPU
    device: str = "auto"
    threads: int | str = "auto"  # torch's CPU threads: a count, or auto (see threads.py)
    out: str | None = None
    runs_root: str = "runs"
    log_every: int = 50
    checkpoint_every: int = 500
    artifacts: bool = True
    world_size: int = 1  # set by the engine from torchrun's WORLD_SIZE; recorded, not chosen
    ticket_run: str | None = None  # random-prune: the ticket's run folder; None: where baseline "none" puts it

    @classmethod
    def from_toml(cls, path: str | Path) -> "RunConfig":
        """Read a TOML file holding the same keys as the CLI flags (``steps-per-round`` or ``steps_per_round``).

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
        config = cls(**clean)
        config.check_types(source)
        return config

    def merged(self, overrides: dict[str, Any]) -> "RunConfig":
        """A copy with every non-None override applied (CLI flags over a config file)."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def check_types(self, source: str = "") -> None:
        """Refuse a value whose type is not its field's annotation (``rounds = true``, ``lr = "1e-3"``)."""
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            bad = problem(f.name.replace("_", "-"), getattr(self, f.name), hints[f.name])
            if bad:
                raise ConfigError(f"{source + ': ' if source else ''}{bad}")

    def check(self) -> None:
        """Refuse impossible values before any work starts."""
        self.check_types()
        self.check_numbers()
        if self.rewind not in REWIND_MODES:
            raise ConfigError(f"rewind must be one of {', '.join(REWIND_MODES)}, not {self.rewind!r}")
        if self.baseline not in BASELINES:
            raise ConfigError(f"baseline must be one of {', '.join(BASELINES)}, not {self.baseline!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
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

    def resolve(self, defaults: TrainingDefaults) -> "RunConfig":
        """Fill every None hyperparameter from the model preset's defaults."""
        filled = {f.name: getattr(defaults, f.name) for f in fields(TrainingDefaults) if getattr(self, f.name) is None}
        return dataclasses.replace(self, **filled)

    def identity(self) -> dict[str, Any]:
        """The fields that define what the run computes (what its hash is made of).

        Only fields whose value differs from the field's default count, so that a field added later
        (with a default that keeps the old behaviour) never renames an existing run's folder.
        Runtime and extent fields never count; ``data_root`` counts in its normal form."""
        return identity_of(dataclasses.asdict(self), type(self))

    def digest(self) -> str:
        """Short sha256 of :meth:`identity`: the run directory's name."""
        blob = json.dumps(self.identity(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def relative_to_file(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``data`` with each relative path field (either spelling of its key) joined to ``folder``.

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

    Keys that are not config fields (``model_config``) count as they are; a field missing from
    ``config`` has its default, so it does not count."""
    defaults = _field_defaults(cls)
    out = {}
    for key, value in config.items():
        if key in NON_IDENTITY_FIELDS or key in EXTENT_FIELDS:
            continue
        value = _normal(key, value)
        if key in defaults and value == _normal(key, defaults[key]):
            continue
        out[key] = value
    return out


def config_differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Human-readable ``key: stored -> current`` lines for the identity fields that differ.

    Consistent with :meth:`RunConfig.identity`: runtime and extent fields are no differences, and a
    key missing on one side equals the field's default."""
    a, b = identity_of(stored), identity_of(current)
    defaults = _field_defaults()
    return [f"{k}: {a.get(k, defaults.get(k))!r} -> {b.get(k, defaults.get(k))!r}"
            for k in sorted(set(a) | set(b)) if a.get(k, defaults.get(k)) != b.get(k, defaults.get(k))]

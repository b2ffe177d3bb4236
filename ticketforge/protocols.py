"""The contracts between the engine and its components.

A plugin's factory returns an object that satisfies one of these protocols. They are structural
(``typing.Protocol``): no base class is required, only the methods. torch appears in annotations only,
so a plugin's registration (its presets' :class:`TrainingDefaults`) does not import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Sequence, runtime_checkable

from .config import TrainingDefaults  # made from RunConfig's preset settings

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

Grouped = list[list["Tensor"]]
"""Tensors per module group, then per pruned tensor of that group (forward order)."""


@dataclass
class ModuleGroup:
    """A block of the network that a schedule treats as one unit ("conventional blocks in U-Net").

    Attributes:
        name: readable name, e.g. ``down.1`` or ``mid``.
        modules: (qualified name, module) pairs whose ``weight`` is pruned, in forward order.
    """

    name: str
    modules: list[tuple[str, nn.Module]] = field(default_factory=list)


@dataclass(frozen=True)
class PruneTarget:
    """One pruned tensor: ``module.weight`` of the module called ``name`` in group ``group``."""

    name: str
    module: nn.Module
    group: int
    group_name: str

    @property
    def weight(self) -> Tensor:
        """The weight the next forward pass uses (``weight_orig * weight_mask`` while pruned)."""
        from .pruning.masks import effective_weight  # protocols stays importable without torch.nn.utils.prune
        return effective_weight(self.module)


@runtime_checkable
class ModelSpec(Protocol):
    """What a model plugin's factory returns: the network, its loss, sampler and module groups.

    The engine owns optimisation, precision, EMA and checkpoints; the spec owns everything that
    depends on the network. ``config`` holds the network's keyword arguments and is recorded with
    every run, so ``build()`` must be reproducible from it.
    """

    name: str
    config: dict[str, Any]
    defaults: TrainingDefaults

    def build(self) -> nn.Module:
        """A freshly initialised network (the caller seeds the RNG)."""

    def loss(self, network: nn.Module, batch: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Scalar training loss for ``batch`` (float images in [0, 1], ``[B, C, H, W]``)."""

    def module_groups(self, network: nn.Module) -> list[ModuleGroup]:
        """Prunable modules grouped in forward order; excluded modules are simply left out."""

    def sample(self, network: nn.Module, n: int, *, generator: torch.Generator | None = None, **options: Any) -> Tensor:
        """``n`` generated images in [0, 1], ``[n, C, H, W]``."""

    def example_inputs(self, batch_size: int, device: torch.device | str = "cpu") -> tuple[Any, ...]:
        """Positional arguments for one forward pass of the network (used to count FLOPs)."""


@runtime_checkable
class ScoreContext(Protocol):
    """What a scorer may use besides the weights: the network, a loss on a batch, an RNG."""

    network: nn.Module
    generator: torch.Generator

    def loss_on_batch(self) -> Tensor:
        """Training loss of the current network on one fixed batch (for gradient-based scorers)."""


@runtime_checkable
class Scorer(Protocol):
    """Gives every prunable weight an importance score; the lowest scores are pruned first."""

    def score(self, targets: Sequence[PruneTarget], ctx: ScoreContext) -> list[Tensor]:
        """One score tensor per target, each the shape of ``target.weight``."""


@runtime_checkable
class Schedule(Protocol):
    """Turns scores and current masks into the next masks; a pure function of its inputs."""

    def validate(self, group_names: Sequence[str]) -> None:
        """Raise :class:`~ticketforge.errors.ConfigError` naming the group if a ratio is impossible."""

    def prune(self, scores: Grouped, masks: Grouped) -> Grouped:
        """New bool masks, each a subset of the old one."""


@runtime_checkable
class Similarity(Protocol):
    """Compares two representations with the same number of rows (samples)."""

    def __call__(self, x: Any, y: Any) -> float: ...


@runtime_checkable
class Evaluator(Protocol):
    """Scores a trained network's samples (FID, a Frechet distance on other features, KID...)."""

    def evaluate(self, spec: ModelSpec, network: nn.Module, *, dataset: torch.utils.data.Dataset,
                 n_samples: int, generator: torch.Generator, device: torch.device,
                 **options: Any) -> dict[str, Any]:
        """Metric name -> value, plus what produced it (sample count, sampler, steps, feature hash)."""


DatasetFactory = Any
"""``factory(root: str | None, download: bool, train: bool, **options) -> Dataset`` whose items are
``(image, label)`` with ``image`` a float tensor in [0, 1] of shape ``[C, H, W]``."""

__all__ = [
    "Grouped", "TrainingDefaults", "ModuleGroup", "PruneTarget", "ModelSpec", "ScoreContext",
    "Scorer", "Schedule", "Similarity", "Evaluator", "DatasetFactory", "Path",
]

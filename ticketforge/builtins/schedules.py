"""Built-in schedules: how much of each module group a round prunes.

Ratios are fractions of the weights still unpruned in the group. The CLI and config files take
percents, as the paper writes them (``--prune-percent 20 --prune-increment 1``); the classes take fractions.
"""

from __future__ import annotations

from typing import Sequence

from ..errors import ConfigError
from ..protocols import Grouped
from ..pruning import prune_global, prune_groupwise, prune_tensorwise


class RatioSchedule:
    """Base class for per-group schedules: override :meth:`ratios` and you have a schedule.

    Example::

        class Halving(RatioSchedule):
            def ratios(self, num_groups):
                return [0.5] * num_groups
    """

    # Where the lowest scores are chosen: "group" pools a group's tensors (the paper's); "tensor" takes the
    # group's ratio from each tensor alone. Pooled magnitudes let a layer initialised near zero (the
    # convolution closing each DDPM residual branch) lose nearly all its weights first (docs/results.md).
    within: str = "group"

    def ratios(self, num_groups: int) -> list[float]:
        """Fraction of its remaining weights that group ``j`` loses each round."""
        raise NotImplementedError

    def validate(self, group_names: Sequence[str]) -> None:
        if self.within not in ("group", "tensor"):
            raise ConfigError(f"schedule option within={self.within!r}: use within=group (rank a group's weights "
                              f"together) or within=tensor (each tensor loses the group's ratio of its own)")
        ratios = self.ratios(len(group_names))
        if len(ratios) != len(group_names):
            raise ConfigError(f"{type(self).__name__}.ratios gave {len(ratios)} ratios for {len(group_names)} groups")
        for j, (name, ratio) in enumerate(zip(group_names, ratios)):
            if not 0.0 <= ratio < 1.0:
                raise ConfigError(
                    f"group {j} ({name}) would prune {ratio:.0%} of its remaining weights each round; "
                    f"every ratio must be in [0%, 100%): lower p or q")

    def prune(self, scores: Grouped, masks: Grouped) -> Grouped:
        prune = prune_tensorwise if self.within == "tensor" else prune_groupwise
        return prune(scores, masks, self.ratios(len(scores)))


class UniformSchedule(RatioSchedule):
    """Every group prunes ``p`` of its remaining weights."""

    def __init__(self, p: float = 0.2, within: str = "group"):
        self.p, self.within = p, within

    def ratios(self, num_groups: int) -> list[float]:
        return [self.p] * num_groups


class IncrementalSchedule(RatioSchedule):
    """Group ``j`` (forward order) prunes ``p + j*q`` of its remaining weights: the paper's schedule."""

    def __init__(self, p: float = 0.2, q: float = 0.01, within: str = "group"):
        self.p, self.q, self.within = p, q, within

    def ratios(self, num_groups: int) -> list[float]:
        return [self.p + j * self.q for j in range(num_groups)]


class GlobalSchedule:
    """One magnitude threshold over all prunable weights: ``p`` of all remaining weights per round."""

    def __init__(self, p: float = 0.2):
        self.p = p

    def validate(self, group_names: Sequence[str]) -> None:
        if not 0.0 <= self.p < 1.0:
            raise ConfigError(f"global schedule would prune {self.p:.0%} of the remaining weights; p must be in [0%, 100%)")

    def prune(self, scores: Grouped, masks: Grouped) -> Grouped:
        return prune_global(scores, masks, self.p)

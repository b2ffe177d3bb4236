"""Built-in scorers: ``magnitude`` (|w|) and ``random`` (seeded uniform noise)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ..protocols import PruneTarget, ScoreContext


class MagnitudeScorer:
    """Score = |w| of the weight the forward pass uses (pruned entries score 0)."""

    def score(self, targets: Sequence[PruneTarget], ctx: ScoreContext) -> list[Tensor]:
        return [t.weight.detach().abs() for t in targets]


class RandomScorer:
    """Uniform random scores from the run's seeded generator: random pruning, reproducibly."""

    def score(self, targets: Sequence[PruneTarget], ctx: ScoreContext) -> list[Tensor]:
        gen = ctx.generator
        return [torch.rand(t.weight.shape, generator=gen, device=gen.device) for t in targets]

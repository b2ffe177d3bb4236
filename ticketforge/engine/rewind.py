"""Rewind points: theta at chosen steps of round 0 (theta_tau and the points a user keeps for branches).

A point is taken in memory when round 0 reaches its step, checked finite, carried in round 0's
checkpoints, and written to the run only when round 0 finishes (before its record). So every point on
disk belongs to the trajectory that finished round 0: an attempt that diverged, or that a resume rolled
back to an earlier checkpoint, leaves nothing behind.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch
from torch import Tensor, nn

from ..errors import TrainingDiverged
from ..pruning.state import plain_state_dict

THETA_TAU = "rewind.safetensors"
POINTS_DIR = "rewind_points"


def point_step(fraction: float, steps: int) -> int:
    """The step of round 0 a fraction names: ``ceil(fraction * steps)`` (the rule theta_tau has always used)."""
    return math.ceil(fraction * steps)


def point_file(step: int) -> str:
    """Relative path of the kept point taken after ``step`` steps of round 0."""
    return f"{POINTS_DIR}/step-{step:08d}.safetensors"


def kept_steps(manifest: Iterable[str]) -> list[int]:
    """Steps of the kept points listed in a run's manifest."""
    prefix = f"{POINTS_DIR}/step-"
    return sorted(int(rel[len(prefix):-len(".safetensors")]) for rel in manifest
                  if rel.startswith(prefix) and rel.endswith(".safetensors"))


class RewindPoints:
    """The points one training keeps: file -> step, the snapshots taken so far, their checkpoint form."""

    def __init__(self, wanted: dict[str, int]):
        self.wanted = dict(wanted)
        self.taken: dict[str, dict[str, Tensor]] = {}

    @classmethod
    def for_round_0(cls, tau: int, fractions: Iterable[float], steps: int) -> "RewindPoints":
        wanted = {THETA_TAU: tau}
        for f in fractions:
            wanted[point_file(point_step(f, steps))] = point_step(f, steps)
        return cls(wanted)

    def at_step(self, done: int, network: nn.Module) -> None:
        """Take every point due after ``done`` steps; a non-finite one stops training, nothing is kept."""
        due = [rel for rel, step in self.wanted.items() if step == done and rel not in self.taken]
        if not due:
            return
        weights = plain_state_dict(network)
        bad = next((k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
        if bad is not None:
            what = "theta_tau (the rewind point)" if THETA_TAU in due else "a kept rewind point"
            detail = (f"the weights became non-finite in round 0 before step {done} ({bad}), where {what} is "
                      f"taken; it was not kept, and the last good checkpoint is")
            raise TrainingDiverged(detail)  # the engine adds advice that works for this run
        for rel in due:
            self.taken[rel] = weights

    def state(self) -> dict[str, Any]:
        """What a checkpoint holds of them (weights_only-loadable)."""
        return {rel: self.taken[rel] for rel in self.taken}

    def restore(self, state: dict[str, Any] | None) -> None:
        self.taken = {rel: dict(w) for rel, w in (state or {}).items() if rel in self.wanted}

    def files(self) -> dict[str, dict[str, Tensor]]:
        """File -> weights of every point taken, to write when the round finishes."""
        return dict(self.taken)

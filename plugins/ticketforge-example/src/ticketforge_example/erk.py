"""The ERK schedule: Erdos-Renyi-Kernel layer-wise densities (RigL, Evci et al. 2020), applied per round.

ERK gives each pruned tensor a density proportional to the sum of its dimensions over their product,

    e_i = (d_1 + d_2 + ... + d_k) / (d_1 * d_2 * ... * d_k)

which for a conv weight ``[c_out, c_in, h, w]`` is ``(c_out + c_in + h + w) / (c_out * c_in * h * w)``
and for a linear weight ``[n_out, n_in]`` is ``(n_out + n_in) / (n_out * n_in)``: large layers (high
fan-in and fan-out) end sparser than small ones, instead of every layer losing the same fraction.

Each round removes ``p`` of all weights still alive (as the ``global`` schedule does), and this
round's density of tensor ``i`` (``n_i`` entries, ``r_i`` of them alive) is

    density_i = min(r_i / n_i, eps * e_i)          with eps solved from
    sum_i n_i * density_i = (1 - p) * sum_i r_i

so the surviving weights follow the ERK distribution at the new overall density. A tensor whose ERK
density would exceed what it has left (1 for a dense tensor, as in RigL) keeps all its weights, and
``eps`` is re-solved over the others. Starting from dense masks and repeating this schedule, every
round's masks are the ERK allocation of that round's overall density: ``eps`` shrinks each round, so
the caps never force a tensor to grow. Within a tensor the lowest-scored live weights go first.

Counts are made whole by largest remainders, so each round prunes exactly ``round(p * remaining)``
weights, like the built-in schedules, except that a tensor that still has weights keeps at least one
of them (at extreme sparsity this keeps a few more than asked).
Module groups play no part: ERK allocates per tensor.
"""

from __future__ import annotations

import math
from typing import Sequence

from ticketforge import ConfigError
from ticketforge.protocols import Grouped
from ticketforge.pruning import prune_lowest


def erk_weight(shape: Sequence[int]) -> float:
    """``sum(shape) / prod(shape)``: a tensor's ERK density up to the common factor eps."""
    numel = math.prod(shape)
    return 0.0 if numel == 0 else sum(shape) / numel


def erk_keep_counts(shapes: Sequence[Sequence[int]], alive: Sequence[int], keep: int) -> list[int]:
    """How many weights each tensor keeps so that ``keep`` survive in all, ERK-distributed.

    Args:
        shapes: the shape of each tensor.
        alive: how many entries of each tensor are still unpruned (the cap of its count).
        keep: how many weights survive in total, ``0 <= keep <= sum(alive)``.
    """
    sizes = [e * math.prod(s) for e, s in zip(map(erk_weight, shapes), shapes)]  # e_i * n_i = sum(shape_i)
    capped: set[int] = {i for i, a in enumerate(alive) if a == 0}
    while True:  # water-filling: fix the tensors whose ERK share exceeds what they have left
        free = [i for i in range(len(shapes)) if i not in capped]
        budget = keep - sum(alive[i] for i in capped)
        eps = budget / sum(sizes[i] for i in free) if free else 0.0
        over = {i for i in free if eps * sizes[i] > alive[i]}
        if not over:
            break
        capped |= over  # fixing them only raises eps for the rest, so all of them can go at once
    share = [float(alive[i]) if i in capped else eps * sizes[i] for i in range(len(shapes))]
    counts = [min(alive[i], math.floor(x)) for i, x in enumerate(share)]
    # Largest remainders: give the weights lost to flooring to the tensors with the biggest fractions.
    order = sorted((i for i in range(len(shapes)) if counts[i] < alive[i]), key=lambda i: share[i] - counts[i],
                   reverse=True)
    for i in order[:max(0, keep - sum(counts))]:
        counts[i] += 1
    return [max(c, min(1, a)) for c, a in zip(counts, alive)]


class ErkSchedule:
    """Prune ``p`` of all remaining weights per round, allocated over tensors by ERK densities."""

    def __init__(self, p: float = 0.2):
        self.p = p

    def validate(self, group_names: Sequence[str]) -> None:
        if not 0.0 <= self.p < 1.0:
            raise ConfigError(f"erk schedule would prune {self.p:.0%} of the remaining weights per round; "
                              f"p must be in [0%, 100%)")

    def prune(self, scores: Grouped, masks: Grouped) -> Grouped:
        flat_scores = [s for group in scores for s in group]
        flat_masks = [m for group in masks for m in group]
        alive = [int(m.sum()) for m in flat_masks]
        remaining = sum(alive)
        keep = remaining - int(round(self.p * remaining))
        counts = erk_keep_counts([tuple(m.shape) for m in flat_masks], alive, keep)
        new = [prune_lowest(s, m, a - c) for s, m, a, c in zip(flat_scores, flat_masks, alive, counts)]
        out, i = [], 0
        for group in masks:
            out.append(new[i:i + len(group)])
            i += len(group)
        return out

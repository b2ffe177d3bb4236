"""What the engine checks of a scorer's and a schedule's output before it trains on it.

A component that breaks its contract (see :mod:`ticketforge.protocols`) would otherwise give a result
that lies: float masks cast to all true (a dense network recorded as sparse), pruned weights that come
back, NaN scores that prune by position, a layer or the whole network pruned away. Each check raises a
one-line :class:`~ticketforge.errors.PluginError` (exit 2) naming the component, its plugin and what
it returned. :mod:`ticketforge.testing` runs the same checks in plugin authors' own tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence, cast

import torch
from torch import Tensor

from ..builtins.schedules import GlobalSchedule, RatioSchedule
from ..errors import ConfigError, PluginError
from ..protocols import Grouped, PruneTarget
from ..pruning.select import prune_count


@dataclass(frozen=True)
class Component:
    """Who produced an output, for the error message: ``schedule 'erk' (plugin ticketforge-example)``."""

    kind: str  # "scorer" or "schedule"
    label: str

    @property
    def fix(self) -> str:
        method = "score()" if self.kind == "scorer" else "prune()"
        mixin = "ScorerContract" if self.kind == "scorer" else "ScheduleContract"
        return (f"choose another {self.kind}, or fix its {method} "
                f"(ticketforge.testing.{mixin} checks the same rules)")


def component(kind: str, name: str, registry: Any) -> Component:
    """The component a run's config names (``python:...`` for an object passed to ``Engine``)."""
    if name.startswith("python:"):
        return Component(kind, f"{kind} {name.split('{')[0].removeprefix('python:')} (a Python object)")
    try:
        plugin = registry.get(f"{kind}s", name).plugin
    except PluginError:
        plugin = "unknown"
    return Component(kind, f"{kind} {name!r} (plugin {plugin})")


def _where(t: PruneTarget) -> str:
    return f"{t.name!r} (group {t.group_name!r})"


# -- scorers ----------------------------------------------------------------------------------------
def check_scores(scores: Any, targets: Sequence[PruneTarget], who: Component) -> None:
    """One real floating-point, finite tensor per target, shaped like its weight."""
    if not isinstance(scores, (list, tuple)):
        raise PluginError(f"{who.label} returned a {type(scores).__name__}, not a list of score tensors: {who.fix}")
    if len(scores) != len(targets):
        raise PluginError(f"{who.label} returned {len(scores)} score tensors for {len(targets)} pruned tensors: "
                          f"{who.fix}")
    for t, s in zip(targets, scores):
        problem = _score_problem(t, s)
        if problem:
            raise PluginError(f"{who.label} returned scores for {_where(t)} that {problem}: {who.fix}")


def _score_problem(t: PruneTarget, s: Any) -> str | None:
    if not isinstance(s, Tensor):
        return f"are a {type(s).__name__}, not a tensor"
    shape = tuple(cast(Tensor, t.module.weight).shape)
    if tuple(s.shape) != shape:
        return f"have shape {tuple(s.shape)}, not the weight's {shape}"
    if not s.is_floating_point():
        return f"have dtype {s.dtype}, not a real floating-point dtype"
    bad = int((~torch.isfinite(s)).sum())
    if bad:
        return f"have {bad} NaN or infinite entries of {s.numel()} (they would prune by position)"
    return None


# -- schedules --------------------------------------------------------------------------------------
def check_masks(schedule: Any, new: Any, old: Grouped, targets: Sequence[PruneTarget], who: Component) -> None:
    """Bool masks of the old layout and shapes, nested in the old ones, not pruning everything; for the
    built-in schedules exactly the count their ratio asks for (see :func:`asked_counts`), for any other
    schedule no tensor emptied of its last weights.

    A built-in schedule pools a group's tensors (or all of them, ``global``) under one threshold, so at
    extreme sparsity the asked count may empty a tensor: that is what its ratio asks, not a bug. A
    schedule that promises no count gets no such benefit of the doubt: an emptied layer is the mark of
    a broken threshold (a float mask, NaN scores), and it cuts the layer out of the network.
    """
    names = _group_names(targets, len(old))
    if not isinstance(new, (list, tuple)) or len(new) != len(old):
        got: int | str = f"{len(new)} groups" if isinstance(new, (list, tuple)) else f"a {type(new).__name__}"
        raise PluginError(f"{who.label} returned {got} of masks for {len(old)} groups: {who.fix}")
    by_group = [[t for t in targets if t.group == j] for j in range(len(old))]
    for j, (new_group, old_group) in enumerate(zip(new, old)):
        if not isinstance(new_group, (list, tuple)) or len(new_group) != len(old_group):
            got = len(new_group) if isinstance(new_group, (list, tuple)) else type(new_group).__name__
            raise PluginError(f"{who.label} returned masks for group {names[j]!r} that are {got} tensors, "
                              f"not its {len(old_group)}: {who.fix}")
        for t, n, o in zip(by_group[j], new_group, old_group):
            problem = _mask_problem(t, n, o)
            if problem:
                raise PluginError(f"{who.label} returned masks for group {names[j]!r} that {problem}: {who.fix}")
    before = sum(int(o.sum()) for group in old for o in group)
    after = sum(int(n.sum()) for group in new for n in group)
    if before and not after:
        raise PluginError(f"{who.label} returned masks that prune all {before} remaining weights: "
                          f"lower --p, or stop earlier (--rounds, --target-sparsity)")
    asked = asked_counts(schedule, old)
    for t, n, o in zip(targets, [n for g in new for n in g], [o for g in old for o in g]):
        if not asked and o.any() and not n.any():  # a built-in's ratio may ask for it at extreme sparsity
            raise PluginError(f"{who.label} returned masks that prune all {int(o.sum())} remaining weights of "
                              f"{_where(t)}, which would cut the layer out of the network: lower --p, stop "
                              f"earlier (--rounds, --target-sparsity), or choose a schedule that keeps every layer")
    for where, kept, remaining, ratio in asked:
        got = sum(int(new[j][i].sum()) for j in where for i in range(len(new[j])))
        if got != kept:
            scope = f"group {names[where[0]]!r}" if len(where) == 1 else "all groups"
            raise PluginError(f"{who.label} returned masks for {scope} that keep {got} of {remaining} weights; "
                              f"its ratio {ratio:.2%} asks to keep {kept}: {who.fix}")


def _mask_problem(t: PruneTarget, n: Any, o: Tensor) -> str | None:
    if not isinstance(n, Tensor):
        return f"hold a {type(n).__name__} for {t.name!r}, not a tensor"
    if n.dtype != torch.bool:
        return f"have dtype {n.dtype} for {t.name!r}: masks must be bool tensors (other dtypes are not cast)"
    if tuple(n.shape) != tuple(o.shape):
        return f"have shape {tuple(n.shape)} for {t.name!r}, not the weight's {tuple(o.shape)}"
    revived = int((n.cpu() & ~o.cpu()).sum())
    if revived:
        return (f"are not a subset of the previous round's: {revived} pruned weights of {t.name!r} "
                f"would come back")
    return None


def _group_names(targets: Sequence[PruneTarget], n_groups: int) -> list[str]:
    names = [str(j) for j in range(n_groups)]
    for t in targets:
        if t.group < n_groups:
            names[t.group] = t.group_name
    return names


def asked_counts(schedule: Any, old: Grouped) -> list[tuple[list[int], int, int, float]]:
    """``(group indices, kept, remaining, ratio)`` that a built-in schedule promises; empty for others.

    "The ratio actually asked" is the schedule's own rule: a :class:`RatioSchedule` (``uniform``,
    ``incremental`` and subclasses that only override ``ratios``) keeps ``remaining - round(r_j *
    remaining)`` of each group's live weights (of each tensor's, summed over the group, with
    ``within="tensor"``); ``global`` keeps ``remaining - round(p * remaining)`` of all of them. A
    schedule with its own ``prune`` is only held to the rules every schedule obeys.
    """
    alive = [sum(int(o.sum()) for o in group) for group in old]
    if isinstance(schedule, RatioSchedule) and type(schedule).prune is RatioSchedule.prune:
        ratios = schedule.ratios(len(old))
        if schedule.within == "tensor":
            return [([j], sum(int(o.sum()) - prune_count(r, int(o.sum())) for o in group), a, r)
                    for j, (group, a, r) in enumerate(zip(old, alive, ratios))]
        return [([j], a - prune_count(r, a), a, r) for j, (a, r) in enumerate(zip(alive, ratios))]
    if isinstance(schedule, GlobalSchedule) and type(schedule).prune is GlobalSchedule.prune:
        total = sum(alive)
        return [(list(range(len(old))), total - prune_count(schedule.p, total), total, schedule.p)]
    return []


# -- datasets -------------------------------------------------------------------------------------
def check_images(spec: Any, images: Tensor, dataset: str) -> None:
    """The dataset's ``[C, H, W]`` is the one the model was configured for (``spec.data_shape``, when
    the spec declares it): a smaller image would be padded and trained on, and samples cropped to
    the wrong size, without any error."""
    want = getattr(spec, "data_shape", None)
    if want is None or images.dim() != 4:
        return
    got = tuple(images.shape[1:])
    if got != tuple(want):
        show = lambda shape: "x".join(map(str, shape))  # noqa: E731
        preset = (spec.config or {}).get("preset") if isinstance(getattr(spec, "config", None), dict) else None
        model = f"model {spec.name!r}" + (f" (preset {preset!r})" if preset else "")
        raise ConfigError(f"dataset {dataset!r} has {show(got)} images but {model} expects {show(want)}: "
                          f"choose a dataset of {show(want)} images, or a model configuration made for "
                          f"{show(got)} ones (--preset, --model-option)")

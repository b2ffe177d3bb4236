"""Registration of the built-in components (entry point ``builtins`` of the ``ticketforge`` group).

The components' modules (torch, numpy) are imported when a component is built, not here: ``ticketforge
list`` reads these records without them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from ..hookspecs import hookimpl
from ..records import ComponentRecord, LazyFactory, Option

if TYPE_CHECKING:
    from ..protocols import Similarity
    from .schedules import GlobalSchedule, IncrementalSchedule, UniformSchedule


def _percent(value: float) -> float:
    return float(value) / 100.0


def _uniform(p: float = 20.0, within: str = "group") -> UniformSchedule:
    from .schedules import UniformSchedule
    return UniformSchedule(_percent(p), within)


def _incremental(p: float = 20.0, q: float = 1.0, within: str = "group") -> IncrementalSchedule:
    from .schedules import IncrementalSchedule
    return IncrementalSchedule(_percent(p), _percent(q), within)


def _global(p: float = 20.0) -> GlobalSchedule:
    from .schedules import GlobalSchedule
    return GlobalSchedule(_percent(p))


def _cka(kernel: str = "linear", debiased: bool = False) -> Similarity:
    from ..similarity.cka import CKA, Kernel
    return CKA(kernel=cast(Kernel, kernel), debiased=debiased)  # an unknown kernel: cka() says which are known


P = Option("p", float, 20.0, "percent of each group's remaining weights pruned per round")
Q = Option("q", float, 1.0, "extra percent per group index (group j prunes p + j*q)")
WITHIN = Option("within", str, "group", "group: the lowest scores of the whole group go first (the paper's); "
                "tensor: each tensor loses the group's ratio of its own weights")


@hookimpl
def ticketforge_scorers() -> list[ComponentRecord]:
    return [
        ComponentRecord("magnitude", LazyFactory(f"{__package__}.scorers:MagnitudeScorer"),
                        "|w|: the smallest weights go first"),
        ComponentRecord("random", LazyFactory(f"{__package__}.scorers:RandomScorer"),
                        "uniform random scores from the run's seed (a control)"),
    ]


@hookimpl
def ticketforge_schedules() -> list[ComponentRecord]:
    return [
        ComponentRecord("uniform", _uniform, "every group prunes p% of its remaining weights per round", (P, WITHIN)),
        ComponentRecord("incremental", _incremental,
                        "group j prunes (p + j*q)% of its remaining weights per round (the paper's)", (P, Q, WITHIN)),
        ComponentRecord("global", _global, "one threshold over all weights: p% of all remaining per round", (P,)),
    ]


@hookimpl
def ticketforge_similarities() -> list[ComponentRecord]:
    return [
        ComponentRecord("cka", _cka, "centered kernel alignment (linear or RBF; debiased option)", (
            Option("kernel", str, "linear", "linear or rbf"),
            Option("debiased", bool, False, "unbiased HSIC estimator (use when features outnumber samples)"),
        )),
    ]

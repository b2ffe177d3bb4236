"""ticketforge: find lottery tickets in diffusion models.

Train, prune by magnitude, rewind the surviving weights to an early point, repeat. The public API:

- :class:`Engine` and :class:`RunConfig` run the train-prune-rewind loop.
- :data:`hookimpl`, the record types (:class:`LazyFactory` names a factory by import path) and the
  protocols are what plugin authors use.
- :func:`load_round` and :func:`load_ticket` bring a trained ticket back; :func:`load_branch` and
  :func:`list_branches` a run's lottery branches.
- :func:`branch` trains a finished round's ticket once more (the controls: random masks, reinit, ...).
- :mod:`ticketforge.progress`: what the ``progress=`` arguments take (``"rich"``, ``"log"``, ``"none"``, a
  callable), and the tasks through which plugins report their own long work.
- What the commands compute, as functions: :mod:`ticketforge.evaluation` (``eval``),
  :mod:`ticketforge.comparison` (``compare``), :mod:`ticketforge.inspection` (``inspect``, ``flops``),
  :mod:`ticketforge.report` (``report``), :mod:`ticketforge.scores` and :mod:`ticketforge.plots`; the
  command line (:mod:`ticketforge.cli`) only parses, checks and prints.

Names are imported on first use (PEP 562), so that ``import ticketforge`` (and the command line's
start, before it can turn Ctrl-C into one line) does not wait for torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import ConfigError, TicketforgeError, UsageError
from .hookspecs import hookimpl
from .lazy import lazy_attributes
from .records import ComponentRecord, LazyFactory, Option

__version__ = "0.1.0"

_LAZY = {
    "LoadedRound": ".api", "load_round": ".api", "load_branch": ".api", "record_metrics": ".api",
    "BranchInfo": ".branches", "list_branches": ".branches", "branch": ".engine.branch",
    "export_ticket": ".export", "load_ticket": ".export",
    "Engine": ".engine", "RunConfig": ".engine",
    "Evaluator": ".protocols", "ModelSpec": ".protocols", "ModuleGroup": ".protocols", "PruneTarget": ".protocols",
    "Schedule": ".protocols", "Scorer": ".protocols", "Similarity": ".protocols", "TrainingDefaults": ".protocols",
    "RatioSchedule": ".builtins.schedules",
}

if TYPE_CHECKING:
    from .api import LoadedRound, load_branch, load_round, record_metrics
    from .branches import BranchInfo, list_branches
    from .builtins.schedules import RatioSchedule
    from .engine import Engine, RunConfig
    from .engine.branch import branch
    from .export import export_ticket, load_ticket
    from .protocols import (
        Evaluator,
        ModelSpec,
        ModuleGroup,
        PruneTarget,
        Schedule,
        Scorer,
        Similarity,
        TrainingDefaults,
    )


__getattr__ = lazy_attributes(__name__, _LAZY, submodules=True)  # ticketforge.engine and the like


__all__ = [
    "Engine", "RunConfig", "hookimpl", "ComponentRecord", "LazyFactory", "Option", "ModelSpec", "ModuleGroup",
    "PruneTarget", "Schedule", "Scorer", "Similarity", "Evaluator", "TrainingDefaults", "RatioSchedule",
    "LoadedRound", "load_round", "branch", "load_branch", "list_branches", "BranchInfo", "record_metrics", "export_ticket", "load_ticket", "TicketforgeError", "UsageError", "ConfigError",
]

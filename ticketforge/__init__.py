"""ticketforge: find lottery tickets in diffusion models.

Train, prune by magnitude, rewind the surviving weights to an early point, repeat. The public API:

- :class:`Engine` and :class:`RunConfig` run the train-prune-rewind loop.
- :data:`hookimpl`, the record types and the protocols are what plugin authors use.
- :func:`load_round` and :func:`load_ticket` bring a trained ticket back; :func:`load_branch` and
  :func:`list_branches` a run's lottery branches.
- :func:`branch` trains a finished round's ticket once more (the controls: random masks, reinit, ...).
"""

from .api import LoadedRound, load_branch, load_round, record_metrics
from .branches import BranchInfo, list_branches
from .export import export_ticket, load_ticket
from .engine import Engine, RunConfig
from .engine.branch import branch
from .errors import ConfigError, TicketforgeError, UsageError
from .hookspecs import hookimpl
from .protocols import (Evaluator, ModelSpec, ModuleGroup, PruneTarget, Schedule, Scorer, Similarity,
                        TrainingDefaults)
from .records import ComponentRecord, Option
from .builtins.schedules import RatioSchedule

__version__ = "0.1.0"

__all__ = [
    "Engine", "RunConfig", "hookimpl", "ComponentRecord", "Option", "ModelSpec", "ModuleGroup",
    "PruneTarget", "Schedule", "Scorer", "Similarity", "Evaluator", "TrainingDefaults", "RatioSchedule",
    "LoadedRound", "load_round", "branch", "load_branch", "list_branches", "BranchInfo", "record_metrics", "export_ticket", "load_ticket", "TicketforgeError", "UsageError", "ConfigError",
]

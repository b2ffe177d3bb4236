"""The train-prune-rewind engine."""

from .config import RunConfig
from .engine import Engine, RunState

__all__ = ["Engine", "RunConfig", "RunState"]

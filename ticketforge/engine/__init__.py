"""The train-prune-rewind engine.

:class:`Engine` and :class:`RunState` are imported on first use (PEP 562), so that the config
(``ticketforge.config``: option choices the command line shows) does not wait for torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..config import RunConfig
from ..lazy import lazy_attributes

if TYPE_CHECKING:
    from .engine import Engine
    from .loop import RunState

_LAZY = {"Engine": ".engine", "RunState": ".loop"}


__getattr__ = lazy_attributes(__name__, _LAZY)


__all__ = ["Engine", "RunConfig", "RunState"]

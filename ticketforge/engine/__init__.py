"""The train-prune-rewind engine.

:class:`Engine` and :class:`RunState` are imported on first use (PEP 562), so that the config
(``ticketforge.engine.config``: option choices the command line shows) does not wait for torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .config import RunConfig

if TYPE_CHECKING:
    from .engine import Engine, RunState

_LAZY = {"Engine": ".engine", "RunState": ".engine"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


__all__ = ["Engine", "RunConfig", "RunState"]

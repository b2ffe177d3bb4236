"""Registration: the module named by this distribution's ``ticketforge`` entry point.

It imports neither torch nor the schedule's module: ``ticketforge list`` loads every plugin's
registration, and the schedule is imported when a run builds it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ticketforge import ComponentRecord, Option, hookimpl

if TYPE_CHECKING:
    from .erk import ErkSchedule


def erk(p: float = 20.0) -> ErkSchedule:
    """Factory: options arrive as the user wrote them (percent), the schedule takes a fraction."""
    from .erk import ErkSchedule
    return ErkSchedule(float(p) / 100.0)


@hookimpl
def ticketforge_schedules() -> list[ComponentRecord]:
    return [
        ComponentRecord("erk", erk, "p% of all remaining weights per round, spread by Erdos-Renyi-Kernel density",
                        (Option("p", float, 20.0, "percent of all remaining weights pruned per round"),)),
    ]

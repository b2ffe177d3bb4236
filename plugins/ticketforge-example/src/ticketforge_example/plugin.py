"""Registration: the module named by this distribution's ``ticketforge`` entry point."""

from __future__ import annotations

from ticketforge import ComponentRecord, Option, hookimpl

from .erk import ErkSchedule


def erk(p: float = 20.0) -> ErkSchedule:
    """Factory: options arrive as the user wrote them (percent), the schedule takes a fraction."""
    return ErkSchedule(float(p) / 100.0)


@hookimpl
def ticketforge_schedules() -> list[ComponentRecord]:
    return [
        ComponentRecord("erk", erk, "p% of all remaining weights per round, spread by Erdos-Renyi-Kernel density",
                        (Option("p", float, 20.0, "percent of all remaining weights pruned per round"),)),
    ]

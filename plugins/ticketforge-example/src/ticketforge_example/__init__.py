"""An example ticketforge plugin: the ERK layer-wise pruning schedule (copy this layout for your own)."""

from .erk import ErkSchedule, erk_keep_counts, erk_weight

__all__ = ["ErkSchedule", "erk_keep_counts", "erk_weight"]

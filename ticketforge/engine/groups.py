"""Moved to :mod:`ticketforge.pruning.targets`; kept for experiments/study/part1.py, which imports it."""

from ..pruning.targets import flatten, group_summary, group_tensors, mask_digest, module_groups, prune_targets

__all__ = ["flatten", "group_summary", "group_tensors", "mask_digest", "module_groups", "prune_targets"]

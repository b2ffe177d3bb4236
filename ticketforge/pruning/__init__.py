"""Pruning primitives: pure mask arithmetic and its application through torch.nn.utils.prune."""

from .masks import apply_masks, effective_weight, sparsity_of
from .select import prune_global, prune_groupwise, prune_lowest, prune_tensorwise, prune_tensorwise_like

__all__ = ["apply_masks", "effective_weight", "sparsity_of",
           "prune_global", "prune_groupwise", "prune_lowest", "prune_tensorwise", "prune_tensorwise_like"]

"""Theoretical dense and sparse MACs of a network, counted by fvcore.

fvcore's ``FlopCountAnalysis`` traces one forward pass and counts from shapes, one multiply-add as
one "flop": we call them MACs. Zeros are invisible to it, so the sparse count scales the weight ops
(conv, linear, addmm, matmul, mm) of each leaf Conv/Linear module by the density of ``module.weight``,
the tensor the forward uses (masked while ``torch.nn.utils.prune`` is applied). Everything else,
attention matmuls, norms, upsampling, stays dense and is reported as ``other_macs``. These are
theoretical counts: unstructured sparsity buys no wall-clock time on GPUs at these shapes.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from ..protocols import ModuleGroup
from ..pruning.masks import effective_weight

WEIGHT_OPS = frozenset({"conv", "linear", "addmm", "matmul", "mm"})
"""fvcore operator names that multiply by a leaf module's own weight."""

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.modules.conv._ConvNd, nn.Linear)


def _shape(value: Any) -> list[int]:
    from fvcore.nn.jit_handles import get_shape
    return get_shape(value)


def sdpa_flop_jit(inputs: list[Any], outputs: list[Any]) -> Counter:
    """fvcore handle for ``aten::scaled_dot_product_attention``: MACs of Q K^T plus those of A V.

    With q ``[..., L, E]``, k ``[..., S, E]`` and v ``[..., S, Ev]`` that is ``batch * L * S * (E + Ev)``
    (batch = the product of q's leading dimensions). Softmax and scaling are not counted, as fvcore
    counts no elementwise op.
    """
    q, k, v = (_shape(x) for x in inputs[:3])
    batch = math.prod(q[:-2])
    return Counter({"scaled_dot_product_attention": batch * q[-2] * k[-2] * (q[-1] + v[-1])})


def weight_density(module: nn.Module) -> float:
    """Nonzero fraction of the weight the forward uses (``weight_orig * weight_mask`` when pruned)."""
    weight = effective_weight(module)
    return float(torch.count_nonzero(weight)) / max(weight.numel(), 1)


@dataclass
class LeafMacs:
    """MACs counted inside one leaf module.

    Attributes:
        dense: all MACs of the module's ops.
        weight: the part from ops that multiply by the module's own weight (0 for non Conv/Linear).
        density: nonzero fraction of ``module.weight`` (1.0 for modules that are not Conv/Linear).
    """

    dense: int
    weight: int = 0
    density: float = 1.0

    @property
    def sparse(self) -> float:
        """MACs with a nonzero weight: ``dense - (1 - density) * weight``."""
        return self.dense - (1.0 - self.density) * self.weight


@dataclass
class MacCount:
    """The result of :func:`count_macs` for one forward pass with the given inputs.

    Attributes:
        total: dense MACs of the whole forward pass.
        leaves: qualified leaf-module name -> its MACs (leaves with no counted op are left out,
            except Conv/Linear modules).
        uncounted_ops: operator -> occurrences that fvcore has no handle for (elementwise ops mostly).
    """

    total: int
    leaves: dict[str, LeafMacs] = field(default_factory=dict)
    uncounted_ops: dict[str, int] = field(default_factory=dict)

    @property
    def dense(self) -> int:
        return self.total

    @property
    def sparse(self) -> float:
        """MACs left when every pruned weight is skipped."""
        return self.total - sum((1.0 - leaf.density) * leaf.weight for leaf in self.leaves.values())

    @property
    def other(self) -> int:
        """Dense MACs outside Conv/Linear weight ops (attention matmuls, norms, upsampling...)."""
        return self.total - sum(leaf.weight for leaf in self.leaves.values())


def count_macs(network: nn.Module, inputs: Sequence[Any]) -> MacCount:
    """Count dense and sparse MACs of ``network(*inputs)`` with fvcore (the network is not changed)."""
    with warnings.catch_warnings():  # fvcore's import and tracing emit deprecation/tracer warnings
        warnings.simplefilter("ignore")
        from fvcore.nn import FlopCountAnalysis

        analysis = FlopCountAnalysis(network, tuple(inputs))
        analysis.set_op_handle("aten::scaled_dot_product_attention", sdpa_flop_jit)
        analysis.set_op_handle("aten::mul", None)  # the prune hook's weight_orig * weight_mask
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        by_module = analysis.by_module_and_operator()
        uncounted = dict(analysis.unsupported_ops())
    leaves: dict[str, LeafMacs] = {}
    for name, module in network.named_modules():
        if any(True for _ in module.children()):
            continue
        ops = by_module.get(name, Counter())
        if isinstance(module, PRUNABLE_TYPES):
            weight = sum(v for op, v in ops.items() if op in WEIGHT_OPS)
            leaves[name] = LeafMacs(int(sum(ops.values())), int(weight), weight_density(module))
        elif sum(ops.values()):
            leaves[name] = LeafMacs(int(sum(ops.values())))
    return MacCount(int(analysis.total()), leaves, uncounted)


def with_densities(count: MacCount, network: nn.Module) -> MacCount:
    """``count`` with each Conv/Linear leaf's density re-read from ``network`` (same architecture).

    Tracing a large network takes seconds; the rounds of one run share shapes and differ only in
    their masks, so one trace serves them all.
    """
    modules = dict(network.named_modules())
    leaves = {name: LeafMacs(leaf.dense, leaf.weight, weight_density(modules[name]) if leaf.weight else 1.0)
              for name, leaf in count.leaves.items()}
    return MacCount(count.total, leaves, dict(count.uncounted_ops))


def effective_parameters(network: nn.Module) -> tuple[int, int]:
    """(all parameters, nonzero ones), reading ``weight`` rather than ``weight_orig`` where pruned."""
    total = nonzero = 0
    for module in network.modules():
        for name, param in module.named_parameters(recurse=False):
            tensor = effective_weight(module) if name == "weight_orig" else param
            total += tensor.numel()
            nonzero += int(torch.count_nonzero(tensor))
    return total, nonzero


def flops_report(network: nn.Module, inputs: Sequence[Any], groups: Sequence[ModuleGroup] = (), *,
                 count: MacCount | None = None) -> dict[str, Any]:
    """Parameters and theoretical MACs of ``network(*inputs)``, in total and per module group.

    Returns the JSON shape ``ticketforge flops --json`` prints::

        {"params", "nonzero_params", "dense_macs", "sparse_macs", "other_macs", "uncounted_ops",
         "by_group": [{"index", "name", "params", "nonzero_params", "dense_macs", "sparse_macs"}]}

    Top-level ``params`` counts every parameter of the network; a group's ``params`` counts the
    weights of its prunable modules. MACs are for the whole batch in ``inputs``. A ``count`` made
    earlier on a network of the same architecture is reused (densities re-read) instead of tracing.
    """
    count = count_macs(network, inputs) if count is None else with_densities(count, network)
    params, nonzero = effective_parameters(network)
    by_group = []
    for index, group in enumerate(groups):
        leaves = [count.leaves.get(name, LeafMacs(0)) for name, _ in group.modules]
        weights = [effective_weight(module) for _, module in group.modules]
        by_group.append({
            "index": index,
            "name": group.name,
            "params": sum(w.numel() for w in weights),
            "nonzero_params": sum(int(torch.count_nonzero(w)) for w in weights),
            "dense_macs": sum(leaf.dense for leaf in leaves),
            "sparse_macs": round(sum(leaf.sparse for leaf in leaves)),
        })
    return {
        "params": params,
        "nonzero_params": nonzero,
        "dense_macs": count.dense,
        "sparse_macs": round(count.sparse),
        "other_macs": count.other,
        "uncounted_ops": count.uncounted_ops,
        "by_group": by_group,
    }


def human_macs(macs: float) -> str:
    """``6.239 G``, ``46.1 K``: three significant decimals in the largest fitting unit."""
    for scale, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(macs) >= scale:
            return f"{macs / scale:.3f} {unit}"
    return f"{macs:.0f}"


__all__ = ["WEIGHT_OPS", "LeafMacs", "MacCount", "count_macs", "effective_parameters", "flops_report",
           "effective_weight", "human_macs", "sdpa_flop_jit", "weight_density", "with_densities"]

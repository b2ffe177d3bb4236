"""Centered kernel alignment (Kornblith et al. 2019) between two representations of the same samples.

``HSIC(K, L) = tr(K H L H) / (n - 1)^2`` with ``H`` the centering matrix, and
``CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))``. When features outnumber samples (weights: a
conv layer's ``C_out`` rows of ``C_in*k*k`` features) the biased estimator is far from 0 for unrelated
matrices; ``debiased=True`` uses the unbiased HSIC estimator of Song et al. (2012), as in Nguyen,
Raghu & Kornblith (2021). All arithmetic is float64 numpy.
"""

from __future__ import annotations

from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..pruning.masks import effective_weight

Kernel = Literal["linear", "rbf"]
Variant = Literal["kornblith", "paper-no-sqrt"]
_DEGENERATE = 1e-20  # centred Gram energy below this fraction of the raw Gram's: constant representation


def _as_array(x: Any) -> np.ndarray:
    """A float64 ``[n, p]`` array from a numpy array or torch tensor (rows are samples)."""
    if isinstance(x, Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected a [samples, features] matrix, got shape {x.shape}")
    return x


def gram_linear(x: np.ndarray) -> np.ndarray:
    """``X X^T``."""
    return x @ x.T


def gram_rbf(x: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """``exp(-d^2 / (2 sigma^2))`` with ``sigma = threshold * sqrt(median d^2)``.

    The median runs over the full n x n matrix of squared distances, diagonal included, exactly as
    the reference implementation of Kornblith et al. does.
    """
    return rbf_of_gram(gram_linear(x), threshold)


def rbf_of_gram(gram: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """:func:`gram_rbf` of the samples whose linear Gram matrix ``X X^T`` is ``gram`` (distances are
    read from it: ``d_ij^2 = G_ii + G_jj - 2 G_ij``)."""
    sq_norms = np.diag(gram)
    sq_dist = np.maximum(sq_norms[:, None] + sq_norms[None, :] - 2.0 * gram, 0.0)
    median = np.median(sq_dist)
    if median <= 0:
        raise ValueError("RBF bandwidth is zero: most samples are identical")
    return np.exp(-sq_dist / (2.0 * threshold**2 * median))


def _center(gram: np.ndarray, debiased: bool) -> np.ndarray:
    """``H K H``, or the U-centred matrix of the unbiased estimator (zero diagonal)."""
    gram = gram.copy()
    n = gram.shape[0]
    if not debiased:
        means = gram.mean(axis=0)
        return gram - means[:, None] - means[None, :] + means.mean()
    if n < 4:
        raise ValueError(f"debiased HSIC needs at least 4 samples, got {n}")
    np.fill_diagonal(gram, 0.0)
    means = gram.sum(axis=0) / (n - 2)
    means -= means.sum() / (2 * (n - 1))
    gram -= means[:, None] + means[None, :]
    np.fill_diagonal(gram, 0.0)
    return gram


def hsic(k: np.ndarray, l: np.ndarray, *, debiased: bool = False) -> float:
    """HSIC of two Gram matrices: ``tr(KHLH) / (n-1)^2``, or Song et al.'s unbiased estimator."""
    n = k.shape[0]
    total = float(np.vdot(_center(k, debiased), _center(l, debiased)))
    return total / (n * (n - 3)) if debiased else total / (n - 1) ** 2


def _cka_grams(k: np.ndarray, l: np.ndarray, debiased: bool, variant: Variant) -> float:
    kc, lc = _center(k, debiased), _center(l, debiased)
    kl, kk, ll = float(np.vdot(kc, lc)), float(np.vdot(kc, kc)), float(np.vdot(lc, lc))
    if kk <= _DEGENERATE * float(np.vdot(k, k)) or ll <= _DEGENERATE * float(np.vdot(l, l)):
        return float("nan")  # no variance across samples (up to round-off): CKA is undefined
    if variant == "paper-no-sqrt":
        # Wrong on purpose: reproduces the paper's code. Scale-dependent, CKA(X, X) != 1.
        n = k.shape[0]
        norm = (n * (n - 3)) if debiased else (n - 1) ** 2
        return (kl / norm) / ((kk / norm) * (ll / norm))
    if variant != "kornblith":
        raise ValueError(f"unknown CKA variant {variant!r} (use 'kornblith')")
    denom = kk * ll
    return kl / np.sqrt(denom) if denom > 0 else float("nan")


def cka(x: Any, y: Any, kernel: Kernel = "linear", *, debiased: bool = False, threshold: float = 0.5,
        variant: Variant = "kornblith") -> float:
    """CKA between ``x`` ``[n, p1]`` and ``y`` ``[n, p2]`` (numpy arrays or torch tensors; rows are samples).

    Args:
        kernel: ``"linear"`` or ``"rbf"``.
        debiased: use the unbiased HSIC estimator (needs n >= 4); prefer it when p >> n.
        threshold: RBF bandwidth as a fraction of the median pairwise distance.
        variant: ``"kornblith"`` (correct). ``"paper-no-sqrt"`` reproduces the lottery-ticket paper's
            code, which drops the square root in the denominator; it is WRONG (CKA(X, X) is not 1 and
            depends on scale) and exists only to reproduce its numbers.

    Returns:
        A float in [0, 1] for the biased estimator (the debiased one can be slightly negative);
        NaN when a representation has no variance across samples (e.g. a fully pruned layer).
    """
    x, y = _as_array(x), _as_array(y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y need the same number of samples, got {x.shape[0]} and {y.shape[0]}")
    if kernel == "linear":
        k, l = gram_linear(x), gram_linear(y)
    elif kernel == "rbf":
        k, l = gram_rbf(x, threshold), gram_rbf(y, threshold)
    else:
        raise ValueError(f"unknown kernel {kernel!r} (use 'linear' or 'rbf')")
    return float(_cka_grams(k, l, debiased, variant))


class CKA:
    """CKA as a :class:`~ticketforge.protocols.Similarity`: ``CKA(kernel="rbf")(x, y) -> float``."""

    def __init__(self, kernel: Kernel = "linear", debiased: bool = False, threshold: float = 0.5,
                 variant: Variant = "kornblith") -> None:
        self.kernel, self.debiased, self.threshold, self.variant = kernel, debiased, threshold, variant

    def __call__(self, x: Any, y: Any) -> float:
        return cka(x, y, self.kernel, debiased=self.debiased, threshold=self.threshold, variant=self.variant)

    def __repr__(self) -> str:
        return f"CKA(kernel={self.kernel!r}, debiased={self.debiased})"


def weight_rows(module: nn.Module | Tensor) -> Tensor:
    """The weight the module's forward uses (masked while pruning is applied) as ``[C_out, -1]``."""
    weight = effective_weight(module) if isinstance(module, nn.Module) else module
    return weight.detach().reshape(weight.shape[0], -1)


def weight_cka(module_a: nn.Module | Tensor, module_b: nn.Module | Tensor, debiased: bool = True,
               kernel: Kernel = "linear", **options: Any) -> float:
    """CKA between two modules' weights, each output channel's row a sample (debiased by default)."""
    return cka(weight_rows(module_a), weight_rows(module_b), kernel, debiased=debiased, **options)


def _first_tensor(output: Any) -> Tensor:
    while isinstance(output, (tuple, list)):
        output = output[0]
    if not isinstance(output, Tensor):
        raise TypeError(f"module output of type {type(output).__name__} holds no tensor")
    return output


@torch.no_grad()
def capture_activations(network: nn.Module, inputs: Any, modules: Sequence[str]) -> dict[str, Tensor]:
    """Outputs of the named modules for one forward pass, each flattened to ``[batch, -1]``."""
    return _on_outputs(network, inputs, modules, lambda flat: flat.to("cpu", torch.float64))


def _on_outputs(network: nn.Module, inputs: Any, modules: Sequence[str], reduce: Callable[[Tensor], Any]
                ) -> dict[str, Any]:
    """``reduce`` of each named module's output (detached, flattened to ``[batch, -1]``) for one forward
    pass, taken as the module runs (a module the forward does not call is left out)."""
    named = dict(network.named_modules())
    missing = [m for m in modules if m not in named]
    if missing:
        raise KeyError(f"no module {missing[0]!r} in the network")
    captured: dict[str, Any] = {}

    def hook(name: str) -> Callable[..., None]:
        def store(_module: nn.Module, _args: Any, output: Any) -> None:
            out = _first_tensor(output)
            captured[name] = reduce(out.detach().reshape(out.shape[0], -1))
        return store

    handles = [named[m].register_forward_hook(hook(m)) for m in modules]
    try:
        network(*inputs) if isinstance(inputs, tuple) else network(inputs)
    finally:
        for h in handles:
            h.remove()
    return captured


def activation_cka(net_a: nn.Module, net_b: nn.Module, inputs: Any, modules: Sequence[str] | Mapping[str, str],
                   kernel: Kernel = "linear", *, debiased: bool = False, **options: Any) -> dict[str, float]:
    """Per-module CKA of the two networks' outputs on identical ``inputs``.

    Args:
        inputs: the forward's positional arguments as a tuple (e.g. ``(x_t, t)``), or one tensor. The
            same objects go into both networks.
        modules: module names present in both networks, or a mapping name in ``net_a`` -> name in
            ``net_b``. Each output is flattened per sample (the batch is the sample axis).

    Returns:
        name in ``net_a`` -> CKA, in the order given.
    """
    pairs = dict(modules) if isinstance(modules, Mapping) else {m: m for m in modules}
    acts_a = capture_activations(net_a, inputs, list(pairs))
    acts_b = capture_activations(net_b, inputs, list(pairs.values()))
    return {a: cka(acts_a[a], acts_b[b], kernel, debiased=debiased, **options) for a, b in pairs.items()}


@torch.no_grad()
def activation_grams(network: nn.Module, inputs: Any, modules: Sequence[str]) -> dict[str, np.ndarray]:
    """The linear Gram matrix ``X X^T`` (float64, ``[batch, batch]``) of each named module's output for
    one forward pass, each output flattened per sample.

    What :func:`capture_activations` gives, reduced on the network's device as each module runs: a
    batch of a few hundred large feature maps never sits in memory at once. :func:`cka_of_grams`
    takes it (linear and RBF CKA both follow from the Gram)."""
    def gram(flat: Tensor) -> np.ndarray:
        flat = flat.to(torch.float64)
        return (flat @ flat.T).cpu().numpy()

    return _on_outputs(network, inputs, modules, gram)


def cka_of_grams(k: np.ndarray, l: np.ndarray, kernel: Kernel = "linear", *, debiased: bool = False,
                 threshold: float = 0.5, variant: Variant = "kornblith") -> float:
    """:func:`cka` of two representations given by their linear Gram matrices (``X X^T``, ``Y Y^T``);
    ``kernel="rbf"`` derives the RBF kernels from them."""
    if k.shape != l.shape or k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"expected two square Gram matrices of one size, got {k.shape} and {l.shape}")
    if kernel == "rbf":
        k, l = rbf_of_gram(k, threshold), rbf_of_gram(l, threshold)
    elif kernel != "linear":
        raise ValueError(f"unknown kernel {kernel!r} (use 'linear' or 'rbf')")
    return float(_cka_grams(k, l, debiased, variant))


def mask_jaccard(mask_a: Tensor, mask_b: Tensor) -> float:
    """|A and B| / |A or B| of two bool masks of the same shape (1.0 when both are empty)."""
    if mask_a.shape != mask_b.shape:
        raise ValueError(f"masks differ in shape: {tuple(mask_a.shape)} vs {tuple(mask_b.shape)}")
    a, b = mask_a.bool(), mask_b.bool()
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 1.0


__all__ = ["CKA", "cka", "hsic", "gram_linear", "gram_rbf", "rbf_of_gram", "weight_rows", "weight_cka",
           "capture_activations", "activation_cka", "activation_grams", "cka_of_grams", "mask_jaccard"]

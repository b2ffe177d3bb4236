"""Sample-quality evaluators of the DDPM plugin: ``fid``, ``fd-lenet`` and ``fd-resnet``.

``fid`` needs the Inception weights as a local file and the optional package pytorch-fid.
``fd-lenet`` / ``fd-resnet`` work offline: a Frechet distance (plus KID) on the features of a
classifier that ticketforge trains on the dataset itself; they are not FID and never called so.
The evaluator classes are imported on first use, so that registering them (``evaluation.plugin``)
does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ticketforge.lazy import lazy_attributes

if TYPE_CHECKING:
    from .evaluators import FIDEvaluator, FrechetEvaluator

__all__ = ["FIDEvaluator", "FrechetEvaluator"]


__getattr__ = lazy_attributes(__name__, dict.fromkeys(__all__, ".evaluators"))

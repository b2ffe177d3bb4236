"""Sample-quality evaluators of the DDPM plugin: ``fid``, ``fd-lenet`` and ``fd-resnet``.

``fid`` needs the Inception weights as a local file and the optional package pytorch-fid.
``fd-lenet`` / ``fd-resnet`` work offline: a Frechet distance (plus KID) on the features of a
classifier that ticketforge trains on the dataset itself; they are not FID and never called so.
"""

from .evaluators import FIDEvaluator, FrechetEvaluator

__all__ = ["FIDEvaluator", "FrechetEvaluator"]

"""Registration of the evaluators (entry point ``ddpm-evaluation`` of the ``ticketforge`` group)."""

from __future__ import annotations

from typing import Any

from ticketforge.hookspecs import hookimpl
from ticketforge.records import ComponentRecord, Option

_CACHE = (Option("cache_dir", str, None, "cache folder (default $TICKETFORGE_CACHE, else $XDG_CACHE_HOME/ticketforge or ~/.cache/ticketforge)"),
          Option("dataset_key", str, None, "name for the dataset's caches (default: a hash of its content)"))


def _fid(**options: Any) -> Any:
    from .evaluators import FIDEvaluator
    return FIDEvaluator(**options)


def _frechet(arch: str) -> Any:
    def factory(**options: Any) -> Any:
        from .evaluators import FrechetEvaluator
        return FrechetEvaluator(arch, **options)
    return factory


def _classifier_options(epochs: int) -> tuple[Option, ...]:
    return (
        Option("epochs", int, epochs, "training epochs of the classifier (trained once, then cached)"),
        Option("max_steps", int, None, "stop training after this many steps (overrides epochs)"),
        Option("seed", int, 0, "seed of the classifier's split, init and data order"),
        Option("train_batch_size", int, 128, "batch size of the classifier's training"),
        Option("reference_samples", int, 10000, "dataset images the samples are compared with"),
        Option("kid_subsets", int, 100, "KID: number of random subsets"),
        Option("kid_subset_size", int, 1000, "KID: subset size (clamped to the smaller set)"),
        Option("batch_size", int, 256, "batch size of sampling and feature extraction"),
    ) + _CACHE


@hookimpl
def ticketforge_evaluators() -> list[ComponentRecord]:
    return [
        ComponentRecord("fid", _fid, "FID on InceptionV3 pool3 (pytorch-fid); needs a local weights file", (
            Option("inception_weights", str, None, "pt_inception-2015-12-05-6726825d.pth "
                   "(default $TICKETFORGE_INCEPTION_WEIGHTS)"),
            Option("dims", int, 2048, "Inception feature size (FID is defined at 2048)"),
            Option("reference_samples", int, 50000, "dataset images the statistics are computed on"),
            Option("reference_stats", str, None, "pytorch-fid .npz (mu, sigma) to compare with instead"),
            Option("batch_size", int, 50, "batch size of sampling and feature extraction"),
        ) + _CACHE),
        ComponentRecord("fd-lenet", _frechet("lenet"),
                        "offline: Frechet distance + KID on a LeNet trained on the dataset (not FID)",
                        _classifier_options(10)),
        ComponentRecord("fd-resnet", _frechet("resnet"),
                        "offline: Frechet distance + KID on a small ResNet trained on the dataset (not FID)",
                        _classifier_options(15)),
    ]

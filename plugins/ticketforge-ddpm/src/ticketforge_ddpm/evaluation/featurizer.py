"""A classifier trained once per dataset (fixed seed), cached with its sha256 and test accuracy.

Cache layout, under :func:`~ticketforge_ddpm.evaluation.data.cache_root`::

    featurizers/<dataset-key>/<arch>-<config-hash>.safetensors   the weights
    featurizers/<dataset-key>/<arch>-<config-hash>.json          sha256, test accuracy, config

The test accuracy is measured on a held-out ``test_fraction`` of the dataset given (split by the
seed); the classifier never sees those items in training.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save
from torch import Tensor, nn

from ticketforge.errors import CheckpointError, UsageError
from ticketforge.progress import message, task
from ticketforge.store.atomic import atomic_write_bytes, sha256_file

from .classifiers import ARCHITECTURES, augment, normalize
from .data import ImageSet, cache_root

DEFAULT_LR = {"lenet": 1e-3, "resnet": 0.1}
DEFAULT_EPOCHS = {"lenet": 10, "resnet": 15}


@dataclass(frozen=True)
class FeaturizerConfig:
    """How the classifier is trained; every field is part of its cache key.

    Attributes:
        arch: ``lenet`` (Adam) or ``resnet`` (SGD with momentum, cosine decay, crop+flip augmentation).
        epochs: passes over the training part (``DEFAULT_EPOCHS`` of the arch when None).
        max_steps: stop after this many optimizer steps (overrides ``epochs``; for tests).
        batch_size: training batch size.
        lr: learning rate (``DEFAULT_LR`` of the arch when None).
        seed: seeds the split, initialisation, order and augmentation.
        test_fraction: held-out part of the dataset on which the test accuracy is measured.
    """

    arch: str = "lenet"
    epochs: int | None = None
    max_steps: int | None = None
    batch_size: int = 128
    lr: float | None = None
    seed: int = 0
    test_fraction: float = 0.1

    def resolved(self) -> "FeaturizerConfig":
        if self.arch not in ARCHITECTURES:
            raise UsageError(f"unknown featurizer {self.arch!r} (known: {', '.join(ARCHITECTURES)})")
        return dataclasses.replace(self, epochs=self.epochs or DEFAULT_EPOCHS[self.arch],
                                   lr=self.lr or DEFAULT_LR[self.arch])

    def digest(self) -> str:
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


@dataclass
class Featurizer:
    """A trained classifier used as a feature extractor: ``featurizer(uint8 images) -> [n, d]``."""

    model: nn.Module
    sha256: str
    test_accuracy: float
    config: FeaturizerConfig
    dataset_key: str

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        return self.model.features(normalize(images))  # type: ignore[operator]


def _split(n: int, config: FeaturizerConfig) -> tuple[Tensor, Tensor]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed))
    n_test = max(1, int(round(n * config.test_fraction)))
    return perm[n_test:], perm[:n_test]


def _optimizer(model: nn.Module, config: FeaturizerConfig, total: int) -> tuple[torch.optim.Optimizer, Any]:
    assert config.lr is not None  # resolved()
    opt: torch.optim.Optimizer
    if config.arch == "lenet":
        opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, total)


@torch.no_grad()
def accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` on uint8 ``images`` (already on the model's device)."""
    model.eval()
    correct = sum(int((model(normalize(images[i:i + batch_size])).argmax(1) == labels[i:i + batch_size]).sum())
                  for i in range(0, len(images), batch_size))
    return correct / len(images)


@contextlib.contextmanager
def reproducible_kernels() -> Iterator[None]:
    """Deterministic cuDNN kernels and full fp32 matmuls, whatever the process set before: a featurizer
    trained again (in a later session, on the same GPU model and torch) gets the same sha256, so that
    scores of different sessions stay comparable."""
    matmul = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True, allow_tf32=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul


@torch.enable_grad()
def train_classifier(data: ImageSet, config: FeaturizerConfig, device: torch.device | str = "cpu"
                     ) -> tuple[nn.Module, float]:
    """Train ``config.arch`` on ``data``'s labels; returns (model in eval mode, held-out accuracy)."""
    config = config.resolved()
    labels = data.labels
    num_classes = int(labels.max()) + 1
    if int(labels.min()) < 0 or num_classes < 2:
        raise UsageError(f"fd-{config.arch} trains a classifier and needs a dataset with at least two class labels")
    train_idx, test_idx = _split(len(labels), config)
    images, labels = data.images.to(device), labels.to(device)
    gen = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = ARCHITECTURES[config.arch](data.images.shape[1], num_classes).to(device)
    per_epoch = math.ceil(len(train_idx) / config.batch_size)
    assert config.epochs is not None  # resolved()
    total = config.max_steps or config.epochs * per_epoch
    opt, sched = _optimizer(model, config, total)
    model.train()
    with reproducible_kernels(), task(f"training the {config.arch} featurizer (once per dataset)", total, "step") as bar:
        for step in range(total):
            epoch_step = step % per_epoch
            if epoch_step == 0:
                order = train_idx[torch.randperm(len(train_idx), generator=gen)].to(device)
            idx = order[epoch_step * config.batch_size:(epoch_step + 1) * config.batch_size]
            x = normalize(images[idx])
            if config.arch == "resnet":
                x = augment(x, gen)
            loss = F.cross_entropy(model(x), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.advance()  # no loss shown: reading it would wait for the GPU every step
    test_idx = test_idx.to(device)
    return model.eval(), accuracy(model, images[test_idx], labels[test_idx])


def load_or_train(dataset_key: str, load_data: Callable[[], ImageSet], config: FeaturizerConfig, *,
                  device: torch.device | str = "cpu", cache_dir: str | Path | None = None) -> Featurizer:
    """The cached featurizer for this dataset and config; trains and caches it on first use.

    Raises:
        CheckpointError: the cached weights no longer match their recorded sha256.
    """
    config = config.resolved()
    stem = cache_root(cache_dir) / "featurizers" / dataset_key / f"{config.arch}-{config.digest()}"
    weights, meta_path = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    if not (weights.exists() and meta_path.exists()):
        data = load_data()
        model, acc = train_classifier(data, config, device)
        state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        sha = atomic_write_bytes(weights, save(state))
        meta = {"arch": config.arch, "sha256": sha, "test_accuracy": acc, "dataset_key": dataset_key,
                "config": dataclasses.asdict(config), "in_channels": int(data.images.shape[1]),
                "num_classes": int(data.labels.max()) + 1, "n_items": len(data.labels)}
        atomic_write_bytes(meta_path, json.dumps(meta, indent=2).encode())
        message(f"trained the {config.arch} featurizer: held-out test accuracy {100 * acc:.2f}%, cached in {weights}")
    meta = json.loads(meta_path.read_text())
    if sha256_file(weights) != meta["sha256"]:
        raise CheckpointError(f"cached featurizer {weights} fails its sha256 check: delete it to retrain")
    model = ARCHITECTURES[config.arch](meta["in_channels"], meta["num_classes"])
    model.load_state_dict(load_file(weights))
    return Featurizer(model.to(device).eval(), meta["sha256"], float(meta["test_accuracy"]), config, dataset_key)


__all__ = ["DEFAULT_EPOCHS", "DEFAULT_LR", "Featurizer", "FeaturizerConfig", "accuracy", "load_or_train",
           "train_classifier"]

"""Images and labels of a dataset in memory, a content key for caches, and generated samples."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ticketforge.cache import cache_root as core_cache_root
from ticketforge.errors import UsageError
from ticketforge.progress import task


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, else ticketforge's one cache rule (:func:`ticketforge.cache.cache_root`)."""
    if cache_dir is not None:
        return Path(cache_dir)
    return core_cache_root()


def to_uint8(images: Tensor) -> Tensor:
    """[0, 1] float images -> uint8, as if written to and read back from PNG files."""
    return (images.detach().float().clamp(0, 1) * 255).round().to("cpu", torch.uint8)


@dataclass
class ImageSet:
    """A dataset held as uint8 images ``[N, C, H, W]`` and int64 labels ``[N]`` (-1 when unlabeled)."""

    images: Tensor
    labels: Tensor

    @classmethod
    def from_dataset(cls, dataset: Dataset) -> "ImageSet":
        """Read every ``(image, label)`` item (images as float in [0, 1])."""
        images, labels = [], []
        for batch in DataLoader(dataset, batch_size=512, shuffle=False, num_workers=0):
            if isinstance(batch, (tuple, list)):
                images.append(to_uint8(batch[0]))
                labels.append(torch.as_tensor(batch[1]).long().reshape(-1) if len(batch) > 1
                              else torch.full((len(batch[0]),), -1))
            else:
                images.append(to_uint8(batch))
                labels.append(torch.full((len(batch),), -1))
        if not images:
            raise UsageError("the dataset is empty: check --data-root")
        return cls(torch.cat(images), torch.cat(labels))

    @cached_property
    def key(self) -> str:
        """16 hex digits of sha256 over shape, pixels and labels: names this dataset's caches."""
        digest = hashlib.sha256(str(tuple(self.images.shape)).encode())
        digest.update(self.images.numpy().tobytes())
        digest.update(self.labels.numpy().tobytes())
        return digest.hexdigest()[:16]

    def subset(self, n: int, seed: int = 0) -> "ImageSet":
        """``n`` items drawn without replacement by a fixed seed (all of them, in order, if n >= N)."""
        if n >= len(self.images):
            return self
        index = torch.randperm(len(self.images), generator=torch.Generator().manual_seed(seed))[:n]
        return ImageSet(self.images[index], self.labels[index])


def generate(spec: Any, network: nn.Module, n: int, *, generator: torch.Generator | None,
             batch_size: int = 256, **sample_options: Any) -> Tensor:
    """``n`` samples of ``spec.sample`` as uint8 ``[n, C, H, W]``, drawn ``batch_size`` at a time."""
    if n < 2:
        raise UsageError(f"need at least 2 samples for a distance, got {n}")
    chunks = []
    with task(f"sampling {n} images", n, "image") as bar:
        for start in range(0, n, batch_size):
            with torch.no_grad():
                images = spec.sample(network, min(batch_size, n - start), generator=generator, **sample_options)
            chunks.append(to_uint8(images))
            bar.advance(len(images))
    return torch.cat(chunks)


@torch.no_grad()
def extract_features(featurize: Callable[[Tensor], Tensor], images: Tensor, *, device: torch.device | str,
                     batch_size: int = 256) -> np.ndarray:
    """``featurize`` applied to uint8 ``images`` in batches: float64 ``[N, d]`` on the CPU."""
    out = []
    with task("features", len(images), "image") as bar:
        for start in range(0, len(images), batch_size):
            feats = featurize(images[start:start + batch_size].to(device))
            out.append(feats.reshape(feats.shape[0], -1).to("cpu", torch.float64))
            bar.advance(len(feats))
    return torch.cat(out).numpy()


__all__ = ["ImageSet", "cache_root", "extract_features", "generate", "to_uint8"]

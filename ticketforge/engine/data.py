"""Training data held in memory as uint8 and served in a deterministic order.

The batch of step ``s`` in round ``k`` is a pure function of (seed, k, s): a resumed round sees the
same batches as an uninterrupted one without saving any loader state. MNIST and CIFAR-10 fit on a
GPU, so the images live on the training device and no host-to-device copy sits in the step loop.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..errors import UsageError


def materialize(dataset: Dataset, cache: Path | None = None) -> Tensor:
    """All images of ``dataset`` as one uint8 tensor ``[N, C, H, W]`` (cached on disk if asked)."""
    if cache is not None and cache.exists():
        return torch.load(cache, weights_only=True)
    try:
        n = len(dataset)  # type: ignore[arg-type]
    except TypeError:
        raise UsageError("the dataset has no length; ticketforge needs a finite image dataset") from None
    if n == 0:
        raise UsageError("the dataset is empty: check --data-root")
    chunks = []
    for batch in DataLoader(dataset, batch_size=512, shuffle=False, num_workers=0):
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        chunks.append((images.float().clamp(0, 1) * 255).round().to(torch.uint8))
    images = torch.cat(chunks)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")  # concurrent runs may cache at once
        torch.save(images, tmp)
        tmp.replace(cache)
    return images


def cache_path(dataset: str, root: str | None) -> Path | None:
    """Where the uint8 copy of a dataset read from ``root`` is cached (None: not worth caching)."""
    if root is None:
        return None
    key = hashlib.sha256(f"{dataset}|{Path(root).resolve()}".encode()).hexdigest()[:16]
    return Path.home() / ".cache" / "ticketforge" / "data" / f"{dataset}-{key}.pt"


class BatchSource:
    """Seeded, resumable batches from an in-memory uint8 image tensor."""

    def __init__(self, images: Tensor, batch_size: int, seed: int, device: torch.device):
        self.images = images.to(device)
        self.n = images.shape[0]
        self.batch_size = batch_size
        self.seed = seed
        self.device = device
        self._perm_key: tuple[int, int] | None = None
        self._perm: Tensor | None = None

    def _permutation(self, round_index: int, epoch: int) -> Tensor:
        if self._perm_key != (round_index, epoch):
            gen = torch.Generator().manual_seed(hash_seed(self.seed, "data", round_index, epoch))
            self._perm = torch.randperm(self.n, generator=gen).to(self.device)
            self._perm_key = (round_index, epoch)
        assert self._perm is not None
        return self._perm

    def indices(self, round_index: int, step: int) -> Tensor:
        """Dataset indices of the batch of ``step`` in round ``round_index``."""
        start = step * self.batch_size
        parts, remaining = [], self.batch_size
        while remaining > 0:
            epoch, offset = divmod(start, self.n)
            take = min(remaining, self.n - offset)
            parts.append(self._permutation(round_index, epoch)[offset:offset + take])
            start, remaining = start + take, remaining - take
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def batch(self, round_index: int, step: int) -> Tensor:
        """Float images in [0, 1] of that step, on the training device."""
        return self.images[self.indices(round_index, step)].float().div_(255)


def hash_seed(*parts: object) -> int:
    """A 63-bit seed derived from any parts (stable across processes, unlike ``hash``)."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1

"""Training data held in memory as uint8 and served in a deterministic order.

The batch of step ``s`` in round ``k`` is a pure function of (seed, k, s): a resumed round sees the
same batches as an uninterrupted one without saving any loader state. MNIST and CIFAR-10 fit on a
GPU, so the images live on the training device and no host-to-device copy sits in the step loop.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..cache import cache_root, files_fingerprint, warn_cache
from ..errors import TicketforgeWarning, UsageError
from ..store.atomic import atomic_write_bytes


def materialize(dataset: Dataset, cache: Path | None = None) -> Tensor:
    """All images of ``dataset`` as one uint8 tensor ``[N, C, H, W]`` (cached on disk if asked).

    The cache file is read only when it matches the sha256 stored beside it; a damaged or
    unreadable cache is rebuilt (with a warning), and one that cannot be written is skipped."""
    if cache is not None:
        cached = _read_cache(cache)
        if cached is not None:
            return cached
    try:
        n = len(dataset)  # type: ignore[arg-type]
    except TypeError:
        raise UsageError("the dataset has no length; ticketforge needs a finite image dataset") from None
    if n == 0:
        raise UsageError("the dataset is empty: check --data-root")
    chunks = []
    try:
        for batch in DataLoader(dataset, batch_size=512, shuffle=False, num_workers=0):
            images = batch[0] if isinstance(batch, (list, tuple)) else batch
            chunks.append((images.float().clamp(0, 1) * 255).round().to(torch.uint8))
        images = torch.cat(chunks)
    except RuntimeError as exc:
        if "equal size" not in str(exc) and "Sizes of tensors must match" not in str(exc):
            raise
        raise UsageError("the dataset's images have different sizes: resize them to one size "
                         "(or give the dataset a size option)") from None
    if cache is not None:
        _write_cache(cache, images)
    return images


def _sidecar(cache: Path) -> Path:
    return cache.with_name(cache.name + ".sha256")


def _read_cache(cache: Path) -> Tensor | None:
    """The cached images, or None (missing, damaged or unreadable: the caller rebuilds it)."""
    if not cache.exists():
        return None
    try:
        data, expected = cache.read_bytes(), _sidecar(cache).read_text().strip()
    except OSError as exc:
        problem = f"cannot be read ({exc.strerror or exc})"
    else:
        problem = "fails its sha256 check"
        if hashlib.sha256(data).hexdigest() == expected:
            try:
                images = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            except Exception:  # torch raises many types for a foreign or truncated file
                images = None
            if isinstance(images, Tensor) and images.dtype == torch.uint8 and images.dim() == 4:
                return images
            problem = "is not a uint8 image tensor"
    warnings.warn(f"the data cache {cache} {problem}; rebuilding it from the dataset", TicketforgeWarning,
                  stacklevel=3)
    return None


def _write_cache(cache: Path, images: Tensor) -> None:
    buffer = io.BytesIO()
    torch.save(images, buffer)
    try:
        digest = atomic_write_bytes(cache, buffer.getvalue())
        atomic_write_bytes(_sidecar(cache), digest.encode())
    except OSError as exc:
        warn_cache("data cache", cache, exc)


def cache_path(dataset: str, root: str | None, source: Dataset | None = None,
               options: dict[str, Any] | None = None) -> Path | None:
    """Where the uint8 copy of ``source`` (dataset ``dataset`` read from ``root``) is cached, keyed by
    its content; None: not worth caching.

    The key is the dataset's own ``fingerprint()`` when it has one (None from it: held in memory
    anyway, no cache), else the sha256 of every file under ``root`` (hashed once per size and mtime,
    see :func:`ticketforge.cache.files_fingerprint`); no root and no fingerprint: no cache."""
    if source is not None and hasattr(source, "fingerprint"):
        fingerprint = source.fingerprint()
    elif root is not None and Path(root).exists():
        base = Path(root)
        files = sorted(p for p in base.rglob("*") if p.is_file()) if base.is_dir() else [base]
        fingerprint = files_fingerprint(files, extra=str(base.resolve()) if not files else "")
    else:
        fingerprint = None
    if fingerprint is None:
        return None
    given = f"|{json.dumps(options, sort_keys=True, default=str)}" if options else ""  # the dataset's options
    key = hashlib.sha256(f"{dataset}|train|{fingerprint}{given}".encode()).hexdigest()[:16]
    return cache_root() / "data" / f"{dataset}-{key}.pt"


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

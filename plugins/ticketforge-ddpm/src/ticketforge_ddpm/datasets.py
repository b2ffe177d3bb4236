"""Dataset factories: ``factory(root=None, download=False, train=True, **options) -> Dataset``
whose items are ``(image, label)``, ``image`` a float tensor ``[C, H, W]`` in [0, 1].

``mnist``: a folder holding the four IDX files (gzipped or not), or torchvision's ``<root>/MNIST/raw``.
``cifar10``/``cifar100``: torchvision's ``cifar-10-batches-py``/``cifar-100-python`` under root, or
``train/`` and ``test/`` image folders (or ``train.tar.gz``/``test.tar.gz``) under root.
``imagefolder``: a folder or a .tar.gz of ``<class>/<image>`` files.
``mnist-sample``: the first 9,000 MNIST training images, embedded in this package.
A missing or malformed path raises :class:`~ticketforge.errors.UsageError` saying what was expected.
"""

from __future__ import annotations

import gzip
import os
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ticketforge.cache import files_fingerprint
from ticketforge.errors import TicketforgeError, UsageError

from .image_folders import cache_dir, imagefolder

SAMPLE_HELD_OUT = 1000
"""``mnist-sample``: the last this-many images form the ``train=False`` split."""


def _data_root(root: str | os.PathLike | None) -> Path:
    return Path(root).expanduser() if root is not None else cache_dir() / "datasets"


def _no_options(name: str, options: dict[str, Any]) -> None:
    if options:
        raise UsageError(f"dataset {name} takes no options; got {', '.join(options)}")


class ArrayImages(Dataset):
    """Images held in memory as uint8 ``[N, C, H, W]``, with int labels; items are scaled to [0, 1]."""

    def __init__(self, images: Tensor, labels: Tensor, sources: list[Path] | None = None) -> None:
        if images.dim() == 3:
            images = images[:, None]
        if labels.shape[0] != images.shape[0]:
            where = f" ({', '.join(map(str, sources))})" if sources else ""
            raise UsageError(f"{images.shape[0]} images but {labels.shape[0]} labels{where}: the image and "
                             f"label files are of different datasets or splits; put matching files there")
        self.images, self.labels, self.sources = images, labels.long(), sources

    def fingerprint(self) -> str | None:
        """The data cache's key: the sha256 of the files read (None for embedded data: not cached)."""
        return files_fingerprint(self.sources, extra="array-images") if self.sources else None

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.images[i].float() / 255.0, int(self.labels[i])


# -- MNIST ------------------------------------------------------------------------------------
MNIST_FILES = {True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped when its name ends in .gz) as a uint8 array."""
    try:
        data = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
        if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
            raise ValueError("not an unsigned-byte IDX file")
        ndim = data[3]
        shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
        return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)
    except (OSError, ValueError, EOFError) as exc:
        raise UsageError(f"{path} is not a readable IDX file ({exc}): expected the MNIST files as published") from None


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def mnist(root: str | None = None, download: bool = False, train: bool = True, **options: Any) -> Dataset:
    """MNIST, ``[1, 28, 28]``. ``root`` holds the four IDX files (gzipped or not), or torchvision's
    ``MNIST/raw`` folder; ``download=True`` fetches them there with torchvision."""
    _no_options("mnist", options)
    base = _data_root(root)
    images_stem, labels_stem = MNIST_FILES[train]
    for directory in (base, base / "MNIST" / "raw"):
        images, labels = _find(directory, images_stem), _find(directory, labels_stem)
        if images and labels:
            return ArrayImages(torch.from_numpy(read_idx(images).copy()), torch.from_numpy(read_idx(labels).astype(np.int64)),
                               sources=[images, labels])
    if download:
        from torchvision.datasets import MNIST
        try:
            MNIST(str(base), train=train, download=True)
        except Exception as exc:  # network errors come in many types
            raise TicketforgeError(f"downloading MNIST into {base} failed ({exc}); place the IDX files there instead") from None
        return mnist(str(base), False, train)
    raise UsageError(f"no MNIST files in {base}: expected {images_stem}(.gz) and {labels_stem}(.gz) "
                     f"there or in {base / 'MNIST' / 'raw'}, or pass --download")


def mnist_sample(root: str | None = None, download: bool = False, train: bool = True, **options: Any) -> Dataset:
    """The embedded MNIST sample (no files needed; ``root`` and ``download`` are ignored): the first
    N training images of MNIST; ``train=False`` gives its last 1,000, ``train=True`` the others."""
    _no_options("mnist-sample", options)
    with resources.as_file(resources.files("ticketforge_ddpm") / "data" / "mnist_sample.npz") as path:
        with np.load(path) as npz:
            images, labels = npz["images"], npz["labels"]
    split = slice(None, -SAMPLE_HELD_OUT) if train else slice(-SAMPLE_HELD_OUT, None)
    return ArrayImages(torch.from_numpy(images[split].copy()), torch.from_numpy(labels[split].astype(np.int64)))


# -- CIFAR ------------------------------------------------------------------------------------
def _cifar(name: str, torchvision_folder: str, root: str | None, download: bool, train: bool,
           options: dict[str, Any]) -> Dataset:
    _no_options(name, options)
    base = _data_root(root)
    if base.is_file():  # a .tar.gz of one split
        return imagefolder(str(base), train=train)
    if (base / torchvision_folder).is_dir() or download:
        from torchvision import datasets, transforms

        cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
        try:
            return cls(str(base), train=train, download=download, transform=transforms.ToTensor())
        except Exception as exc:  # corrupt files, or download failures of many types
            if download:
                raise TicketforgeError(f"downloading {name} into {base} failed ({exc}); place the files there instead") from None
            raise UsageError(f"{name} files in {base / torchvision_folder} are unusable ({exc})") from None
    split = "train" if train else "test"
    for candidate in (base / split, base / f"{split}.tar.gz", base / f"{split}.tgz", base / f"{split}.tar"):
        if candidate.exists():
            return imagefolder(str(candidate), train=train)
    raise UsageError(f"no {name} files in {base}: expected {torchvision_folder}/ (torchvision's layout) or "
                     f"{split}/ or {split}.tar.gz of <class>/<image> files, or pass --download")


def cifar10(root: str | None = None, download: bool = False, train: bool = True, **options: Any) -> Dataset:
    """CIFAR-10, ``[3, 32, 32]``: torchvision's files, or an image-folder copy (folder or .tar.gz)."""
    return _cifar("cifar10", "cifar-10-batches-py", root, download, train, options)


def cifar100(root: str | None = None, download: bool = False, train: bool = True, **options: Any) -> Dataset:
    """CIFAR-100, ``[3, 32, 32]``: torchvision's files, or an image-folder copy (folder or .tar.gz)."""
    return _cifar("cifar100", "cifar-100-python", root, download, train, options)

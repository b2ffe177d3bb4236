"""Images stored as ``<class>/<image>`` files in a folder or a .tar.gz (extracted once into the cache)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
from pathlib import Path
from typing import Any

from torch import Tensor
from torch.utils.data import Dataset

from ticketforge.cache import cache_root, files_fingerprint
from ticketforge.errors import UsageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def cache_dir() -> Path:
    """The cache root, by ticketforge's one rule (:func:`ticketforge.cache.cache_root`)."""
    return cache_root()


class ImageFiles(Dataset):
    """Image files with labels, decoded on access with PIL (converted to ``mode``, optionally
    resized so the short side is ``size`` and center-cropped to ``size`` x ``size``)."""

    def __init__(self, files: list[Path], labels: list[int], classes: list[str], mode: str = "RGB",
                 size: int | None = None) -> None:
        self.files, self.labels, self.classes, self.mode, self.size = files, labels, classes, mode, size
        self._first: tuple[Path, tuple[int, ...]] | None = None  # the first decoded image and its shape

    def __len__(self) -> int:
        return len(self.files)

    def fingerprint(self) -> str:
        """sha256 of every image file's bytes with its class and the decoding options (the data
        cache's key; hashed once per size and mtime)."""
        listing = "\n".join(f"{self.classes[label]}/{f.name}" for f, label in zip(self.files, self.labels))
        return files_fingerprint(self.files, extra=f"imagefolder|{self.mode}|{self.size}|{listing}")

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        from PIL import Image, UnidentifiedImageError
        from torchvision.transforms import functional as TF

        file = self.files[i]
        try:
            with Image.open(file) as img:
                img = img.convert(self.mode)
                if self.size is not None:
                    img = TF.center_crop(TF.resize(img, self.size), self.size)
                image = TF.pil_to_tensor(img).float() / 255.0
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:  # PIL's decoders raise these
            reason = "not a readable image" if isinstance(exc, UnidentifiedImageError) else str(exc)
            raise UsageError(f"{file} is {reason if reason.startswith('not ') else f'damaged ({reason})'}: "
                             f"replace or delete it") from None
        shape = tuple(image.shape)
        if self._first is None:
            self._first = (file, shape)
        elif shape != self._first[1]:
            first, first_shape = self._first
            raise UsageError(f"images differ in size: {file} is {_hw(shape)}, {first} is {_hw(first_shape)}; "
                             f"resize them all to one size")
        return image, self.labels[i]


def _hw(shape: tuple[int, ...]) -> str:
    return f"{shape[-1]}x{shape[-2]}"


def extract_tar(archive: Path) -> Path:
    """Extract ``archive`` once into the cache (``<cache>/extracted/<name>-<hash>``) and return that
    folder; later calls (and other processes) reuse it."""
    stat = archive.stat()
    key = hashlib.sha256(f"{archive.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    dest = cache_dir() / "extracted" / f"{archive.name.split('.')[0]}-{key}"
    if (dest / ".complete").exists():
        return dest
    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with tarfile.open(archive) as tar:
            # the "data" filter refuses absolute paths, links out of the folder and device files
            options: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(tmp, **options)
    except (tarfile.TarError, OSError, EOFError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UsageError(f"cannot extract {archive} ({exc}): expected a .tar.gz of <class>/<image> files") from None
    (tmp / ".complete").touch()
    try:
        tmp.rename(dest)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
        if not (dest / ".complete").exists():
            raise
    return dest


def _class_root(folder: Path, train: bool) -> Path:
    """The folder whose subfolders are the classes: descends into ``train``/``test`` (or ``val``)
    when both splits are there, and into a lone wrapper folder (e.g. a tar's ``train/``)."""
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    names = {p.name for p in subdirs}
    if "train" in names and names & {"test", "val"}:
        return folder / ("train" if train else ("test" if "test" in names else "val"))
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    if len(subdirs) == 1 and not files and any(p.is_dir() for p in subdirs[0].iterdir()):
        return subdirs[0]
    return folder


def imagefolder(root: str | None = None, download: bool = False, train: bool = True, *,
                mode: str = "RGB", size: int | None = None, **options: Any) -> Dataset:
    """Images stored as ``<class>/<image>`` in a folder or a .tar.gz (extracted once into the cache).

    Options: ``mode`` (PIL mode, ``RGB`` or ``L`` for grayscale), ``size`` (resize and center-crop).
    A folder holding ``train/`` and ``test/`` splits is read according to ``train``."""
    if options:
        raise UsageError(f"dataset imagefolder takes the options mode and size; got {', '.join(options)}")
    if root is None:
        raise UsageError("imagefolder needs a root: a folder or .tar.gz of <class>/<image> files")
    path = Path(root).expanduser()
    if not path.exists():
        raise UsageError(f"no image folder at {path}: expected a folder or .tar.gz of <class>/<image> files")
    folder = _class_root(extract_tar(path) if path.is_file() else path, train)
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    files, labels = [], []
    for label, name in enumerate(classes):
        found = sorted(f for f in (folder / name).rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        files += found
        labels += [label] * len(found)
    if not files:
        raise UsageError(f"no images in {folder}: expected <class>/<image> files ({', '.join(IMAGE_SUFFIXES)})")
    return ImageFiles(files, labels, classes, mode=mode, size=size)

"""Dataset factories on files the tests write themselves; errors for missing or malformed paths."""

import gzip
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from ticketforge.errors import UsageError
from ticketforge_ddpm import plugin
from ticketforge_ddpm.datasets import cifar10, cifar100, imagefolder, mnist, mnist_sample


def write_idx(path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    (gzip.open if compress else open)(path, "wb").write(header + array.astype(np.uint8).tobytes())


def write_mnist(folder, n=5, compress=True, train=True):
    folder.mkdir(parents=True, exist_ok=True)
    images = np.arange(n * 28 * 28, dtype=np.int64).reshape(n, 28, 28) % 256
    labels = np.arange(n) % 10
    prefix, ext = ("train" if train else "t10k"), (".gz" if compress else "")
    write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", images, compress)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", labels, compress)
    return images, labels


@pytest.mark.parametrize("compress", [True, False])
def test_mnist_from_idx_files(tmp_path, compress):
    images, labels = write_mnist(tmp_path, compress=compress)
    ds = mnist(str(tmp_path))
    assert len(ds) == 5
    x, y = ds[3]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and y == 3
    torch.testing.assert_close(x[0], torch.from_numpy(images[3]).float() / 255)


def test_mnist_torchvision_layout_and_test_split(tmp_path):
    write_mnist(tmp_path / "MNIST" / "raw", n=3, compress=False, train=False)
    assert len(mnist(str(tmp_path), train=False)) == 3


def test_mnist_missing_and_malformed(tmp_path):
    with pytest.raises(UsageError, match=r"no MNIST files in .*expected train-images-idx3-ubyte\(\.gz\).*--download"):
        mnist(str(tmp_path / "nowhere"))
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"not an idx file")
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"")
    with pytest.raises(UsageError, match="not a readable IDX file"):
        mnist(str(tmp_path))


def test_mnist_sample_is_embedded():
    train, test = mnist_sample(), mnist_sample(train=False)
    assert len(train) + len(test) == 9000 and len(test) == 1000
    x, y = train[0]
    assert x.shape == (1, 28, 28) and 0 <= x.min() and x.max() <= 1 and y == 5  # MNIST's first digit


def write_folder(root, classes=("cat", "dog"), per_class=3, size=8):
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.full((size, size, 3), 40 * c + i, dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")


def test_imagefolder_folder_and_tar(tmp_path):
    write_folder(tmp_path / "train")
    ds = imagefolder(str(tmp_path / "train"))
    assert len(ds) == 6 and ds.classes == ["cat", "dog"]
    x, y = ds[4]
    assert x.shape == (3, 8, 8) and y == 1 and x[0, 0, 0].item() == pytest.approx(41 / 255)
    with tarfile.open(tmp_path / "train.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "train", arcname="train")  # a wrapper folder, like the CIFAR-10 copy
    from_tar = imagefolder(str(tmp_path / "train.tar.gz"), mode="L", size=4)
    assert len(from_tar) == 6 and from_tar[0][0].shape == (1, 4, 4)
    assert imagefolder(str(tmp_path / "train.tar.gz")).files[0].parent.parent == from_tar.files[0].parent.parent


def test_imagefolder_splits_and_errors(tmp_path):
    write_folder(tmp_path / "data" / "train", per_class=2)
    write_folder(tmp_path / "data" / "test", per_class=1)
    assert len(imagefolder(str(tmp_path / "data"))) == 4
    assert len(imagefolder(str(tmp_path / "data"), train=False)) == 2
    with pytest.raises(UsageError, match="no image folder at"):
        imagefolder(str(tmp_path / "missing"))
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(UsageError, match="no images in"):
        imagefolder(str(tmp_path / "empty"))
    (tmp_path / "bad.tar.gz").write_bytes(b"garbage")
    with pytest.raises(UsageError, match="cannot extract"):
        imagefolder(str(tmp_path / "bad.tar.gz"))
    with pytest.raises(UsageError, match="takes the options mode and size"):
        imagefolder(str(tmp_path / "data"), colour=True)


def test_cifar_from_image_folders(tmp_path):
    write_folder(tmp_path / "train", size=32)
    with tarfile.open(tmp_path / "test.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "train", arcname="test")
    assert cifar10(str(tmp_path))[0][0].shape == (3, 32, 32)
    assert len(cifar10(str(tmp_path), train=False)) == 6
    with pytest.raises(UsageError, match=r"no cifar100 files in .*cifar-100-python/"):
        cifar100(str(tmp_path / "nowhere"))


def test_every_factory_has_the_protocol_signature(tmp_path):
    for name, factory in ((r.name, r.factory) for r in plugin.ticketforge_datasets()):
        if name == "mnist-sample":
            assert len(factory(root=None, download=False, train=False)) == 1000
        else:
            with pytest.raises(UsageError):
                factory(root=str(tmp_path / "absent"), download=False, train=True)

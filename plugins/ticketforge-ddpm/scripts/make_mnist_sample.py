"""Write ``src/ticketforge_ddpm/data/mnist_sample.npz``: the first N MNIST training images.

The embedded ``mnist-sample`` dataset is this file: uint8 ``images`` ``[N, 28, 28]`` and uint8
``labels`` ``[N]``, compressed with ``np.savez_compressed``. Source: the public MNIST IDX files
(``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``), by default from the project's
shared data folder (``../shared/data/mnist`` from the repository root).

    python plugins/ticketforge-ddpm/scripts/make_mnist_sample.py [--source DIR] [--count 9000]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCE = HERE.parents[2].parent / "shared" / "data" / "mnist"
OUTPUT = HERE.parent / "src" / "ticketforge_ddpm" / "data" / "mnist_sample.npz"
TRAIN_IMAGES_MD5 = "6bbc9ace898e44ae57da46a324031adb"  # of the uncompressed file, as published


def read_idx(path: Path) -> tuple[np.ndarray, bytes]:
    raw = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape), raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="folder with the MNIST IDX files")
    parser.add_argument("--count", type=int, default=9000, help="number of leading training images to keep")
    parser.add_argument("--max-bytes", type=int, default=1_500_000, help="refuse to write a larger file")
    args = parser.parse_args()

    images, raw = read_idx(args.source / "train-images-idx3-ubyte.gz")
    if hashlib.md5(raw).hexdigest() != TRAIN_IMAGES_MD5:
        raise SystemExit(f"{args.source}: train-images is not the published MNIST file (md5 mismatch)")
    labels, _ = read_idx(args.source / "train-labels-idx1-ubyte.gz")
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUTPUT, images=images[: args.count], labels=labels[: args.count])
    size = OUTPUT.stat().st_size
    if size > args.max_bytes:
        OUTPUT.unlink()
        raise SystemExit(f"{args.count} images take {size} bytes > {args.max_bytes}; lower --count")
    print(f"wrote {OUTPUT} ({args.count} images, {size} bytes)")


if __name__ == "__main__":
    main()

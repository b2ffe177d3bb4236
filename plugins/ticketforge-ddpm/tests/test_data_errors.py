"""Bad image data is one line naming the file and what to do; the data cache follows the files'
content, is verified on read, and lives where every other cache does (issues 22 and 14)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from test_datasets import write_folder, write_idx, write_mnist

import ticketforge.registry as registry_module
from ticketforge import ComponentRecord, Engine, RunConfig, hookimpl
from ticketforge.cache import cache_root
from ticketforge.cli.main import cli
from ticketforge.engine.data import cache_path, materialize
from ticketforge.errors import TicketforgeWarning
from ticketforge.registry import build_registry
from ticketforge.store import RunStore
from ticketforge_ddpm.datasets import imagefolder, mnist
from ticketforge_ddpm.evaluation.data import cache_root as evaluation_cache_root
from ticketforge_ddpm.image_folders import cache_dir, extract_tar


def _run(root: Path, out: Path, dataset: str = "imagefolder"):
    return CliRunner().invoke(cli, ["run", "--preset", "tiny", "--dataset", dataset, "--data-root", str(root),
                                    "--rounds", "0", "--steps-per-round", "1", "--device", "cpu", "--quiet",
                                    "--no-artifacts", "--out", str(out)])


def _one_line(result, code: int, *needles: str) -> None:
    assert result.exit_code == code, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in result.output, result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


# -- bad image data: one line, before training ------------------------------------------------------
def _corrupt(root: Path) -> list[str]:
    write_folder(root, size=28)
    (root / "dog" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    return [str(root / "dog" / "1.png"), "replace or delete it"]


def _mixed(root: Path) -> list[str]:
    write_folder(root, size=28)
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(root / "dog" / "1.png")
    return ["images differ in size", f"{root / 'dog' / '1.png'} is 16x16", f"{root / 'cat' / '0.png'} is 28x28",
            "resize them all to one size"]


def _not_an_image(root: Path) -> list[str]:
    write_folder(root, size=28)
    (root / "cat" / "2.png").write_text("just text")
    return [str(root / "cat" / "2.png"), "not a readable image", "replace or delete it"]


def _labels(root: Path) -> list[str]:
    write_mnist(root, n=6, compress=False)
    write_idx(root / "train-labels-idx1-ubyte", np.arange(5) % 10, compress=False)
    return ["6 images but 5 labels", str(root / "train-labels-idx1-ubyte"), "put matching files there"]


def _missing(root: Path) -> list[str]:
    return ["no MNIST files in", str(root)]  # a --data-root that does not exist (moved from tests/test_cli.py)


@pytest.mark.parametrize("make,dataset", [(_corrupt, "imagefolder"), (_mixed, "imagefolder"),
                                          (_not_an_image, "imagefolder"), (_labels, "mnist"), (_missing, "mnist")])
def test_bad_image_data_is_one_line_naming_the_file(tmp_path, make, dataset):
    root = tmp_path / "data"
    needles = make(root)
    before = sorted((p, p.stat().st_mtime_ns) for p in root.rglob("*"))
    _one_line(_run(root, tmp_path / "run", dataset), 2, *needles)
    assert sorted((p, p.stat().st_mtime_ns) for p in root.rglob("*")) == before
    assert not (tmp_path / "run" / "rounds").exists()  # refused before any round


# -- images the model does not take: refused before training ------------------------------------------
def _small_digits(root=None, download=False, train=True, **options):
    return torch.utils.data.TensorDataset(torch.rand(32, 1, 16, 16), torch.zeros(32, dtype=torch.long))


class SmallDigits:
    @hookimpl
    def ticketforge_datasets(self):
        return [ComponentRecord("small-digits", _small_digits, "16x16 images")]


def test_images_of_another_size_than_the_preset_are_refused(monkeypatch, tmp_path):
    registry = build_registry(entry_points=["ticketforge", "ticketforge-ddpm"], plugins=[SmallDigits()])
    monkeypatch.setattr(registry_module, "_registry", registry)
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", "--model", "ddpm-unet", "--preset", "tiny", "--dataset", "small-digits",
                                      "--rounds", "1", "--steps-per-round", "2", "--device", "cpu", "--out", str(out),
                                      "--quiet", "--no-artifacts"])
    _one_line(result, 2, "dataset 'small-digits' has 1x16x16 images", "model 'ddpm-unet' (preset 'tiny') "
              "expects 1x28x28", "choose a dataset of 1x28x28 images", "--model-option")
    assert RunStore(out).finished_rounds() == []
    assert not (out / "init.safetensors").exists()  # refused before any training


# -- the data cache -------------------------------------------------------------------------------
def _engine_images(root: Path, out: Path, dataset: str = "mnist") -> torch.Tensor:
    """The images training would read (the engine's own path through the cache)."""
    engine = Engine(RunConfig(preset="tiny", dataset=dataset, data_root=str(root), device="cpu", out=str(out)))
    return engine.batches().images


def test_changed_files_under_the_same_root_are_read_again(tmp_path):
    root = tmp_path / "data"
    write_mnist(root, n=6, compress=False)
    first = _engine_images(root, tmp_path / "run")
    assert list((cache_root() / "data").glob("mnist-*.pt"))  # it was cached
    images = root / "train-images-idx3-ubyte"
    stat = images.stat()
    data = bytearray(images.read_bytes())
    data[-100:] = bytes(255 - b for b in data[-100:])  # same size, other pixels
    images.write_bytes(bytes(data))
    os.utime(images, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the old mtime
    second = _engine_images(root, tmp_path / "run")
    expected = torch.from_numpy(np.frombuffer(bytes(data), dtype=np.uint8, offset=16).reshape(6, 1, 28, 28).copy())
    assert not torch.equal(first, second)
    assert torch.equal(second.cpu(), expected)


def test_imagefolder_cache_follows_file_contents(tmp_path):
    root = tmp_path / "folder"
    write_folder(root, size=8)
    ds = imagefolder(str(root))
    first = materialize(ds, cache_path("imagefolder", str(root), ds))
    Image.fromarray(np.full((8, 8, 3), 200, dtype=np.uint8)).save(root / "cat" / "0.png")
    ds = imagefolder(str(root))
    second = materialize(ds, cache_path("imagefolder", str(root), ds))
    assert int(first[0].float().mean()) == 0 and int(second[0].float().mean()) == 200


def test_unchanged_files_are_hashed_once(tmp_path, monkeypatch):
    root = tmp_path / "data"
    write_mnist(root, n=6, compress=False)
    ds = mnist(str(root))
    key = cache_path("mnist", str(root), ds)
    import builtins
    real_open, opened = builtins.open, []

    def spying_open(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spying_open)
    assert cache_path("mnist", str(root), ds) == key
    assert not [f for f in opened if f.startswith(str(root))], opened  # a stat, not a read


@pytest.mark.parametrize("damage", ["bytes", "foreign"])
def test_damaged_cache_is_rebuilt_with_a_warning(tmp_path, damage):
    root = tmp_path / "data"
    write_mnist(root, n=6, compress=False)
    ds = mnist(str(root))
    cache = cache_path("mnist", str(root), ds)
    good = materialize(ds, cache)
    if damage == "bytes":
        cache.write_bytes(cache.read_bytes()[:-10] + b"x" * 10)
    else:  # a valid torch file that is not images, with a matching checksum beside it
        import hashlib
        import io
        buf = io.BytesIO()
        torch.save({"not": "images"}, buf)
        cache.write_bytes(buf.getvalue())
        cache.with_name(cache.name + ".sha256").write_text(hashlib.sha256(buf.getvalue()).hexdigest())
    with pytest.warns(TicketforgeWarning) as caught:
        rebuilt = materialize(ds, cache)
    message = str(caught[0].message)
    assert str(cache) in message and "rebuilding it" in message and "weights_only" not in message
    assert torch.equal(rebuilt, good)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(materialize(ds, cache), good)  # rewritten: read back without a word


def test_every_cache_follows_one_root_rule(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("TICKETFORGE_CACHE", str(tmp_path / "tf"))
    assert cache_root() == cache_dir() == evaluation_cache_root() == tmp_path / "tf"
    monkeypatch.delenv("TICKETFORGE_CACHE")
    assert cache_root() == cache_dir() == evaluation_cache_root() == tmp_path / "xdg" / "ticketforge"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_root() == cache_dir() == evaluation_cache_root() == tmp_path / "home" / ".cache" / "ticketforge"
    assert evaluation_cache_root(tmp_path / "mine") == tmp_path / "mine"  # an evaluator's own cache_dir


def test_caches_write_under_ticketforge_cache_only(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("TICKETFORGE_CACHE", str(tmp_path / "tf"))
    root = tmp_path / "data"
    write_mnist(root, n=6, compress=False)
    _engine_images(root, tmp_path / "run")
    import tarfile
    write_folder(tmp_path / "imgs", size=8)
    with tarfile.open(tmp_path / "imgs.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "imgs", arcname="train")
    extract_tar(tmp_path / "imgs.tar.gz")
    from ticketforge_ddpm.evaluation.data import ImageSet
    from ticketforge_ddpm.evaluation.featurizer import FeaturizerConfig, load_or_train
    data = ImageSet.from_dataset(mnist(str(root)))
    load_or_train(data.key, lambda: data, FeaturizerConfig(arch="lenet", max_steps=1, batch_size=4))
    written = {p.relative_to(tmp_path / "tf").parts[0] for p in (tmp_path / "tf").rglob("*") if p.is_file()}
    assert {"data", "extracted", "featurizers", "fingerprints"} <= written
    assert not (tmp_path / "home").exists() and not (tmp_path / "xdg").exists()

"""Sample-quality evaluators: FID (Inception weights from a local file) and offline Frechet distances.

Every score dict records what makes it comparable: ``n_samples``, ``n_reference``, ``sampler``,
``steps``, ``featurizer`` and ``featurizer_sha256``. The reference set is the ``dataset`` given
(the run's training data), or a seeded subset of ``reference_samples`` of it; its statistics are
cached per dataset content and featurizer under ``<cache>/reference/<dataset-key>/``.

Under torchrun (``torchrun --nproc-per-node N -m ticketforge eval ...``) the sampling is sharded:
each process draws its share of ``n_samples`` with its own generator (rank 0 keeps the given one),
features are gathered in rank order, and every process computes the same scores. Rank 0 trains the
featurizer and fills the reference cache before the others read it.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from ticketforge.engine import distributed
from ticketforge.errors import UsageError
from ticketforge.metrics.frechet import feature_statistics, frechet_distance
from ticketforge.metrics.kid import kernel_distance
from ticketforge.store.atomic import atomic_write_bytes, sha256_file

from .data import ImageSet, cache_root, extract_features, generate
from .featurizer import FeaturizerConfig, load_or_train
from .inception import inception_features, load_inception, weights_path


class _LazyData:
    """The dataset read into memory on first use; ``key`` may be given to skip reading it."""

    def __init__(self, dataset: Any, key: str | None) -> None:
        self.dataset, self._key = dataset, key
        self._data: ImageSet | None = None

    def get(self) -> ImageSet:
        if self._data is None:
            self._data = ImageSet.from_dataset(self.dataset)
        return self._data

    @property
    def key(self) -> str:
        return self._key or self.get().key


class _Reuse:
    """What an evaluator keeps between its calls in one process, where ``eval --all --branches`` scores
    many networks: the dataset read (and hashed) once, each featurizer loaded once."""

    def __init__(self) -> None:
        self._data: _LazyData | None = None
        self._loaded: dict[tuple[Any, ...], Any] = {}

    def data(self, dataset: Any, key: str | None) -> _LazyData:
        if self._data is None or self._data.dataset is not dataset or self._data._key != key:
            self._data = _LazyData(dataset, key)
        return self._data

    def load(self, key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
        if key not in self._loaded:
            self._loaded[key] = make()
        return self._loaded[key]


def _cached_npz(path: Path, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if not path.exists():
        buffer = io.BytesIO()
        arrays: dict[str, Any] = compute()  # Any: numpy types savez's keywords so
        np.savez(buffer, **arrays)
        atomic_write_bytes(path, buffer.getvalue())
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}


def _sample_meta(n: int, sampler: str | None, steps: int | None) -> dict[str, Any]:
    return {"n_samples": n, "sampler": sampler or "default", "steps": steps if steps is not None else "default"}


def _samples(spec: Any, network: nn.Module, n: int, generator: torch.Generator, batch_size: int,
             sampler: str | None, steps: int | None, options: dict[str, Any]) -> Tensor:
    """This process's share of the ``n`` samples (all of them on one process), drawn with its generator."""
    ctx = distributed.current()
    if ctx.enabled and n < 2 * ctx.world_size:
        raise UsageError(f"{n} samples over {ctx.world_size} processes: give at least {2 * ctx.world_size}")
    if sampler is not None:
        options["sampler"] = sampler
    if steps is not None:
        options["steps"] = steps
    return generate(spec, network, ctx.shard_count(n), generator=ctx.generator(generator), batch_size=batch_size,
                    **options)


def _check_channels(generated: Tensor, reference: ImageSet | None) -> None:
    if reference is not None and generated.shape[1:] != reference.images.shape[1:]:
        raise UsageError(f"samples are {tuple(generated.shape[1:])} but the dataset's images are "
                         f"{tuple(reference.images.shape[1:])}: evaluate against the run's own dataset")


class FrechetEvaluator:
    """Frechet distance and KID on the features of a classifier trained on the dataset itself.

    Reported as ``fd_<arch>`` (never FID: the featurizer is not Inception), with ``kid_<arch>`` and
    ``kid_<arch>_std`` (polynomial-kernel KID over random subsets), the featurizer's sha256 and its
    held-out test accuracy. Distances are comparable only at equal sha256 and sample counts.
    """

    def __init__(self, arch: str = "lenet", *, epochs: int | None = None, max_steps: int | None = None,
                 seed: int = 0, train_batch_size: int = 128, reference_samples: int = 10000, kid_subsets: int = 100,
                 kid_subset_size: int = 1000, batch_size: int = 256, cache_dir: str | None = None,
                 dataset_key: str | None = None) -> None:
        self.config = FeaturizerConfig(arch=arch, epochs=epochs, max_steps=max_steps,
                                       batch_size=train_batch_size, seed=seed).resolved()
        self.reference_samples, self.kid_subsets, self.kid_subset_size = reference_samples, kid_subsets, kid_subset_size
        self.batch_size, self.cache_dir, self.dataset_key = batch_size, cache_dir, dataset_key
        self._reuse = _Reuse()

    def evaluate(self, spec: Any, network: nn.Module, *, dataset: Any, n_samples: int,
                 generator: torch.Generator, device: torch.device | str = "cpu", sampler: str | None = None,
                 steps: int | None = None, **options: Any) -> dict[str, Any]:
        """Train or load the featurizer, sample ``n_samples`` images, compare with the dataset.

        ``sampler``, ``steps`` and any other ``options`` go to ``spec.sample``.
        """
        data = self._reuse.data(dataset, self.dataset_key)
        ctx = distributed.current()
        with ctx.main_first():  # under torchrun rank 0 trains the featurizer and caches the reference
            feat = self._reuse.load((data.key, str(device)), lambda: load_or_train(
                data.key, data.get, self.config, device=device, cache_dir=self.cache_dir))
            arch = self.config.arch
            ref_path = (cache_root(self.cache_dir) / "reference" / data.key
                        / f"{arch}-{feat.sha256[:16]}-n{self.reference_samples}.npz")
            ref = _cached_npz(ref_path, lambda: {"features": extract_features(
                feat, data.get().subset(self.reference_samples).images, device=device, batch_size=self.batch_size
            ).astype(np.float32)})["features"]
        images = _samples(spec, network, n_samples, generator, self.batch_size, sampler, steps, options)
        _check_channels(images, data._data)
        gen = ctx.gather_rows(extract_features(feat, images, device=device, batch_size=self.batch_size))
        kid, kid_std = kernel_distance(ref, gen, subsets=self.kid_subsets, subset_size=self.kid_subset_size)
        return {
            f"fd_{arch}": frechet_distance(*feature_statistics(ref), *feature_statistics(gen)),
            f"kid_{arch}": kid, f"kid_{arch}_std": kid_std,
            **_sample_meta(n_samples, sampler, steps), "n_reference": int(ref.shape[0]),
            "featurizer": arch, "featurizer_sha256": feat.sha256,
            "featurizer_test_accuracy": feat.test_accuracy, "dataset_key": data.key,
        }


class FIDEvaluator:
    """FID on pytorch-fid's InceptionV3 pool3 features, weights from a local file.

    The score is ``fid`` at ``dims=2048``; other sizes are reported as ``fd_inception_<dims>``
    (they are not FID). Samples and reference images are quantized to 8 bits, as PNG files would be.
    ``reference_stats`` may name a pytorch-fid ``.npz`` (keys ``mu``, ``sigma``) to compare against
    instead of the dataset.
    """

    def __init__(self, inception_weights: str | None = None, *, dims: int = 2048, reference_samples: int = 50000,
                 reference_stats: str | None = None, batch_size: int = 50, cache_dir: str | None = None,
                 dataset_key: str | None = None) -> None:
        self.inception_weights, self.dims, self.reference_samples = inception_weights, dims, reference_samples
        self.reference_stats, self.batch_size = reference_stats, batch_size
        self.cache_dir, self.dataset_key = cache_dir, dataset_key
        self._reuse = _Reuse()

    def evaluate(self, spec: Any, network: nn.Module, *, dataset: Any, n_samples: int,
                 generator: torch.Generator, device: torch.device | str = "cpu", sampler: str | None = None,
                 steps: int | None = None, **options: Any) -> dict[str, Any]:
        """Sample ``n_samples`` images and compute their FID against the dataset (or ``reference_stats``)."""
        path = weights_path(options.pop("inception_weights", None) or self.inception_weights)
        sha, model = self._reuse.load((str(path), path.stat().st_mtime_ns, self.dims, str(device)), lambda: (
            sha256_file(path), load_inception(path, self.dims).to(device)))
        featurize = lambda x: inception_features(model, x)  # noqa: E731
        data = self._reuse.data(dataset, self.dataset_key)
        ctx = distributed.current()
        if self.reference_stats:
            with np.load(self.reference_stats) as npz:
                ref = {"mu": npz["mu"], "sigma": npz["sigma"], "n": np.array(npz["n"] if "n" in npz.files else -1)}
        else:
            def compute() -> dict[str, np.ndarray]:
                feats = extract_features(featurize, data.get().subset(self.reference_samples).images,
                                         device=device, batch_size=self.batch_size)
                mu, sigma = feature_statistics(feats)
                return {"mu": mu, "sigma": sigma, "n": np.array(len(feats))}
            with ctx.main_first():  # under torchrun rank 0 fills the reference cache, the others read it
                ref = _cached_npz(cache_root(self.cache_dir) / "reference" / data.key
                                  / f"inception-{sha[:16]}-d{self.dims}-n{self.reference_samples}.npz", compute)
        images = _samples(spec, network, n_samples, generator, self.batch_size, sampler, steps, options)
        _check_channels(images, data._data)
        gen = ctx.gather_rows(extract_features(featurize, images, device=device, batch_size=self.batch_size))
        name = "fid" if self.dims == 2048 else f"fd_inception_{self.dims}"
        return {
            name: frechet_distance(ref["mu"], ref["sigma"], *feature_statistics(gen)),
            **_sample_meta(n_samples, sampler, steps), "n_reference": int(ref["n"]),
            "featurizer": f"inception-v3-{self.dims}", "featurizer_sha256": sha,
        }


__all__ = ["FIDEvaluator", "FrechetEvaluator"]

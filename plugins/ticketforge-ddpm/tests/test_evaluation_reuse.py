"""An evaluator scoring many networks in one process (``eval --all --branches``) reads its dataset and
loads its featurizer once, and still scores each call on its own samples and its own dataset."""

import torch
from test_evaluation import FakeSpec, blobs
from torch.utils.data import TensorDataset

from ticketforge_ddpm.evaluation import FrechetEvaluator
from ticketforge_ddpm.evaluation import data as data_module
from ticketforge_ddpm.evaluation import evaluators as evaluators_module


def test_dataset_and_featurizer_are_loaded_once_per_evaluator(tmp_path, monkeypatch):
    reads, loads = [], []
    real_read, real_load = data_module.ImageSet.from_dataset.__func__, evaluators_module.load_or_train
    monkeypatch.setattr(data_module.ImageSet, "from_dataset",
                        classmethod(lambda cls, ds: reads.append(ds) or real_read(cls, ds)))
    monkeypatch.setattr(evaluators_module, "load_or_train", lambda *a, **k: loads.append(1) or real_load(*a, **k))
    images, labels = blobs(300, seed=0)
    dataset = TensorDataset(images, labels)
    clean, noise = blobs(60, seed=1)[0], torch.rand(60, 1, 28, 28, generator=torch.Generator().manual_seed(3))

    def score(evaluator, samples, ds=dataset):
        return evaluator.evaluate(FakeSpec(samples), torch.nn.Identity(), dataset=ds, n_samples=60,
                                  generator=torch.Generator(), device="cpu")["fd_lenet"]

    options = dict(max_steps=30, train_batch_size=32, cache_dir=str(tmp_path), kid_subsets=2, kid_subset_size=30)
    evaluator = FrechetEvaluator("lenet", **options)
    together = [score(evaluator, clean), score(evaluator, noise), score(evaluator, clean)]
    assert len(reads) == 1 and len(loads) == 1  # three networks, one dataset read, one featurizer load
    assert together[0] == together[2] != together[1]  # each call its own samples
    assert together[1] == score(FrechetEvaluator("lenet", **options), noise)  # as a fresh evaluator scores it
    before = len(reads)
    other = TensorDataset(*blobs(300, seed=5))
    assert score(evaluator, clean, other) != together[0] and len(reads) == before + 1  # another dataset: read anew

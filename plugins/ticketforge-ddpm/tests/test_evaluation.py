"""Evaluators: the offline featurizer distance ranks sample sets correctly; FID is wired up and refuses
to run without its weights. Everything runs on CPU on tiny synthetic data, with nothing downloaded."""

import hashlib
import math

import pytest
import torch
from torch.utils.data import TensorDataset

from ticketforge.errors import UsageError
from ticketforge.protocols import Evaluator
from ticketforge.registry import build_registry
from ticketforge_ddpm.evaluation import FIDEvaluator, FrechetEvaluator, plugin
from ticketforge_ddpm.evaluation.inception import (
    ENV_VAR,
    WEIGHTS_URL,
    fid_inception_v3,
    inception_features,
    load_inception,
)


def blobs(n: int, seed: int, size: int = 28) -> tuple[torch.Tensor, torch.Tensor]:
    """Grayscale images of a bright square in one of four corners (the label), with jitter and noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    images = 0.1 * torch.rand(n, 1, size, size, generator=g)
    for i, label in enumerate(labels.tolist()):
        y, x = 3 + 13 * (label // 2), 3 + 13 * (label % 2)
        dy, dx = torch.randint(-2, 3, (2,), generator=g).tolist()
        images[i, :, y + dy:y + dy + 9, x + dx:x + dx + 9] += 0.8
    return images.clamp(0, 1), labels


class FakeSpec:
    """A model spec whose 'samples' are given images (sampler options are recorded and ignored)."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images, self.offset, self.calls = images, 0, []

    def sample(self, network, n, *, generator=None, **options):
        self.calls.append(options)
        out = self.images[self.offset:self.offset + n]
        self.offset += n
        return out


@pytest.fixture(scope="module")
def lenet_scores(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    train_images, train_labels = blobs(600, seed=0)
    dataset = TensorDataset(train_images, train_labels)
    clean, _ = blobs(200, seed=1)
    g = torch.Generator().manual_seed(2)
    noised = (clean + 0.35 * torch.randn(clean.shape, generator=g)).clamp(0, 1)
    noise = torch.rand(clean.shape, generator=g)
    evaluator = FrechetEvaluator("lenet", max_steps=100, train_batch_size=32, cache_dir=str(cache),
                                 kid_subsets=10, kid_subset_size=100)
    scores = {}
    for name, images in [("clean", clean), ("noised", noised), ("noise", noise)]:
        scores[name] = evaluator.evaluate(FakeSpec(images), torch.nn.Identity(), dataset=dataset, n_samples=200,
                                          generator=torch.Generator(), device="cpu", sampler="ddim", steps=10)
    return scores, cache


def test_featurizer_distance_ranks_clean_noised_noise(lenet_scores):
    scores, _ = lenet_scores
    fd = {k: v["fd_lenet"] for k, v in scores.items()}
    assert fd["clean"] < fd["noised"] < fd["noise"], fd
    kid = {k: v["kid_lenet"] for k, v in scores.items()}
    assert kid["clean"] < kid["noised"] < kid["noise"], kid


def test_scores_record_how_they_were_made(lenet_scores):
    scores, cache = lenet_scores
    result = scores["clean"]
    assert result["n_samples"] == 200 and result["n_reference"] == 600
    assert (result["sampler"], result["steps"]) == ("ddim", 10)
    assert len(result["featurizer_sha256"]) == 64
    assert result["featurizer_test_accuracy"] > 0.9
    assert not any("fid" in key for key in result)  # never called FID
    # trained once: every score used the same cached featurizer
    assert len({s["featurizer_sha256"] for s in scores.values()}) == 1
    assert len(list(cache.glob("featurizers/*/lenet-*.safetensors"))) == 1
    assert len(list(cache.glob("reference/*/lenet-*.npz"))) == 1


def test_unlabeled_dataset_is_refused(tmp_path):
    dataset = TensorDataset(torch.rand(20, 1, 28, 28), torch.zeros(20, dtype=torch.long))
    with pytest.raises(UsageError, match="two class labels"):
        FrechetEvaluator(max_steps=1, cache_dir=str(tmp_path)).evaluate(
            FakeSpec(torch.rand(4, 1, 28, 28)), torch.nn.Identity(), dataset=dataset, n_samples=4,
            generator=torch.Generator(), device="cpu")


def test_missing_inception_weights_is_a_usage_error(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    dataset = TensorDataset(torch.rand(4, 3, 8, 8), torch.zeros(4))
    with pytest.raises(UsageError) as info:
        FIDEvaluator().evaluate(FakeSpec(torch.rand(4, 3, 8, 8)), torch.nn.Identity(), dataset=dataset,
                                n_samples=4, generator=torch.Generator(), device="cpu")
    message = str(info.value)
    assert "\n" not in message and WEIGHTS_URL in message and ENV_VAR in message
    monkeypatch.setenv(ENV_VAR, "/nonexistent/pt_inception.pth")
    with pytest.raises(UsageError, match="does not exist"):
        FIDEvaluator().evaluate(FakeSpec(torch.rand(4, 3, 8, 8)), torch.nn.Identity(), dataset=dataset,
                                n_samples=4, generator=torch.Generator(), device="cpu")


@pytest.fixture(scope="module")
def random_inception_weights(tmp_path_factory):
    """A RANDOMLY initialised FID Inception saved like the real file: tests the pipeline, never a score."""
    pytest.importorskip("pytorch_fid")
    path = tmp_path_factory.mktemp("inception") / "random-inception.pth"
    torch.manual_seed(0)
    torch.save(fid_inception_v3(None).state_dict(), path)
    return path


def test_inception_pool3_features_on_tiny_grayscale_images(random_inception_weights):
    model = load_inception(random_inception_weights, 2048)
    feats = inception_features(model, torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8))
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all()


def test_fid_wiring_with_random_inception(random_inception_weights, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(random_inception_weights))
    g = torch.Generator().manual_seed(0)
    dataset = TensorDataset(torch.rand(12, 3, 16, 16, generator=g), torch.zeros(12))
    spec = FakeSpec(torch.rand(12, 3, 16, 16, generator=g))
    result = FIDEvaluator(dims=64, batch_size=6, cache_dir=str(tmp_path)).evaluate(
        spec, torch.nn.Identity(), dataset=dataset, n_samples=12, generator=g, device="cpu", sampler="ddpm")
    assert "fid" not in result  # 64-d features are not FID
    assert math.isfinite(result["fd_inception_64"]) and result["fd_inception_64"] > -1e-6
    assert result["n_reference"] == 12 and result["featurizer"] == "inception-v3-64"
    assert len(spec.calls) == 2 and spec.calls[0] == {"sampler": "ddpm"}
    assert result["featurizer_sha256"] == hashlib.sha256(random_inception_weights.read_bytes()).hexdigest()
    cached = list(tmp_path.glob("reference/*/inception-*-d64-n50000.npz"))
    assert len(cached) == 1
    # a pytorch-fid statistics file (mu, sigma) can stand in for the dataset
    spec.offset = 0
    again = FIDEvaluator(dims=64, batch_size=6, reference_stats=str(cached[0])).evaluate(
        spec, torch.nn.Identity(), dataset=None, n_samples=12, generator=g, device="cpu", sampler="ddpm")
    assert again["fd_inception_64"] == pytest.approx(result["fd_inception_64"])


def test_registration_and_protocol():
    registry = build_registry(entry_points=False, plugins=[plugin])
    assert {"fid", "fd-lenet", "fd-resnet"} <= set(registry.records("evaluators"))
    evaluator = registry.create("evaluators", "fd-resnet", max_steps=5)
    assert isinstance(evaluator, Evaluator) and isinstance(registry.create("evaluators", "fid"), Evaluator)


def test_the_featurizer_trains_under_reproducible_kernels_and_restores_the_process_settings(monkeypatch):
    """Retrained in a later session, the featurizer must get the same sha256 (scores compare only under
    one featurizer): deterministic cuDNN and no TF32 while it trains, whatever the process chose."""
    from ticketforge_ddpm.evaluation import featurizer
    from ticketforge_ddpm.evaluation.data import ImageSet

    seen = []
    lenet = featurizer.ARCHITECTURES["lenet"]

    def spying(*args, **kwargs):
        net = lenet(*args, **kwargs)
        net.register_forward_pre_hook(lambda module, inputs: seen.append(
            (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)) if module.training else None)
        return net

    monkeypatch.setitem(featurizer.ARCHITECTURES, "lenet", spying)
    images, labels = blobs(32, 0)
    data = ImageSet((images * 255).to(torch.uint8), labels)
    # torch's backend flags are properties of module objects: set and restored by hand, not by monkeypatch
    before = torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.benchmark = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        featurizer.train_classifier(data, featurizer.FeaturizerConfig("lenet", max_steps=2, batch_size=8))
        after = torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32 = before
    assert seen == [(True, False, False, False)] * 2
    assert after == (True, True)  # the process's own again

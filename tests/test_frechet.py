"""Frechet distance and KID against closed forms."""

import numpy as np
import pytest
from helpers import core_registry

from ticketforge.errors import TicketforgeError
from ticketforge.metrics.frechet import feature_statistics, frechet_distance
from ticketforge.metrics.kid import kernel_distance


def test_diagonal_covariances_match_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = rng.uniform(0.1, 3.0, 6), rng.uniform(0.1, 3.0, 6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-9)


def test_identical_statistics_give_zero():
    feats = np.random.default_rng(1).normal(size=(200, 8))
    mu, sigma = feature_statistics(feats)
    assert sigma.shape == (8, 8)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-6)


def test_singular_covariances_stay_finite():
    feats = np.random.default_rng(2).normal(size=(5, 16))  # rank 4 < 16
    mu, sigma = feature_statistics(feats)
    value = frechet_distance(mu, sigma, mu + 1.0, sigma)
    assert np.isfinite(value) and value == pytest.approx(16.0, abs=1e-2)


def test_large_imaginary_part_is_an_error():
    sigma = np.array([[1.0, 0.0], [0.0, -1.0]])  # not a covariance: sqrt of -1 is imaginary
    with pytest.raises(TicketforgeError, match="imaginary"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), sigma)


def test_shape_mismatch():
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def test_kid_near_zero_for_same_distribution_and_positive_otherwise():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(300, 10)), rng.normal(size=(300, 10))
    same, _ = kernel_distance(a, b, subsets=20, subset_size=100)
    shifted, std = kernel_distance(a, b + 1.0, subsets=20, subset_size=100)
    assert abs(same) < 0.05 and shifted > 0.5 and std >= 0


# -- ``ticketforge eval`` stores scores with the round; ``ticketforge report`` shows them ---------------
class _MeanEvaluator:
    def evaluate(self, spec, network, *, dataset, n_samples, generator, device, **options):
        images = spec.sample(network, n_samples, generator=generator)
        return {"mean_pixel": float(images.detach().mean()), "n_samples": n_samples, "sampler": options["sampler"],
                "steps": options["steps"], "featurizer_sha256": "0" * 64}


def test_eval_and_report_commands(toy_config, monkeypatch, tmp_path):
    import dataclasses

    from click.testing import CliRunner

    import ticketforge.registry as reg
    from ticketforge import ComponentRecord, Engine, hookimpl
    from ticketforge.cli.main import cli
    from ticketforge.store import RunStore

    class Plugin:
        @hookimpl
        def ticketforge_evaluators(self):
            return [ComponentRecord("mean-pixel", _MeanEvaluator, "test evaluator")]

    registry = core_registry(Plugin())
    monkeypatch.setattr(reg, "_registry", registry)
    Engine(dataclasses.replace(toy_config, rounds=1, steps_per_round=10), registry=registry).run()
    runner = CliRunner()
    result = runner.invoke(cli, ["eval", toy_config.out, "--all", "--evaluator", "mean-pixel", "--samples", "8",
                                 "--steps", "7", "--device", "cpu"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    store = RunStore(toy_config.out)
    stored = [store.round_record(k)["metrics"]["mean-pixel"] for k in store.finished_rounds()]
    assert len(stored) == 2 and all(s["n_samples"] == 8 and s["steps"] == 7 and s["seed"] == 0 for s in stored)
    assert all(s["precision"] == "fp32" and s["compile"] is False for s in stored)  # auto on a CPU
    result = runner.invoke(cli, ["eval", toy_config.out, "--round", "1", "--evaluator", "mean-pixel", "--samples", "8",
                                 "--device", "cpu", "--precision", "bf16"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert RunStore(toy_config.out).round_record(1)["metrics"]["mean-pixel"]["precision"] == "bf16"
    both = runner.invoke(cli, ["eval", toy_config.out, "--all", "--round", "1", "--evaluator", "mean-pixel"])
    assert both.exit_code == 2
    out = tmp_path / "report"
    result = runner.invoke(cli, ["report", toy_config.out, "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    text = (out / "report.md").read_text()
    assert "mean_pixel" in text and "theoretical" in text and "(n=8, ddim 7)" in text
    assert (out / "score-mean-pixel.png").exists() and (out / "cka.png").exists()

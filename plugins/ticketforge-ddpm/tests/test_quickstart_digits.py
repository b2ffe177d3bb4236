"""benchmarks/quickstart_digits.py: the share of round 0's pictured samples the fd-lenet LeNet is sure of.

The 80% bar itself needs the full default run (docs/performance.md); these tests check the mechanics.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("ticketforge_ddpm")

from PIL import Image  # noqa: E402
from test_experiments import load_script  # noqa: E402  (this folder's script loader)

from ticketforge import Engine, RunConfig  # noqa: E402
from ticketforge_ddpm import images, presets  # noqa: E402
from ticketforge_ddpm.datasets import mnist_sample  # noqa: E402
from ticketforge_ddpm.evaluation.data import ImageSet  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "quickstart_digits.py"
digits = load_script(SCRIPT)


class Fixed(nn.Module):
    """A classifier whose logits are given, whatever the images."""

    def __init__(self, logits: list[list[float]]) -> None:
        super().__init__()
        self.logits = torch.tensor(logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.min() >= -1 and x.max() <= 1  # fd-lenet's input range
        return self.logits[: x.shape[0]]


def test_the_fraction_counts_the_images_given_one_class_at_the_threshold_or_above():
    sure, unsure = [9.0] + [0.0] * 9, [2.0, 2.0] + [0.0] * 8  # p = 0.9989 and 0.32
    batch = torch.zeros(4, 1, 28, 28, dtype=torch.uint8)
    assert digits.confident_fraction(Fixed([sure, unsure, sure, unsure]), batch) == 0.5
    assert digits.confident_fraction(Fixed([sure, sure, sure, unsure]), batch) == 0.75
    assert digits.confident_fraction(Fixed([unsure] * 4), batch, threshold=0.3) == 1.0


@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    """The fd-lenet classifier of the embedded sample, briefly trained (300 steps instead of 10 epochs)."""
    with torch.random.fork_rng():
        torch.set_num_threads(1)
        return digits.fd_lenet(mnist_sample(), str(tmp_path_factory.mktemp("cache")), max_steps=300)[0]


def test_a_trained_lenet_is_sure_of_real_digits_and_not_of_noise(lenet):
    real = ImageSet.from_dataset(mnist_sample(train=False)).images[:256]
    gen = torch.Generator().manual_seed(0)
    noise = (torch.rand(256, 1, 28, 28, generator=gen) * 255).to(torch.uint8)
    gaussian = (torch.randn(256, 1, 28, 28, generator=gen) * 0.5 + 0.5).clamp(0, 1)
    assert digits.confident_fraction(lenet, real) > 0.5
    assert digits.confident_fraction(lenet, noise) < 0.1  # the planted bug: noise instead of samples
    assert digits.confident_fraction(lenet, gaussian) < 0.1


@pytest.fixture
def small_pictures(monkeypatch):
    """The quickstart preset drawing 6 samples of 3 steps for its pictures (its real 64 x 50 are slow)."""
    quick = presets.PRESETS["quickstart"]
    monkeypatch.setitem(presets.PRESETS, "quickstart", dataclasses.replace(
        quick, artifacts=presets.ArtifactSettings(n=6, steps=3, eta=1.0, scale=1)))


@pytest.fixture
def short_run(tmp_path, small_pictures):
    out = tmp_path / "run"
    with torch.random.fork_rng():
        Engine(RunConfig(preset="quickstart", rounds=0, steps_per_round=3, batch_size=4, device="cpu", threads=1,
                         out=str(out), log_every=3, seed=5)).run()
    return out


def _pictured(run: Path) -> np.ndarray:
    """The samples' part of round 0's samples.png (below its caption row), as pixels."""
    picture = np.asarray(Image.open(run / "rounds" / "0000" / "samples.png").convert("L"))
    return picture[images.BAND:]


def test_the_script_measures_the_very_samples_of_samples_png(short_run):
    drawn = digits.round_samples(short_run)
    assert drawn.dtype == torch.uint8 and drawn.shape == (6, 1, 28, 28)
    grid = images.grid_image(drawn.float() / 255)[0].mul(255).round().to(torch.uint8).numpy()
    assert np.array_equal(grid, _pictured(short_run))
    other = digits.round_samples(short_run, seed=1)  # what a wrong seed would measure
    assert not np.array_equal(images.grid_image(other.float() / 255)[0].mul(255).round().to(torch.uint8).numpy(),
                              _pictured(short_run))


def test_the_command_prints_the_fraction_and_its_ceiling(short_run, tmp_path, capsys):
    with torch.random.fork_rng():
        report = digits.main([str(short_run), "--cache-dir", str(tmp_path / "cache"), "--classifier-max-steps", "20"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["fraction"] == report["fraction"] and 0.0 <= report["fraction"] <= 1.0
    assert report["samples"] == 6 and report["round"] == 0 and report["threshold"] == 0.9
    assert 0.0 <= report["held_out_fraction"] <= 1.0 and report["held_out_images"] == 1000
    assert len(report["classifier"]["sha256"]) == 64


def test_a_folder_that_is_no_run_is_one_line_and_no_traceback(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("error: "), done.stderr

"""One rank of a sharded Frechet evaluation (what torchrun would start), for test_evaluation_ddp.py.

Usage: RANK=r WORLD_SIZE=n ... python run_eval_ddp.py CACHE_DIR REPORT_DIR
Writes REPORT_DIR/rank<r>.json: the scores, and the images this rank drew (as a list).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from ticketforge.engine import distributed
from ticketforge_ddpm.evaluation import FrechetEvaluator


class NoiseSpec:
    """'Samples' are uniform noise from the generator: each rank's draw shows which generator it used."""

    def __init__(self) -> None:
        self.drawn: list[torch.Tensor] = []

    def sample(self, network, n, *, generator=None, **options):
        images = torch.rand(n, 1, 28, 28, generator=generator)
        self.drawn.append(images)
        return images


def dataset() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.rand(120, 1, 28, 28, generator=g), torch.arange(120) % 3)


def evaluator(cache: str) -> FrechetEvaluator:
    return FrechetEvaluator("lenet", max_steps=5, train_batch_size=16, cache_dir=cache, kid_subsets=4,
                            kid_subset_size=10, batch_size=8)


def main(cache: str, report: Path) -> None:
    distributed.setup(torch.device("cpu"))
    spec = NoiseSpec()
    scores = evaluator(cache).evaluate(spec, torch.nn.Identity(), dataset=dataset(), n_samples=21,
                                       generator=torch.Generator().manual_seed(7), device="cpu")
    report.mkdir(parents=True, exist_ok=True)
    (report / f"rank{os.environ['RANK']}.json").write_text(json.dumps({
        "scores": scores, "drawn": torch.cat(spec.drawn).tolist()}))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))

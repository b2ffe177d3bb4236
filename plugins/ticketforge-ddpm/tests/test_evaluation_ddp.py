"""A Frechet evaluation sharded over two gloo ranks on the loopback scores what one process scores
on the same samples: each rank draws its share with its own generator, the features are gathered."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

import run_eval_ddp  # noqa: E402

from ticketforge.testing import launch_ranks  # noqa: E402

RUNNER = Path(__file__).parent / "run_eval_ddp.py"


def test_two_rank_evaluation_gathers_every_sample(tmp_path):
    cache, report = tmp_path / "cache", tmp_path / "report"
    results = launch_ranks(RUNNER, cache, report, world=2)
    assert [code for code, _ in results] == [0, 0], "\n".join(out for _, out in results)
    r0, r1 = (json.loads((report / f"rank{r}.json").read_text()) for r in range(2))
    assert r0["scores"] == r1["scores"] and r0["scores"]["n_samples"] == 21
    assert (len(r0["drawn"]), len(r1["drawn"])) == (11, 10)  # 21 samples: rank 0 draws one more
    first = torch.tensor(r0["drawn"])
    assert torch.equal(first, torch.rand(11, 1, 28, 28, generator=torch.Generator().manual_seed(7)))
    assert not torch.equal(first[:10], torch.tensor(r1["drawn"]))  # rank 1 has its own generator

    class Replay:  # the same 21 samples, drawn by one process
        images, offset = torch.tensor(r0["drawn"] + r1["drawn"]), 0

        def sample(self, network, n, *, generator=None, **options):
            self.offset += n
            return self.images[self.offset - n:self.offset]

    single = run_eval_ddp.evaluator(str(cache)).evaluate(
        Replay(), torch.nn.Identity(), dataset=run_eval_ddp.dataset(), n_samples=21,
        generator=torch.Generator().manual_seed(7), device="cpu")
    key = next(k for k in single if k.startswith("fd_"))
    assert r0["scores"][key] == pytest.approx(single[key], rel=1e-5)  # float32 features, other batch splits
    assert r0["scores"]["featurizer_sha256"] == single["featurizer_sha256"]  # one featurizer, trained by rank 0

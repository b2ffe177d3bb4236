"""Several processes (torchrun): two gloo ranks on the loopback train the toy model like one process.

Each rank is a subprocess of ``run_toy_ddp.py`` with the environment torchrun would give it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from ticketforge import Engine
from ticketforge.engine.data import BatchSource
from ticketforge.engine.distributed import Distributed
from ticketforge.errors import ConfigError
from ticketforge.store import RunStore, sha256_file
from ticketforge.store.atomic import TEMP_SUFFIX
from ticketforge.testing import launch_ranks

RUNNER = Path(__file__).parent / "run_toy_ddp.py"
TIMING = {"seconds", "steps_per_s"}


def _launch(out: Path, report: Path, world: int = 2, *args: str) -> list[int]:
    """Start ``world`` ranks on the loopback and wait for all of them; their exit codes."""
    results = launch_ranks(RUNNER, out, report, *args, world=world)
    assert all(code in (0, 3) for code, _ in results), "\n".join(out for _, out in results)
    return [code for code, _ in results]


def _reports(report: Path, world: int = 2) -> list[dict]:
    return [json.loads((report / f"rank{r}.json").read_text()) for r in range(world)]


def _untimed(record: dict) -> dict:
    return {**record, "metrics": {k: v for k, v in record["metrics"].items() if k not in TIMING}}


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    base = tmp_path_factory.mktemp("ddp")
    _launch(base / "run", base / "report")
    return base / "run", _reports(base / "report")


def test_two_ranks_train_the_same_ticket_and_one_writes_the_run(two_ranks, toy_config, registry):
    run, (r0, r1) = two_ranks
    # identical masks (every rank computed them) and identical weights after DDP training
    assert r0["masks"] == r1["masks"] and set(r0["masks"]) == {"0", "1", "2"}
    assert r0["final_weights"] == r1["final_weights"]
    assert [_untimed(r) for r in r0["records"]] == [_untimed(r) for r in r1["records"]]
    assert r0["world_size"] == r1["world_size"] == 2
    # the run inspects like a single-process run: same rounds, same record shape
    store = RunStore(run)
    single = Engine(dataclasses.replace(toy_config, log_every=5, checkpoint_every=5), registry=registry).run()
    assert store.finished_rounds() == [0, 1, 2]
    for k, ref in enumerate(single):
        rec = store.round_record(k)
        assert rec["mask_sha256"] == r0["masks"][str(k)]
        assert set(rec) == set(ref) and set(rec["metrics"]) == set(ref["metrics"])
        assert rec["metrics"]["world_size"] == 2 and ref["metrics"]["world_size"] == 1
        assert rec["sparsity"] == pytest.approx(ref["sparsity"], abs=1e-9)
    assert store.read_config()["world_size"] == 2
    # the loss of a 2-rank round is the 1-rank loss up to the different noise draws
    assert store.round_record(0)["metrics"]["loss"] == pytest.approx(single[0]["metrics"]["loss"], rel=0.35)
    logs = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    single_logs = [json.loads(line) for line in (Path(toy_config.out) / "train_log.jsonl").read_text().splitlines()]
    assert logs[0]["loss"] == pytest.approx(single_logs[0]["loss"], rel=0.1)
    # one writer: every log line once, no temp file, a manifest that matches the files
    assert [(x["round"], x["step"]) for x in logs] == [(x["round"], x["step"]) for x in single_logs]
    assert not [p for p in run.rglob("*") if p.name.endswith((".tmp", TEMP_SUFFIX))]
    manifest = json.loads((run / "manifest.json").read_text())["files"]
    assert all(sha256_file(run / rel) == digest for rel, digest in manifest.items())
    assert "checkpoint.pt" not in manifest


def test_interrupted_two_rank_run_resumes_to_the_same_weights(two_ranks, tmp_path):
    _, (reference, _) = two_ranks
    out, report = tmp_path / "run", tmp_path / "report"
    assert _launch(out, report, 2, "--stop-at", "1:10") == [3, 3]
    ckpt = RunStore(out).read_checkpoint("checkpoint.pt")
    assert (ckpt["round"], ckpt["step"], len(ckpt["ranks"])) == (1, 10, 2)  # every rank's generators
    _launch(out, report)
    for r in _reports(report):
        assert r["final_weights"] == reference["final_weights"]  # bitwise: each rank's noise stream went on
        assert r["masks"] == {k: v for k, v in reference["masks"].items() if k != "0"}


def test_each_rank_takes_its_slice_of_the_global_batch():
    images = torch.randint(0, 256, (40, 1, 4, 4), dtype=torch.uint8)
    source = BatchSource(images, 8, seed=0, device=torch.device("cpu"))
    shards = [Distributed(rank=r, world_size=2).shard(source) for r in range(2)]
    for step in (0, 4, 5):
        whole = source.indices(1, step)
        assert torch.equal(torch.cat([s.indices(1, step) for s in shards]), whole)
        assert torch.equal(torch.cat([s.batch(1, step) for s in shards]), source.batch(1, step))
    assert Distributed().shard(source) is source


def test_seeds_samples_and_batch_size_per_rank():
    one, ranks = Distributed(), [Distributed(rank=r, world_size=3) for r in range(3)]
    assert one.seed(7) == 7 and len({d.seed(7) for d in ranks}) == 3
    assert [d.shard_count(10) for d in ranks] == [4, 3, 3]
    g = torch.Generator().manual_seed(5)
    assert ranks[0].generator(g) is g and ranks[1].generator(g).initial_seed() != 5
    with pytest.raises(ConfigError, match="does not split over 3 processes"):
        ranks[0].check_batch_size(16)


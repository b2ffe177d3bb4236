"""The run store under torchrun (distributed.MainStore): rank 0 alone touches the folder, every rank
gets rank 0's answers and exceptions. Two ranks are simulated in one process, each with a folder of
its own (no shared file system): rank 0 runs each call and hands its outcome to rank 1."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import pytest
import torch

from ticketforge.engine.distributed import Distributed, MainStore
from ticketforge.errors import CheckpointError, ConfigError
from ticketforge.store import RunStore


@dataclass
class _Rank(Distributed):
    """One of two ranks whose ``on_main`` is a broadcast through ``channel`` (rank 0 calls first)."""

    channel: list[tuple[bool, Any]] = field(default_factory=list)

    def on_main(self, fn: Callable[[], Any]) -> Any:
        if self.is_main:
            try:
                self.channel.append((True, fn()))
            except Exception as exc:
                self.channel.append((False, exc))
        ok, value = self.channel[-1] if self.is_main else self.channel.pop(0)
        if not ok:
            raise value
        return value


@pytest.fixture
def ranks(tmp_path):
    channel: list[tuple[bool, Any]] = []
    return [MainStore(RunStore(tmp_path / f"rank{r}"), _Rank(rank=r, world_size=2, channel=channel))
            for r in (0, 1)]


def _both(ranks, method: str, *args: Any) -> list[Any]:
    """Call ``method`` on rank 0, then on rank 1 (as both would reach it); both results."""
    return [getattr(store, method)(*args) for store in ranks]


def test_writes_happen_on_rank_0_only(ranks, tmp_path):
    weights = {"w": torch.arange(4.0)}
    _both(ranks, "write_config", {"seed": 0})
    _both(ranks, "write_tensors", "rounds/0000/weights.safetensors", weights)
    _both(ranks, "write_json", "rounds/0000/record.json", {"round": 0})
    _both(ranks, "write_checkpoint", "checkpoint.pt", {"step": 3})
    _both(ranks, "append_log", {"round": 0, "step": 1})
    (tmp_path / "rank0" / "grid.png").write_bytes(b"png")
    _both(ranks, "write_file", "grid.png")
    _both(ranks, "forget", "checkpoint.pt")
    _both(ranks, "clean")
    assert not (tmp_path / "rank1").exists()
    written = RunStore(tmp_path / "rank0")
    assert written.read_config() == {"seed": 0} and written.finished_rounds() == [0]
    assert set(written.manifest) == {"config.json", "rounds/0000/weights.safetensors", "rounds/0000/record.json",
                                     "grid.png"}
    assert len((tmp_path / "rank0" / "train_log.jsonl").read_text().splitlines()) == 1


def test_reads_give_every_rank_rank_0s_answer(ranks):
    _both(ranks, "write_config", {"seed": 0})
    _both(ranks, "write_tensors", "rounds/0000/masks.safetensors", {"m": torch.ones(3, dtype=torch.bool)})
    _both(ranks, "write_json", "rounds/0000/record.json", {"round": 0})
    _both(ranks, "write_checkpoint", "checkpoint.pt", {"step": 3})
    assert _both(ranks, "exists") == [True, True]
    assert _both(ranks, "has", "checkpoint.pt") == [True, True]
    assert _both(ranks, "read_config") == [{"seed": 0}] * 2
    assert _both(ranks, "finished_rounds") == [[0], [0]]
    assert _both(ranks, "round_record", 0) == [{"round": 0}] * 2
    assert _both(ranks, "read_json", "rounds/0000/record.json") == [{"round": 0}] * 2
    assert [c["step"] for c in _both(ranks, "read_checkpoint", "checkpoint.pt")] == [3, 3]
    assert [m["m"].tolist() for m in _both(ranks, "read_tensors", "rounds/0000/masks.safetensors")] == [[True] * 3] * 2
    assert ranks[1].path.name == "rank1"  # the path is each rank's own (messages name it)


def test_rank_0s_exception_is_raised_on_every_rank(ranks):
    for store in ranks:
        with pytest.raises(CheckpointError, match="rank0"):
            store.read_tensors("init.safetensors")
    for store in ranks:
        with pytest.raises(ConfigError, match="not finished"):
            store.round_record(2)


def test_it_is_no_proxy():
    """Every method is spelled out: a store method it lacks fails loudly instead of running on every rank."""
    assert not hasattr(MainStore, "__getattr__")
    with pytest.raises(AttributeError):
        MainStore(RunStore("x"), Distributed()).manifest  # noqa: B018

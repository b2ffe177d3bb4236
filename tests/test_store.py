"""Runs that survive: resume after SIGKILL, atomic files, checksums, the lock, NaN stops, export."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import run_toy
import torch
from helpers import StopAt, core_registry

from ticketforge import Engine, export_ticket, load_round, load_ticket
from ticketforge.errors import CheckpointError, ConfigError, TicketforgeError, TrainingDiverged
from ticketforge.store import RunLock, RunStore
from ticketforge.store.atomic import atomic_write_bytes, is_temp_file

RUNNER = Path(__file__).parent / "run_toy.py"


def _toy(out: Path, *args: str) -> subprocess.CompletedProcess:
    """tests/run_toy.py in a process of its own: for a SIGKILL, which nothing in this process may survive."""
    return subprocess.run([sys.executable, str(RUNNER), str(out), *args], capture_output=True, text=True, timeout=300)


def _toy_here(out: Path, *plugins: object) -> list[dict]:
    """The same run (the same command, resumed) in this process."""
    return Engine(run_toy.run_config(out), registry=core_registry(*plugins)).run()



def _digests(out: Path) -> list[str]:
    store = RunStore(out)
    return [store.round_record(k)["mask_sha256"] for k in store.finished_rounds()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> list[str]:
    out = tmp_path_factory.mktemp("ref") / "run"
    _toy_here(out)
    return _digests(out)


@pytest.mark.parametrize("kill", [["--kill-at-step", "2:15"], ["--kill-in-write", "checkpoint.pt"],
                                  ["--kill-in-write", "record.json"], ["--kill-in-write", "manifest.json"]])
def test_sigkill_then_same_command_resumes_to_identical_masks(tmp_path, reference, kill):
    out = tmp_path / "run"
    killed = _toy(out, *kill)
    assert killed.returncode == -9, killed.stderr
    assert len(_digests(out)) < 3
    if kill[0] == "--kill-at-step":  # mid-round: the step-10 checkpoint of round 2 is what it resumes from
        store = RunStore(out)
        assert store.finished_rounds() == [0, 1] and store.read_checkpoint("checkpoint.pt")["step"] == 10
    _toy_here(out)  # the killed process's lock and files, resumed by another process
    assert _digests(out) == reference
    assert not [p for p in out.rglob("*") if is_temp_file(p.name)]


def test_changed_config_under_same_out_is_refused(toy_config, registry):
    Engine(dataclasses.replace(toy_config, rounds=1), registry=registry).run()
    with pytest.raises(ConfigError, match=r"p: 20.0 -> 30.0"):
        Engine(dataclasses.replace(toy_config, rounds=1, p=30.0), registry=registry).run()
    # --fresh starts over
    records = Engine(dataclasses.replace(toy_config, rounds=1, p=30.0), registry=registry, fresh=True).run()
    assert records[1]["sparsity"] == pytest.approx(0.3, abs=0.01)


def test_second_process_on_the_same_run_is_refused(toy_config, registry):
    with RunLock(toy_config.out):
        with pytest.raises(TicketforgeError, match="in use by pid"):
            Engine(toy_config, registry=registry).run()
    Engine(dataclasses.replace(toy_config, rounds=0), registry=registry).run()  # lock released


def test_corrupt_truncated_and_foreign_files_are_one_line_errors(toy_config, registry):
    Engine(dataclasses.replace(toy_config, rounds=1), registry=registry).run()
    run = Path(toy_config.out)
    weights = run / "rounds/0001/weights.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="fails its checksum"):
        load_round(run, 1, ema=False, registry=registry)
    # rewrite with a valid but foreign safetensors file, registered in the manifest: wrong model
    store = RunStore(run)
    store.write_tensors("rounds/0001/weights.safetensors", {"something.else": torch.zeros(3)})
    with pytest.raises(CheckpointError, match="do not belong to this model"):
        load_round(run, 1, ema=False, registry=registry)
    # a pickle with code in it is never executed: weights_only loading refuses it
    store.write_bytes("checkpoint.pt", b"\x80\x04\x95garbage")
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        store.read_checkpoint("checkpoint.pt")
    (run / "manifest.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="manifest.json is corrupt"):
        RunStore(run).finished_rounds()


def _stopped_mid_round_1(out: Path) -> RunStore:
    with pytest.raises(KeyboardInterrupt):
        _toy_here(out, StopAt(1, 15))
    store = RunStore(out)
    assert store.finished_rounds() == [0] and store.read_checkpoint("checkpoint.pt")["step"] == 10
    return store


def test_damaged_checkpoint_restarts_the_round_instead_of_failing(tmp_path, reference):
    out = tmp_path / "run"
    _stopped_mid_round_1(out)
    ckpt = out / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])  # truncated behind the manifest's back
    _toy_here(out)
    assert _digests(out) == reference


def test_a_checkpoint_refused_part_way_leaves_none_of_its_state(tmp_path, reference):
    """Its weights load, its optimizer state does not: the round restarts from its start weights,
    not from the checkpoint's weights at step 0."""
    out = tmp_path / "run"
    store = _stopped_mid_round_1(out)
    ckpt = store.read_checkpoint("checkpoint.pt")
    store.write_checkpoint("checkpoint.pt", {**ckpt, "optimizer": {"state": {}, "param_groups": []}})
    _toy_here(out)
    assert _digests(out) == reference


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(toy_config, registry):
    import toy_plugin

    class Exploding(toy_plugin.ToySpec):
        calls = 0

        def loss(self, network, batch, generator=None):
            Exploding.calls += 1
            loss = super().loss(network, batch, generator)
            return loss * float("nan") if Exploding.calls > 12 else loss

    with pytest.raises(TrainingDiverged, match=r"round 0, step 12"):
        Engine(toy_config, model=Exploding(), registry=registry).run()
    store = RunStore(toy_config.out)
    ckpt = store.read_checkpoint("checkpoint.pt")
    assert ckpt["step"] == 10
    assert all(torch.isfinite(v).all() for v in ckpt["weights"].values())


def test_manifest_lists_every_file_with_its_checksum(toy_config, registry):
    Engine(toy_config, registry=registry).run()
    run = Path(toy_config.out)
    manifest = json.loads((run / "manifest.json").read_text())["files"]
    from ticketforge.store import sha256_file
    for rel, digest in manifest.items():
        assert sha256_file(run / rel) == digest
    assert "rounds/0002/record.json" in manifest and "checkpoint.pt" not in manifest


def test_tensor_files_are_a_function_of_their_content_metadata_included(tmp_path):
    """safetensors writes metadata in a hash order that changes between saves (its issue #584): the same
    tensors and metadata saved 20 times must still give one byte string, which safetensors reads back."""
    from safetensors import safe_open
    from safetensors.torch import load, save

    from ticketforge.store.canonical import safetensors_bytes

    tensors = {"b.weight": torch.arange(6.0).reshape(2, 3), "a.bias": torch.ones(3, dtype=torch.bfloat16)}
    meta = {"format": "f/1", "round_0_step": "150", "config": '{"p": 20}', "é": "ü"}
    saves = {safetensors_bytes(tensors, meta) for _ in range(20)}
    assert len(saves) == 1
    blob = saves.pop()
    assert int.from_bytes(blob[:8], "little") % 8 == 0  # the data starts 8-byte aligned
    assert {k: v.tolist() for k, v in load(blob).items()} == {k: v.tolist() for k, v in tensors.items()}
    (tmp_path / "t.safetensors").write_bytes(blob)
    with safe_open(str(tmp_path / "t.safetensors"), framework="pt") as f:
        assert f.metadata() == meta
    assert safetensors_bytes(tensors) == save(tensors) == safetensors_bytes(tensors, {})
    with pytest.raises(TypeError, match="str keys and values only"):
        safetensors_bytes(tensors, {"round": 3})


def test_export_and_load_ticket_round_trip(toy_config, registry, tmp_path):
    Engine(dataclasses.replace(toy_config, rounds=3), registry=registry).run()
    info = export_ticket(toy_config.out, tmp_path / "t.safetensors", registry=registry)
    loaded = load_round(toy_config.out, registry=registry)
    net = load_ticket(tmp_path / "t.safetensors", registry=registry)
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(net(x), loaded.network(x))
    for name, mask in loaded.masks.items():
        module = dict(net.named_modules())[name]
        assert (module.weight[~mask] == 0).all()
    assert info["sparsity"] == loaded.record["sparsity"]
    export_ticket(toy_config.out, tmp_path / "again.safetensors", registry=registry)  # four metadata keys
    assert (tmp_path / "again.safetensors").read_bytes() == (tmp_path / "t.safetensors").read_bytes()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError):
        load_ticket(bad, registry=registry)


@pytest.fixture
def umask():
    """Sets the process's umask for one test (``umask(0o027)``) and restores it afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_run_files_and_tickets_get_0666_less_the_umask(toy_config, registry, tmp_path, umask):
    umask(0o027)
    Engine(dataclasses.replace(toy_config, rounds=1), registry=registry).run()
    export_ticket(toy_config.out, tmp_path / "t.safetensors", registry=registry)
    run = Path(toy_config.out)
    modes = {p.relative_to(run).as_posix(): _mode(p) for p in run.rglob("*") if p.is_file()}
    assert {"config.json", "manifest.json", "rounds/0001/masks.safetensors"} <= set(modes)
    assert set(modes.values()) == {0o640}, modes
    assert _mode(tmp_path / "t.safetensors") == 0o640  # a ticket is meant to be shared
    umask(0o002)
    atomic_write_bytes(tmp_path / "group.bin", b"x")
    assert _mode(tmp_path / "group.bin") == 0o664


def test_export_at_90_percent_sparsity_is_under_a_quarter_of_dense_fp32(toy_config, registry, tmp_path):
    # width 32: big enough that the file's header and the dense biases do not dominate (10.8k prunable weights)
    config = dataclasses.replace(toy_config, rounds=1, p=90.0, model_options={"width": 32})
    Engine(config, registry=registry).run()
    info = export_ticket(config.out, tmp_path / "t.safetensors", registry=registry)
    assert info["sparsity"] == pytest.approx(0.9, abs=0.005)
    assert info["file_bytes"] == (tmp_path / "t.safetensors").stat().st_size
    assert info["file_bytes"] < 0.25 * info["dense_fp32_bytes"], info

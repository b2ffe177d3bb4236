"""Lottery branches: a finished round's ticket trained once more with other masks or start weights."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import run_branch_toy
import torch
from click.testing import CliRunner
from helpers import core_registry

import ticketforge.registry as registry_module
from ticketforge import Engine, branch, hookimpl, load_round
from ticketforge.branches import list_branches
from ticketforge.cli.main import cli
from ticketforge.errors import CheckpointError, TicketforgeError
from ticketforge.pruning.state import plain_state_dict
from ticketforge.store import RunLock, RunStore

RUNNER = Path(__file__).parent / "run_branch_toy.py"


class StartWeights:
    """Snapshots the network as each (branch) round starts."""

    def __init__(self):
        self.at_start: list[dict[str, torch.Tensor]] = []

    @hookimpl
    def ticketforge_round_start(self, run, round_index, sparsity, steps):
        self.at_start.append(plain_state_dict(run.network))


@pytest.fixture
def run(toy_config, registry):
    """A finished two-round toy run that kept theta at half of round 0."""
    config = dataclasses.replace(toy_config, keep_rewind_points=[0.5])
    Engine(config, registry=registry).run()
    return Path(config.out)


def _folder(run: Path, record: dict) -> Path:
    return run / "branches" / record["branch"]["name"]


def _tensors(folder: Path, rel: str) -> dict[str, torch.Tensor]:
    return RunStore(folder).read_tensors(rel)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _log(folder: Path, round_index: int) -> list[tuple]:
    lines = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
    return [(ln["step"], ln["loss"], ln["lr"]) for ln in lines if ln["round"] == round_index]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.name != "lock"}


@pytest.mark.parametrize("k,start", [(1, "tau"), (2, "tau"), (0, "init")])
def test_ticket_tau_branch_repeats_round_k_exactly(run, registry, k, start):
    record = branch(run, k, start=start, registry=registry)  # round 0 itself starts from theta_0
    folder = _folder(run, record)
    assert folder.name.startswith(f"ticket-{start}-") and len(folder.name.rsplit("-", 1)[1]) == 12
    for rel in ("weights", "ema", "masks"):
        assert _same(_tensors(folder, f"rounds/0000/{rel}.safetensors"), _tensors(run, f"rounds/{k:04d}/{rel}.safetensors"))
    assert _log(folder, 0) == _log(run, k) and len(_log(folder, 0)) == 4
    parent = RunStore(run).round_record(k)
    assert record["round"] == 0 and record["mask_sha256"] == parent["mask_sha256"]
    assert record["metrics"]["loss"] == parent["metrics"]["loss"] and record["groups"] == parent["groups"]
    # a one-round run folder: load_round reads it unchanged, config.json is the run's plus "branch"
    loaded = load_round(folder, registry=registry)
    assert loaded.round == 0 and loaded.record["branch"]["of_round"] == k
    config = json.loads((folder / "config.json").read_text())
    assert config["branch"] == record["branch"] and config["branch"]["parent_run"] == ".."
    assert {k_: v for k_, v in config.items() if k_ != "branch"} == RunStore(run).read_config()
    assert set(RunStore(folder).manifest) == {"config.json", "rounds/0000/masks.safetensors", "rounds/0000/weights.safetensors",
                                              "rounds/0000/ema.safetensors", "rounds/0000/record.json"}


def test_random_masks_keep_every_tensor_count_and_move_the_positions(run, registry):
    ticket = _tensors(run, "rounds/0002/masks.safetensors")
    first = branch(run, 2, masks="random", registry=registry)
    other = branch(run, 2, masks="random", seed=1, registry=registry)
    assert first["branch"]["name"] != other["branch"]["name"] and first["branch"]["name"].startswith("random-tau-")
    for record in (first, other):
        masks = _tensors(_folder(run, record), "rounds/0000/masks.safetensors")
        for name, mask in ticket.items():
            assert int(masks[name].sum()) == int(mask.sum()), name
            assert not torch.equal(masks[name], mask), name
        weights = _tensors(_folder(run, record), "rounds/0000/weights.safetensors")
        assert all((weights[f"{n}.weight"][~m.bool()] == 0).all() for n, m in masks.items())
        assert record["sparsity"] == RunStore(run).round_record(2)["sparsity"]
    a, b = (_tensors(_folder(run, r), "rounds/0000/masks.safetensors") for r in (first, other))
    assert not _same(a, b)  # the seed draws the positions


def test_starts_are_the_weights_they_name(run, registry):
    spy = StartWeights()
    registry.pm.register(spy)
    store = RunStore(run)
    masks = {n: m.bool() for n, m in store.read_tensors("rounds/0002/masks.safetensors").items()}
    theta_0, theta_tau = store.read_tensors("init.safetensors"), store.read_tensors("rewind.safetensors")

    def masked(weights):
        return {k: (v * masks[k[:-7]] if k[:-7] in masks and k.endswith(".weight") else v) for k, v in weights.items()}

    branch(run, 2, start="init", registry=registry)
    branch(run, 2, start="trained:1", registry=registry)
    branch(run, 2, rewind_fraction=0.5, registry=registry)
    reinit = branch(run, 2, start="reinit", registry=registry)
    branch(run, 2, start="reinit", init_seed=7, registry=registry)
    init, trained, half, re1, re7 = spy.at_start
    assert _same(init, masked(theta_0))
    assert _same(trained, masked(store.read_tensors("rounds/0001/weights.safetensors")))
    assert _same(half, masked(store.read_tensors("rewind_points/step-00000010.safetensors")))
    for fresh in (re1, re7):
        assert not torch.equal(fresh["norm.bias"], theta_0["norm.bias"]) or not torch.equal(fresh["mid.bias"], theta_0["mid.bias"])
        for name in ("mid.weight", "fc.bias"):
            assert not torch.equal(fresh[name], masked(theta_0)[name]) and not torch.equal(fresh[name], masked(theta_tau)[name])
    assert not _same(re1, re7) and reinit["branch"]["init_seed"] == 1  # the run's init seed (0) + 1
    # the names say what the branch is
    names = sorted(p.name.rsplit("-", 1)[0] for p in (run / "branches").iterdir())
    assert names == ["ticket-init", "ticket-reinit", "ticket-reinit", "ticket-tau0.5", "ticket-trained1"]


def test_dense_branch_trains_every_weight(run, registry):
    record = branch(run, 2, masks="none", registry=registry)
    assert record["sparsity"] == 0.0 and _folder(run, record).name.startswith("none-tau-")
    masks = _tensors(_folder(run, record), "rounds/0000/masks.safetensors")
    assert all(m.all() for m in masks.values())


def test_same_request_twice_is_skipped_and_the_run_is_untouched(run, registry):
    before = _files(run)
    first = branch(run, 1, masks="random", registry=registry)
    parent_after = {k: v for k, v in _files(run).items() if not k.startswith("branches/")}
    assert parent_after == before  # a branch writes only inside RUN/branches/
    folder_bytes = _files(_folder(run, first))
    again = branch(run, 1, masks="random", seed=0, steps=20, registry=registry)  # the defaults, spelled out
    assert again == first and _files(_folder(run, first)) == folder_bytes


def test_other_steps_make_another_branch(run, registry):
    record = branch(run, 1, steps=7, registry=registry)
    assert record["metrics"]["steps"] == 7 and record["branch"]["steps"] == 7
    assert record["branch"]["name"] != branch(run, 1, registry=registry)["branch"]["name"]


def _branch_toy(out: Path, *args: str) -> subprocess.CompletedProcess:
    """tests/run_branch_toy.py in a process of its own, for a SIGKILL."""
    return subprocess.run([sys.executable, str(RUNNER), str(out), *args], capture_output=True, text=True, timeout=300)


def test_sigkilled_branch_resumes_from_its_checkpoint_to_identical_results(tmp_path):
    ref, out = tmp_path / "ref", tmp_path / "run"
    for path in (ref, out):  # the run script's run, here
        Engine(run_branch_toy.run_config(path), registry=core_registry()).run()
    branch(ref, 2, masks="random", registry=core_registry())
    killed = _branch_toy(out, "--branch", "2", "--masks", "random", "--kill-at-step", "0:15")
    assert killed.returncode == -9, killed.stderr
    (folder,) = (out / "branches").iterdir()
    store = RunStore(folder)
    assert store.finished_rounds() == [] and store.read_checkpoint("checkpoint.pt")["step"] == 10
    assert RunStore(out).finished_rounds() == [0, 1, 2]  # the run itself was finished and stays so
    branch(out, 2, masks="random", registry=core_registry())  # the same request, resumed by another process
    (ref_folder,) = (ref / "branches").iterdir()
    assert folder.name == ref_folder.name
    for rel in ("weights", "ema", "masks"):
        assert _same(_tensors(folder, f"rounds/0000/{rel}.safetensors"), _tensors(ref_folder, f"rounds/0000/{rel}.safetensors"))
    steps = [s for s, _, _ in _log(folder, 0)]
    assert steps == [5, 10, 15, 15, 20]  # continued from the step-10 checkpoint, not from the start
    assert _log(folder, 0)[-1] == _log(ref_folder, 0)[-1]
    assert not store.has("checkpoint.pt") and not list(folder.rglob(".*.tmp"))


def test_a_moved_run_branches_alike_and_a_damaged_one_is_refused(run, registry, tmp_path):
    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(run, moved)
    here = branch(run, 2, masks="random", registry=registry)
    there = branch(moved, 2, masks="random", registry=registry)
    assert here["branch"] == there["branch"] and here["metrics"]["loss"] == there["metrics"]["loss"]
    assert _same(_tensors(_folder(run, here), "rounds/0000/weights.safetensors"),
                 _tensors(_folder(moved, there), "rounds/0000/weights.safetensors"))
    damaged = tmp_path / "damaged" / "run"
    shutil.copytree(run, damaged, ignore=shutil.ignore_patterns("branches"))
    theta_tau = damaged / "rewind.safetensors"
    data = bytearray(theta_tau.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    theta_tau.write_bytes(bytes(data))
    before = _files(damaged)
    with pytest.raises(CheckpointError, match="fails its checksum"):
        branch(damaged, 2, registry=registry)
    assert _files(damaged) == before and not (damaged / "branches").exists()
    masks = damaged / "rounds/0001/masks.safetensors"
    masks.write_bytes(masks.read_bytes()[:-4])
    with pytest.raises(CheckpointError, match="fails its checksum"):
        branch(damaged, 1, start="init", registry=registry)


def test_a_branch_trains_beside_its_run_and_locks_only_its_own_folder(run, registry):
    """Round K's files never change once finished: a branch reads them while another process holds the
    run (training later rounds, or other branches), and refuses only a second writer of the same branch."""
    with RunLock(run):
        made = branch(run, 1, registry=registry)
    folder = _folder(run, made)
    assert made["branch"]["of_round"] == 1 and 0 in RunStore(folder).finished_rounds()
    with RunLock(folder):
        with pytest.raises(TicketforgeError, match="in use by pid"):
            branch(run, 1, registry=registry)
        assert branch(run, 1, masks="random", registry=registry)["branch"]["masks"] == "random"


def test_fresh_deletes_nothing_while_a_branch_trains(toy_config, run, registry):
    made = branch(run, 1, masks="random", registry=registry)
    before = _files(run)
    with RunLock(_folder(run, made)):
        with pytest.raises(TicketforgeError, match="is training in another process.*nothing was deleted"):
            Engine(dataclasses.replace(toy_config, keep_rewind_points=[0.5]), registry=registry, fresh=True).run()
    assert _files(run) == before


@pytest.fixture
def runner(registry, monkeypatch):
    monkeypatch.setattr(registry_module, "_registry", registry)
    return CliRunner()


@pytest.mark.parametrize("args,needle", [
    (["--round", "5"], "round 5 of"),
    (["--round", "-1"], "--round must be a round index"),
    (["--round", "1", "--masks", "shuffled"], "unknown masks 'shuffled'"),
    (["--round", "1", "--start", "rewind"], "unknown start 'rewind'"),
    (["--round", "1", "--start", "trained:4"], "round 4 of"),
    (["--round", "1", "--start", "trained:x"], "unknown start"),
    (["--round", "1", "--rewind-fraction", "0.3"], "(step 6) was not recorded"),
    (["--round", "1", "--rewind-fraction", "2"], "in [0, 1]"),
    (["--round", "1", "--start", "init", "--rewind-fraction", "0.5"], "for --start tau"),
    (["--round", "1", "--steps", "0"], "--steps must be at least 1"),
    (["--round", "1", "--start", "reinit", "--init-seed", "0"], "own init seed"),
    (["--round", "1", "--init-seed", "3"], "--init-seed seeds the weights of --start reinit"),
    (["--round", "1", "--seed", "3"], "--seed draws the positions of --masks random"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(runner, run, args, needle):
    before = _files(run)
    result = runner.invoke(cli, ["branch", str(run), "--quiet", *args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and needle in lines[0], result.output
    assert _files(run) == before and not (run / "branches").exists()


def test_cli_trains_then_skips_and_prints_json(runner, run):
    first = runner.invoke(cli, ["branch", str(run), "--round", "1", "--masks", "random", "--quiet"])
    assert first.exit_code == 0, first.output
    assert "Branch folder:" in first.output and "(trained;" in first.output
    again = runner.invoke(cli, ["branch", str(run), "--round", "1", "--masks", "random", "--json"])
    doc = json.loads(again.output)
    assert doc["trained"] is False and doc["round"] == 0 and doc["branch"]["masks"] == "random"
    assert Path(doc["path"]).parent == run / "branches"
    not_a_run = runner.invoke(cli, ["branch", str(run / "branches"), "--round", "0"])
    assert not_a_run.exit_code == 1 and "is not a ticketforge run" in not_a_run.output
    nested = runner.invoke(cli, ["branch", doc["path"], "--round", "0"])
    assert nested.exit_code == 2 and "is a branch, not a run" in nested.output


def test_fresh_clears_the_runs_branches_and_keeps_other_files(toy_config, run, registry):
    """Branches were trained from the masks --fresh deletes: they go with them (a stale one would be
    listed, scored and even skipped as finished for the new run); a file the store did not write stays."""
    made = branch(run, 1, masks="random", registry=registry)
    (run / "branches" / "notes.txt").write_text("mine")
    Engine(dataclasses.replace(toy_config, keep_rewind_points=[0.5]), registry=registry, fresh=True).run()
    assert not _folder(run, made).exists()
    assert (run / "branches" / "notes.txt").read_text() == "mine"
    assert list_branches(run) == []

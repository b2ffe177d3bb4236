"""What is read back from a run is checked against what its record says, not only against the manifest
(issue 22). Files that match their manifest checksum but not their content come from someone who edits
both: the tests craft them through the store (``RunStore.write_tensors`` registers the new checksum).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from helpers import core_registry
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from test_contract_checks import assert_one_line, tree_state

import ticketforge.registry as registry_module
from ticketforge import load_ticket
from ticketforge.cli.main import cli
from ticketforge.errors import CheckpointError
from ticketforge.store import RunStore


@pytest.fixture
def runner(monkeypatch):
    monkeypatch.setattr(registry_module, "_registry", core_registry())
    return CliRunner()


RUN_ARGS = ["--model", "toy", "--schedule", "uniform", "--rounds", "1", "--steps-per-round", "4", "--device", "cpu",
            "--quiet", "--no-artifacts"]


@pytest.fixture
def run(runner, tmp_path) -> Path:
    """A finished two-round toy run, and a file beside it that nothing may touch."""
    out = tmp_path / "run"
    result = runner.invoke(cli, ["run", *RUN_ARGS, "--out", str(out)])
    assert result.exit_code == 0, result.output
    (tmp_path / "thesis.txt").write_text("not to be touched")
    return out


def _flip_one_kept_weight(masks):
    masks = {k: v.clone() for k, v in masks.items()}
    flat = masks["mid"].reshape(-1)
    flat[int(flat.nonzero()[0])] = False
    return masks


def _craft(run: Path, rel: str, change) -> None:
    store = RunStore(run)
    store.write_tensors(rel, change(store.read_tensors(rel)))


def _nan(weights):
    return {k: (torch.full_like(v, float("nan")) if k == "mid.weight" else v) for k, v in weights.items()}


# (file crafted, how, words of the one-line error)
CRAFTED = {
    "masks-other-content": ("rounds/0001/masks.safetensors", _flip_one_kept_weight,
                            ["rounds/0001/masks.safetensors does not hold the masks its round's record describes",
                             "mask_sha256", "delete", "rounds/0001", "to redo that round"]),
    "masks-float-halves": ("rounds/0001/masks.safetensors", lambda m: {k: v.float() * 0.5 for k, v in m.items()},
                           ["rounds/0001/masks.safetensors is damaged", "torch.float32, not bool", "delete"]),
    "masks-wrong-shape": ("rounds/0001/masks.safetensors", lambda m: {k: v.reshape(-1) for k, v in m.items()},
                          ["rounds/0001/masks.safetensors is damaged", "has shape (72,)", "delete"]),
    "weights-nan": ("rounds/0001/weights.safetensors", _nan,
                    ["rounds/0001/weights.safetensors is damaged", "mid.weight has 576 NaN", "delete"]),
    "ema-nan": ("rounds/0001/ema.safetensors", _nan,
                ["rounds/0001/ema.safetensors is damaged", "mid.weight has 576 NaN", "delete"]),
    "weights-int": ("rounds/0001/weights.safetensors",
                    lambda w: {k: (v.long() if k == "inp.weight" else v) for k, v in w.items()},
                    ["rounds/0001/weights.safetensors is damaged", "inp.weight has dtype torch.int64", "delete"]),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
@pytest.mark.parametrize("command", [
    ["sample", "--n", "2", "--steps", "2", "--device", "cpu", "--out", "{tmp}/grid.png"],
    ["flops", "--json"],
    ["export", "--out", "{tmp}/ticket.safetensors"],
    ["inspect", "--json"],
], ids=["sample", "flops", "export", "inspect"])
def test_a_crafted_round_file_is_refused_naming_it(runner, run, case, command):
    rel, change, needles = CRAFTED[case]
    if command[0] == "flops" and "ema" in rel or command[0] in ("sample", "export") and "weights" in rel:
        pytest.skip("flops reads the raw weights; sample and export their EMA")
    _craft(run, rel, change)
    tmp = run.parent
    before = tree_state(tmp, run)
    args = [a.replace("{tmp}", str(tmp)) for a in command]
    result = runner.invoke(cli, [args[0], str(run), *args[1:]])
    assert_one_line(result, 1, str(run / rel.split("/")[0] / rel.split("/")[1]), *needles)
    assert tree_state(tmp, run) == before
    assert not (tmp / "grid.png").exists() and not (tmp / "ticket.safetensors").exists()


def test_inspect_finds_a_masks_file_damaged_on_disk(runner, run):
    """inspect reads every round file, not only the records: a damaged masks file is not 'healthy'."""
    masks = run / "rounds/0001/masks.safetensors"
    data = bytearray(masks.read_bytes())
    data[-1] ^= 0xFF
    masks.write_bytes(bytes(data))
    result = runner.invoke(cli, ["inspect", str(run)])
    assert_one_line(result, 1, f"{masks} fails its checksum", "delete its round folder")


def test_following_the_advice_redoes_the_round_with_the_same_masks(runner, run):
    digest = json.loads((run / "rounds/0001/record.json").read_text())["mask_sha256"]
    _craft(run, "rounds/0001/masks.safetensors", _flip_one_kept_weight)
    assert runner.invoke(cli, ["inspect", str(run)]).exit_code == 1
    shutil.rmtree(run / "rounds/0001")  # what the message says to do
    assert runner.invoke(cli, ["run", *RUN_ARGS, "--out", str(run)]).exit_code == 0
    assert runner.invoke(cli, ["inspect", str(run)]).exit_code == 0
    assert json.loads((run / "rounds/0001/record.json").read_text())["mask_sha256"] == digest


@pytest.mark.parametrize("rel,change,needles", [
    ("rounds/0001/masks.safetensors", _flip_one_kept_weight, ["does not hold the masks its round's record describes"]),
    ("rounds/0001/weights.safetensors", _nan, ["rounds/0001/weights.safetensors is damaged", "NaN"]),
])
def test_resuming_reads_the_previous_round_checked(runner, tmp_path, rel, change, needles):
    """Round 2 scores round 1's weights under round 1's masks: both are checked before it prunes."""
    run = tmp_path / "run"
    args = ["run", *RUN_ARGS, "--out", str(run), "--rounds", "2"]
    assert runner.invoke(cli, args).exit_code == 0
    shutil.rmtree(run / "rounds/0002")  # round 2 is to be done again, from round 1's files
    _craft(run, rel, change)
    (tmp_path / "thesis.txt").write_text("not to be touched")
    before = tree_state(tmp_path, run)
    result = runner.invoke(cli, args)
    assert_one_line(result, 1, *needles, "delete", "to redo that round")
    assert tree_state(tmp_path, run) == before
    assert RunStore(run).finished_rounds() == [0, 1]
    assert not (run / "rounds/0002").exists()


# -- load_ticket believes no size it reads --------------------------------------------------------
@pytest.fixture
def ticket(runner, run) -> Path:
    path = run.parent / "ticket.safetensors"
    assert runner.invoke(cli, ["export", str(run), "--out", str(path)]).exit_code == 0
    return path


def _rewrite(path: Path, out: Path, tensors=None, shapes=None) -> Path:
    with safe_open(str(path), framework="pt") as f:
        meta, stored = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    stored.update(tensors or {})
    if shapes is not None:
        meta["shapes"] = json.dumps({**json.loads(meta["shapes"]), **shapes})
    save_file(stored, str(out), metadata=meta)
    return out


def test_a_forged_shape_asks_for_no_allocation(ticket, registry):
    """A 300-byte file whose metadata claims a 4 TB weight is refused before anything is allocated."""
    with safe_open(str(ticket), framework="pt") as f:
        config = json.loads(f.metadata()["config"])
    forged = ticket.parent / "forged.safetensors"
    save_file({"mask.inp": torch.zeros(1, dtype=torch.uint8), "kept.inp": torch.zeros(0)}, str(forged), metadata={
        "format": "ticketforge-ticket/1", "config": json.dumps({"model": config["model"], "model_options": {}}),
        "shapes": json.dumps({"inp": [1 << 20, 1 << 20, 1024]}), "round": "1"})
    assert forged.stat().st_size < 400
    with pytest.raises(CheckpointError, match=r"says inp\.weight has shape \[1048576, 1048576, 1024\], the model's "
                                              r"is \[8, 1, 3, 3\].*export the ticket again"):
        load_ticket(forged, registry=registry)


@pytest.mark.parametrize("change,needle", [
    (lambda t: {"kept.mid": t["kept.mid"][:-1]}, r"has \d+ kept values of mid for \d+ mask bits"),
    (lambda t: {"mask.mid": t["mask.mid"][:-1]}, r"packed mask of mid of torch.uint8 \(71,\), not uint8 \(72,\)"),
    (lambda t: {"kept.mid": t["kept.mid"].long()}, r"kept values of mid of torch.int64"),
    (lambda t: {"dense.norm.weight": torch.ones(3)}, r"has shape \(3,\) for norm.weight, the model's is \(8,\)"),
    (lambda t: {"kept.mid": torch.full_like(t["kept.mid"], float("nan"))}, r"mid.weight has \d+ NaN"),
])
def test_a_ticket_whose_sizes_disagree_is_refused(ticket, registry, change, needle):
    bad = _rewrite(ticket, ticket.parent / "bad.safetensors", change(load_file(str(ticket))))
    with pytest.raises(CheckpointError, match=needle):
        load_ticket(bad, registry=registry)
    load_ticket(ticket, registry=registry)  # the original still loads


# -- inputs refused before any work ---------------------------------------------------------------
def test_round_counted_back_past_the_first_names_the_rounds(runner, run):
    for command in (["flops"], ["sample", "--n", "1", "--steps", "1", "--out", str(run.parent / "g.png")]):
        result = runner.invoke(cli, [command[0], str(run), "--round", "-9", *command[1:]])
        assert_one_line(result, 2, "round -9 does not exist", "2 finished rounds (0, 1)", "--round 0..1",
                        "-1..-2")
    assert runner.invoke(cli, ["flops", str(run), "--round", "-2", "--json"]).exit_code == 0


@pytest.mark.parametrize("size", ["0", "-3"])
def test_flops_batch_size_below_one_is_refused(runner, run, size):
    result = runner.invoke(cli, ["flops", str(run), "--batch-size", size])
    assert_one_line(result, 2, "--batch-size must be at least 1", f"not {size}")


def test_nan_rewind_weights_stop_the_next_round(runner, tmp_path):
    """theta_tau is read at the start of every pruned round: NaN there would train (and sample) NaN."""
    run = tmp_path / "run"
    args = ["run", *RUN_ARGS, "--out", str(run), "--rounds", "2"]
    assert runner.invoke(cli, args).exit_code == 0
    shutil.rmtree(run / "rounds/0002")
    _craft(run, "rewind.safetensors", _nan)
    result = runner.invoke(cli, args)
    assert_one_line(result, 1, f"{run / 'rewind.safetensors'} is damaged", "mid.weight has 576 NaN", "--fresh")
    assert RunStore(run).finished_rounds() == [0, 1]

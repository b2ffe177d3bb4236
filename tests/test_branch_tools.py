"""The commands that read lottery branches: inspect, sample, eval, flops, export, compare, report.

Branches here are fakes (tests/branch_fixtures.py: round K's files copied into the branch layout),
so these tests pin what the reading side does with the layout, not how branches are trained.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from branch_fixtures import fake_branch
from click.testing import CliRunner
from helpers import core_registry

import ticketforge.registry as registry_module
from ticketforge import ComponentRecord, Engine, RunConfig, hookimpl, load_branch, load_ticket
from ticketforge.branches import list_branches, resolve_branch, resolve_source
from ticketforge.cli.main import cli
from ticketforge.errors import UsageError
from ticketforge.store import RunStore


class _MeanEvaluator:
    """Mean pixel of the samples: cheap, and different for different weights."""

    def evaluate(self, spec, network, *, dataset, n_samples, generator, device, **options):
        images = spec.sample(network, n_samples, generator=generator)
        return {"mean_pixel": float(images.detach().mean()), "n_samples": n_samples, "sampler": options["sampler"],
                "steps": options["steps"], "featurizer_sha256": "0" * 64}


class _EvalPlugin:
    @hookimpl
    def ticketforge_evaluators(self):
        return [ComponentRecord("mean-pixel", _MeanEvaluator, "test evaluator")]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A finished three-round toy run with five branches (one unfinished), written once for the module."""
    registry = core_registry(_EvalPlugin())
    run = tmp_path_factory.mktemp("branches") / "run"
    config = RunConfig(model="toy", schedule="uniform", p=20.0, rounds=2, steps_per_round=20, device="cpu",
                       out=str(run), log_every=5, checkpoint_every=10, artifacts=False)
    Engine(config, registry=registry).run()
    names = {
        "ticket1": fake_branch(run, 1, masks="ticket", perturb=0.05, loss=0.5, registry=registry).name,
        "random1": fake_branch(run, 1, masks="random", seed=1, perturb=0.05, loss=0.9, registry=registry).name,
        "ticket2": fake_branch(run, 2, masks="ticket", perturb=0.05, seed=2, loss=0.6, registry=registry).name,
        "none2": fake_branch(run, 2, masks="none", perturb=0.05, seed=3, loss=0.4, registry=registry).name,
        "unfinished": fake_branch(run, 2, masks="ticket", start="reinit", finished=False, checkpoint_step=7).name,
    }
    return run, names, registry


@pytest.fixture
def env(made, tmp_path, monkeypatch):
    """A private copy of the run (eval writes into records), the CLI runner on the test registry."""
    run, names, registry = made
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    monkeypatch.setattr(registry_module, "_registry", registry)
    return copy, names, CliRunner(env={"COLUMNS": "250"})


def _ok(result):
    assert result.exit_code == 0, result.output
    return result


# -- the library --------------------------------------------------------------------------------------
def test_list_branches_finished_and_unfinished(env):
    run, names, _ = env
    infos = list_branches(run)
    assert [b.name for b in infos] == sorted([names["ticket1"], names["random1"]]) + sorted(
        [names["ticket2"], names["none2"], names["unfinished"]])  # by round, then name
    by = {b.name: b for b in infos}
    assert by[names["random1"]].kind == "random-tau" and by[names["random1"]].of_round == 1
    assert by[names["none2"]].record["sparsity"] == 0.0
    unfinished = by[names["unfinished"]]
    assert not unfinished.finished and unfinished.status == "step 7 of 20" and unfinished.kind == "ticket-reinit"


def test_resolve_by_name_prefix_and_errors(env):
    run, names, _ = env
    assert resolve_branch(run, names["random1"]).name == names["random1"]
    assert resolve_branch(run, "random").name == names["random1"]  # a unique prefix
    assert resolve_branch(run, "none").name == names["none2"]
    assert resolve_branch(run, "reinit").name == names["unfinished"]  # whole parts of the name: its start
    with pytest.raises(UsageError, match="no branch 'einit'"):
        resolve_branch(run, "einit")  # part of a part is no match
    with pytest.raises(UsageError, match="ambiguous"):
        resolve_branch(run, "tau")  # the start of four branches
    with pytest.raises(UsageError, match="ambiguous") as ambiguous:
        resolve_branch(run, "ticket-tau")  # two ticket-tau branches
    assert names["ticket1"] in str(ambiguous.value) and names["ticket2"] in str(ambiguous.value)
    with pytest.raises(UsageError, match="no branch 'nope'") as unknown:
        resolve_branch(run, "nope")
    assert all(name in str(unknown.value) for name in names.values())
    with pytest.raises(UsageError, match="not finished"):
        resolve_source(run, names["unfinished"])
    with pytest.raises(UsageError, match="drop --round"):
        resolve_source(run, names["ticket1"], 1)
    path, k, info = resolve_source(run, "none")
    assert path == run / "branches" / names["none2"] and k == 0 and info.of_round == 2
    loaded = load_branch(run, "random", registry=registry_module._registry)
    stored = RunStore(run / "branches" / names["random1"]).read_tensors("rounds/0000/masks.safetensors")
    assert loaded.config["branch"]["masks"] == "random" and loaded.round == 0
    assert all(torch.equal(loaded.masks[k], stored[k].bool()) for k in stored)


@pytest.mark.parametrize("args", [
    ["inspect", "{run}", "--branch", "nope"],
    ["sample", "{run}", "--branch", "nope", "--out", "{tmp}/x.png", "--device", "cpu"],
    ["eval", "{run}", "--branch", "nope", "--evaluator", "mean-pixel", "--samples", "4", "--device", "cpu"],
    ["flops", "{run}", "--branch", "nope"],
    ["export", "{run}", "--branch", "nope", "--out", "{tmp}/x.safetensors"],
    ["compare", "{run}", "{run}", "--branch-b", "nope"],
])
def test_unknown_branch_is_one_line_exit_2_listing_the_names(env, tmp_path, args):
    run, names, runner = env
    result = runner.invoke(cli, [a.format(run=run, tmp=tmp_path) for a in args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and "no branch 'nope'" in lines[0]
    assert all(name in lines[0] for name in names.values())
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "x.safetensors").exists()


def test_round_with_branch_and_bad_eval_combinations_are_refused(env, tmp_path):
    run, names, runner = env
    for args in (["sample", str(run), "--round", "1", "--branch", "random", "--out", str(tmp_path / "x.png")],
                 ["eval", str(run), "--all", "--branch", "random", "--evaluator", "mean-pixel"],
                 ["eval", str(run), "--round", "1", "--branches", "--evaluator", "mean-pixel"]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "x.png").exists()


# -- inspect ------------------------------------------------------------------------------------------
def test_inspect_lists_branches_under_the_round_they_branch_from(env):
    run, names, runner = env
    doc = json.loads(_ok(runner.invoke(cli, ["inspect", str(run), "--json"])).output)
    assert {b["name"]: b["of_round"] for b in doc["branches"]} == {
        names["ticket1"]: 1, names["random1"]: 1, names["ticket2"]: 2, names["none2"]: 2, names["unfinished"]: 2}
    entry = next(b for b in doc["branches"] if b["name"] == names["none2"])
    assert entry["branch"]["masks"] == "none" and entry["record"]["metrics"]["loss"] == 0.4
    text = _ok(runner.invoke(cli, ["inspect", str(run)])).output
    lines = text.splitlines()

    def row(needle):
        return next(i for i, line in enumerate(lines) if needle in line)

    def round_row(k):  # a table row whose first cell is k
        return next(i for i, line in enumerate(lines) if line.strip("│ ").split(" ")[0] == str(k) and "%" in line)

    r0, r1, r2 = round_row(0), round_row(1), round_row(2)
    assert r0 < r1 < row(names["ticket1"]) < r2 and r1 < row(names["random1"]) < r2
    assert r2 < row(names["ticket2"]) and r2 < row(names["none2"]) and r2 < row(names["unfinished"])
    assert "step 7 of 20" in lines[row(names["unfinished"]) + 1]  # progress under its name
    assert "0.9000" in lines[row(names["random1"])]  # its final loss


def test_inspect_one_branch_by_name_and_by_path(env):
    run, names, runner = env
    text = _ok(runner.invoke(cli, ["inspect", str(run), "--branch", "random"])).output
    assert f"branch {names['random1']}" in text and "of round 1" in text and "masks random" in text
    doc = json.loads(_ok(runner.invoke(cli, ["inspect", str(run / "branches" / names["random1"]), "--json"])).output)
    assert doc["branch"]["of_round"] == 1 and [r["round"] for r in doc["rounds"]] == [0]
    unfinished = _ok(runner.invoke(cli, ["inspect", str(run), "--branch", "ticket-reinit"])).output
    assert "step 7 of 20" in unfinished


# -- eval ---------------------------------------------------------------------------------------------
EVAL = ["--evaluator", "mean-pixel", "--samples", "6", "--steps", "3", "--device", "cpu"]


def _score(path, k=0):
    return RunStore(path).round_record(k)["metrics"].get("mean-pixel")


def test_eval_branch_stores_its_scores_in_the_branch_record_only(env):
    run, names, runner = env
    result = _ok(runner.invoke(cli, ["eval", str(run), "--branch", "random", *EVAL, "--json"]))
    rows = json.loads(result.stdout)
    assert [(r["branch"], r["of_round"]) for r in rows] == [(names["random1"], 1)]
    stored = _score(run / "branches" / names["random1"])
    assert stored is not None and stored["mean_pixel"] == rows[0]["scores"]["mean_pixel"] and stored["n_samples"] == 6
    assert all(_score(run, k) is None for k in (0, 1, 2))  # the run's rounds untouched
    assert _score(run / "branches" / names["ticket1"]) is None  # and the other branches
    text = _ok(runner.invoke(cli, ["inspect", str(run)])).output  # inspect shows the stored score in its row
    assert "mean_pixel" in text and f"{stored['mean_pixel']:.4g}" in next(
        line for line in text.splitlines() if names["random1"] in line)
    by_path = _ok(runner.invoke(cli, ["eval", str(run / "branches" / names["none2"]), *EVAL]))
    assert names["none2"] in by_path.output and _score(run / "branches" / names["none2"]) is not None


def test_eval_all_branches_in_one_process_scores_each_item_with_its_own_weights(env, monkeypatch):
    import ticketforge.engine.sampling as sampling
    run, names, runner = env
    builds = []
    real = sampling.sampling_network
    monkeypatch.setattr(sampling, "sampling_network", lambda *a, **k: builds.append(1) or real(*a, **k))
    result = _ok(runner.invoke(cli, ["eval", str(run), "--all", "--branches", *EVAL]))
    assert f"skipping branch {names['unfinished']} (step 7 of 20)" in result.output
    assert len(builds) == 1  # one denoiser for 3 rounds and 4 branches
    finished = [n for key, n in names.items() if key != "unfinished"]
    together = {**{k: _score(run, k)["mean_pixel"] for k in (0, 1, 2)},
                **{n: _score(run / "branches" / n)["mean_pixel"] for n in finished}}
    assert len(set(together.values())) == len(together)  # every item its own weights
    # Each item scored alone, in a fresh process state, gives the same number.
    for n in finished:
        _ok(runner.invoke(cli, ["eval", str(run), "--branch", n, *EVAL]))
        assert _score(run / "branches" / n)["mean_pixel"] == together[n]
    for k in (0, 2):
        _ok(runner.invoke(cli, ["eval", str(run), "--round", str(k), *EVAL]))
        assert _score(run, k)["mean_pixel"] == together[k]


def test_eval_branches_alone_scores_only_branches(env):
    run, names, runner = env
    _ok(runner.invoke(cli, ["eval", str(run), "--branches", *EVAL]))
    assert all(_score(run, k) is None for k in (0, 1, 2))
    assert all(_score(run / "branches" / n) is not None for key, n in names.items() if key != "unfinished")


# -- sample, flops, export, compare ---------------------------------------------------------------------
def test_sample_flops_export_compare_take_a_branch(env, tmp_path):
    run, names, runner = env
    out = _ok(runner.invoke(cli, ["sample", str(run), "--branch", "random", "--n", "4", "--device", "cpu",
                                  "--out", str(tmp_path / "grid.png")])).output
    assert f"branch {names['random1']} (of round 1)" in out and (tmp_path / "grid.png").stat().st_size > 0

    none = json.loads(_ok(runner.invoke(cli, ["flops", str(run), "--branch", "none", "--json"])).output)
    ticket = json.loads(_ok(runner.invoke(cli, ["flops", str(run), "--round", "2", "--json"])).output)
    assert none["branch"]["name"] == names["none2"] and ticket["branch"] is None
    assert none["sparse_macs"] == none["dense_macs"] > ticket["sparse_macs"]  # dense control, sparse ticket
    assert "of branch " + names["none2"] in _ok(runner.invoke(cli, ["flops", str(run), "--branch", "none"])).output

    file = tmp_path / "random.safetensors"
    assert names["random1"] in _ok(runner.invoke(cli, ["export", str(run), "--branch", "random", "--out",
                                                       str(file)])).output
    network = load_ticket(file, registry=registry_module._registry)
    masks = RunStore(run / "branches" / names["random1"]).read_tensors("rounds/0000/masks.safetensors")
    assert torch.equal(network.mid.weight_mask.bool(), masks["mid"].bool())

    doc = json.loads(_ok(runner.invoke(cli, ["compare", str(run), str(run), "--round", "1", "--branch-b", "random",
                                             "--json"])).output)
    assert doc["branch_b"] == names["random1"] and doc["branch_a"] is None and doc["round_a"] == 1
    assert doc["jaccard"] < 0.9  # shuffled positions
    same = json.loads(_ok(runner.invoke(cli, ["compare", str(run), str(run), "--round", "1", "--branch-b",
                                              names["ticket1"], "--json"])).output)
    assert same["jaccard"] == 1.0  # a ticket branch keeps round 1's masks
    text = _ok(runner.invoke(cli, ["compare", str(run), str(run), "--branch", "random", "--round-b", "1"])).output
    assert f"branch {names['random1']} vs {run} round 1" in " ".join(text.split())  # the title may wrap


# -- report ---------------------------------------------------------------------------------------------
def test_report_draws_the_ticket_against_its_branches(env, tmp_path):
    run, names, runner = env
    _ok(runner.invoke(cli, ["eval", str(run), "--all", "--branches", *EVAL]))
    out = tmp_path / "report"
    _ok(runner.invoke(cli, ["report", str(run), "--out", str(out), "--no-cka"]))
    doc = json.loads((out / "report.json").read_text())[0]
    rounds = {r["round"]: r for r in doc["rounds"]}
    rows = {b["name"]: b for b in doc["branches"]}
    assert set(rows) == set(names.values())
    assert rows[names["none2"]]["sparse_macs"] == rows[names["none2"]]["dense_macs"]
    loss = doc["branch_plots"]["0-run-branches-loss.png"]
    s1, s2 = 100 * rounds[1]["sparsity"], 100 * rounds[2]["sparsity"]
    assert loss["ticket (rounds)"] == sorted([100 * r["sparsity"], r["loss"]] for r in doc["rounds"])
    assert loss["ticket-tau"] == [[s1, 0.5], [s2, 0.6]] and loss["random-tau"] == [[s1, 0.9]]
    assert loss["none-tau"] == [[s2, 0.4]]  # the dense control at its ticket's sparsity
    assert "ticket-reinit" not in loss  # unfinished: in the table, not on the plot
    score = doc["branch_plots"]["0-run-branches-mean-pixel.png"]
    assert score["random-tau"] == [[s1, rows[names["random1"]]["scores"]["mean-pixel"]["value"]]]
    assert (out / "0-run-branches-loss.png").stat().st_size > 0 and (out / "0-run-branches-mean-pixel.png").exists()
    md = (out / "report.md").read_text()
    assert "### Branches of run" in md and "0-run-branches-loss.png" in md
    line = next(line for line in md.splitlines() if names["random1"] in line)
    assert line.startswith("| 1 |") and "| random |" in line and "0.9000" in line and "mean_pixel" in line
    assert "step 7 of 20" in next(line for line in md.splitlines() if names["unfinished"] in line)


def test_a_kind_is_not_taken_for_the_start_of_another(env, made):
    """`ticket-tau` names the kind ticket-tau, though it also starts ticket-tau0.2-<hash>."""
    run, registry = env[0], made[2]
    shutil.rmtree(run / "branches")
    tau = fake_branch(run, 1, registry=registry).name
    point = fake_branch(run, 1, rewind_fraction=0.2, registry=registry).name
    assert point.startswith("ticket-tau0.2-") and {b.kind for b in list_branches(run)} == {"ticket-tau", "ticket-tau0.2"}
    assert resolve_branch(run, "ticket-tau").name == tau
    assert resolve_branch(run, "tau0.2").name == point


# -- real branches: the reading side on what `ticketforge branch` writes ----------------------------
def test_real_branches_are_read_like_the_fakes(tmp_path, monkeypatch):
    """`branch` (the training side) and the reading commands agree on the layout: inspect lists the
    branches under their round, eval stores scores in each branch's own record, report plots them."""
    from ticketforge import branch
    registry = core_registry(_EvalPlugin())
    monkeypatch.setattr(registry_module, "_registry", registry)
    run = tmp_path / "run"
    Engine(RunConfig(model="toy", schedule="uniform", p=20.0, rounds=1, steps_per_round=10, device="cpu",
                     out=str(run), log_every=5, checkpoint_every=10, artifacts=False), registry=registry).run()
    made = {masks: branch(run, 1, masks=masks, registry=registry)["branch"]["name"] for masks in ("ticket", "random")}
    runner = CliRunner(env={"COLUMNS": "250"})
    doc = json.loads(_ok(runner.invoke(cli, ["inspect", str(run), "--json"])).output)
    assert sorted(b["name"] for b in doc["branches"]) == sorted(made.values())
    assert all(b["of_round"] == 1 for b in doc["branches"])
    _ok(runner.invoke(cli, ["eval", str(run), "--all", "--branches", "--evaluator", "mean-pixel", "--samples", "4"]))
    for name in made.values():
        record = RunStore(run / "branches" / name).round_record(0)
        assert record["metrics"]["mean-pixel"]["n_samples"] == 4
    assert "mean-pixel" in RunStore(run).round_record(1)["metrics"]  # the round kept its own score
    out = tmp_path / "report"
    _ok(runner.invoke(cli, ["report", str(run), "--out", str(out)]))
    text = (out / "report.md").read_text()
    assert all(name in text for name in made.values())

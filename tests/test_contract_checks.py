"""The engine checks every scorer's and schedule's output before training on it (issue 22).

Each bad component below was accepted with exit 0 before these checks; each case asserts the exit code,
one line on stderr naming the component and what to do, that the finished round is kept, and that no
file outside the run changed. ``test_contracts_builtins.py`` holds the good components' side.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
import toy_plugin
from click.testing import CliRunner
from helpers import core_registry

import ticketforge.builtins.schedules as builtin_schedules
import ticketforge.registry as registry_module
from ticketforge import ComponentRecord, Engine, RunConfig, hookimpl
from ticketforge.cli.main import cli
from ticketforge.engine.contract import Component, check_masks, check_scores
from ticketforge.errors import PluginError
from ticketforge.pruning import prune_groupwise
from ticketforge.store import RunStore
from ticketforge.testing import ModelSpecContract, ScheduleContract, ScorerContract, grouped_scores, toy_targets


def _uniform(scores, masks, p=0.2):
    return prune_groupwise(scores, masks, [p] * len(scores))


def _first_round(masks) -> bool:
    return all(bool(m.all()) for group in masks for m in group)


class Reviving:
    """Round 1 as uniform; later rounds bring every pruned weight back."""

    def validate(self, group_names):
        pass

    def prune(self, scores, masks):
        return _uniform(scores, masks) if _first_round(masks) else [[torch.ones_like(m) for m in g] for g in masks]


class FloatMasks:
    """uniform's masks times 0.5 as floats: `.bool()` made every entry true (a dense net recorded sparse)."""

    def validate(self, group_names):
        pass

    def prune(self, scores, masks):
        return [[m.float() * 0.5 for m in g] for g in _uniform(scores, masks)]


class EmptiesATensor:
    """uniform, except that the `fc` tensor (2nd of group `mid`) loses every weight."""

    def validate(self, group_names):
        pass

    def prune(self, scores, masks):
        new = _uniform(scores, masks)
        new[1][1] = torch.zeros_like(new[1][1])
        return new


class EmptiesEverything:
    def validate(self, group_names):
        pass

    def prune(self, scores, masks):
        return [[torch.zeros_like(m) for m in g] for g in masks]


class WrongShapeMasks:
    def validate(self, group_names):
        pass

    def prune(self, scores, masks):
        return [[m.reshape(-1) for m in g] for g in _uniform(scores, masks)]


class NanScores:
    """All-NaN scores: the stable sort then prunes by position."""

    def score(self, targets, ctx):
        return [torch.full_like(t.weight, float("nan")) for t in targets]


class IntScores:
    def score(self, targets, ctx):
        return [(t.weight.detach().abs() * 1000).long() for t in targets]


class TooFewScores:
    def score(self, targets, ctx):
        return [t.weight.detach().abs() for t in targets[:-1]]


class BadComponents:
    """An inline plugin registering the bad components by name, as a third-party distribution would."""

    @hookimpl
    def ticketforge_schedules(self):
        return [ComponentRecord("reviving", Reviving, "brings pruned weights back"),
                ComponentRecord("float-masks", FloatMasks, "float masks of 0.5"),
                ComponentRecord("empties-a-tensor", EmptiesATensor, "prunes all of fc"),
                ComponentRecord("empties-everything", EmptiesEverything, "prunes everything"),
                ComponentRecord("wrong-shape", WrongShapeMasks, "flat masks")]

    @hookimpl
    def ticketforge_scorers(self):
        return [ComponentRecord("nan-scores", NanScores, "NaN"),
                ComponentRecord("int-scores", IntScores, "integers"),
                ComponentRecord("too-few", TooFewScores, "one tensor short")]


@pytest.fixture
def runner(monkeypatch):
    monkeypatch.setattr(registry_module, "_registry", core_registry(BadComponents()))
    return CliRunner()


def tree_state(root: Path, skip: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` outside ``skip``: what must not change."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and skip not in p.parents}


def run_toy(runner: CliRunner, out: Path, *extra: str):
    return runner.invoke(cli, ["run", "--model", "toy", "--rounds", "2", "--steps-per-round", "4", "--device", "cpu",
                               "--out", str(out), "--quiet", "--no-artifacts", *extra])


def assert_one_line(result, code: int, *needles: str) -> str:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


PLUGIN = "(plugin BadComponents)"


@pytest.mark.parametrize("args,round_refused,needles", [
    (["--schedule", "reviving"], 2, ["schedule 'reviving' " + PLUGIN, "group 'inp'",
                                     "not a subset of the previous round's", "would come back",
                                     "choose another schedule"]),
    (["--schedule", "float-masks"], 1, ["schedule 'float-masks' " + PLUGIN, "torch.float32",
                                        "must be bool", "not cast", "choose another schedule"]),
    (["--schedule", "empties-a-tensor"], 1, ["schedule 'empties-a-tensor' " + PLUGIN, "'fc' (group 'mid')",
                                             "prune all", "lower --p"]),
    (["--schedule", "empties-everything"], 1, ["schedule 'empties-everything' " + PLUGIN,
                                               "prune all 784 remaining weights", "lower --p"]),
    (["--schedule", "wrong-shape"], 1, ["schedule 'wrong-shape' " + PLUGIN, "have shape (72,)", "(8, 1, 3, 3)"]),
    (["--schedule", "uniform", "--scorer", "nan-scores"], 1, ["scorer 'nan-scores' " + PLUGIN, "'inp' (group 'inp')",
                                                              "72 NaN or infinite entries", "choose another scorer"]),
    (["--schedule", "uniform", "--scorer", "int-scores"], 1, ["scorer 'int-scores' " + PLUGIN, "torch.int64",
                                                              "floating-point"]),
    (["--schedule", "uniform", "--scorer", "too-few"], 1, ["scorer 'too-few' " + PLUGIN,
                                                           "3 score tensors for 4 pruned tensors"]),
], ids=["reviving", "float-masks", "empties-a-tensor", "empties-everything", "wrong-shape", "nan-scores", "int-scores",
        "too-few-scores"])
def test_bad_plugin_output_is_refused_before_training(runner, tmp_path, args, round_refused, needles):
    (tmp_path / "thesis.txt").write_text("not to be touched")
    out = tmp_path / "run"
    before = tree_state(tmp_path, out)
    result = run_toy(runner, out, *args)
    assert_one_line(result, 2, *needles)
    assert tree_state(tmp_path, out) == before
    store = RunStore(out)
    assert store.finished_rounds() == list(range(round_refused))  # finished rounds are kept
    assert not store.has(f"rounds/{round_refused:04d}/masks.safetensors")  # nothing of the refused round


def test_a_builtin_schedule_that_prunes_another_count_than_its_ratio_is_refused(runner, tmp_path, monkeypatch):
    """A bug in the pooled pruning helper (one weight too many per group) is caught against the ratio."""
    def off_by_one(scores, masks, ratios):
        return prune_groupwise(scores, masks, [r + 1.5 / sum(int(m.sum()) for m in g) for g, r in zip(masks, ratios)])

    monkeypatch.setattr(builtin_schedules, "prune_groupwise", off_by_one)
    out = tmp_path / "run"
    result = run_toy(runner, out, "--schedule", "uniform", "--p", "20")
    assert_one_line(result, 2, "schedule 'uniform' (plugin ticketforge)", "group 'inp'", "keep 56 of 72 weights",
                    "its ratio 20.00% asks to keep 58")
    assert RunStore(out).finished_rounds() == [0]


def test_objects_passed_to_the_engine_are_named_by_class(tmp_path):
    cfg = RunConfig(model="toy", rounds=1, steps_per_round=4, device="cpu", out=str(tmp_path / "run"), artifacts=False)
    engine = Engine(cfg, schedule=FloatMasks(), registry=core_registry())
    with pytest.raises(PluginError, match=r"^schedule test_contract_checks\.FloatMasks \(a Python object\) returned "
                                          r"masks for group 'inp' that have dtype torch\.float32"):
        engine.run()


def test_a_builtin_schedule_may_empty_a_tensor_when_its_ratio_asks_it():
    """Pooled thresholds can empty a tensor at extreme sparsity: the asked count, not a contract breach."""
    toy = toy_targets()
    masks = toy.grouped([torch.ones_like(t.weight, dtype=torch.bool) for t in toy.targets])
    masks[1][1] = torch.zeros_like(masks[1][1])
    masks[1][1][0, 0] = True  # fc keeps one weight, with the lowest score of its group
    scores = grouped_scores(toy)
    scores[1][1] = torch.full_like(scores[1][1], -1.0)
    schedule = builtin_schedules.UniformSchedule(0.2)
    new = schedule.prune(scores, masks)
    assert not new[1][1].any()
    check_masks(schedule, new, masks, toy.targets, Component("schedule", "schedule 'uniform'"))
    with pytest.raises(PluginError, match="prune all 1 remaining weights of 'fc'"):
        check_masks(EmptiesATensor(), new, masks, toy.targets, Component("schedule", "schedule x"))


def test_within_tensor_is_held_to_each_tensors_own_count():
    """Two tensors of one group with 3 live weights each at 50%: each loses round(1.5) = 2, so the group
    keeps 2, where a pooled ratio would keep 3. The check holds the schedule to the rule it runs."""
    toy = toy_targets()
    masks = toy.grouped([torch.ones_like(t.weight, dtype=torch.bool) for t in toy.targets])
    for i in (0, 1):
        masks[1][i] = torch.zeros_like(masks[1][i])
        masks[1][i].view(-1)[:3] = True
    scores = grouped_scores(toy)
    schedule = builtin_schedules.UniformSchedule(0.5, within="tensor")
    new = schedule.prune(scores, masks)
    assert [int(m.sum()) for m in new[1]] == [1, 1]
    check_masks(schedule, new, masks, toy.targets, Component("schedule", "schedule 'uniform'"))
    pooled = builtin_schedules.UniformSchedule(0.5).prune(scores, masks)
    with pytest.raises(PluginError, match="keep 3 of 6 weights; its ratio 50.00% asks to keep 2"):
        check_masks(schedule, pooled, masks, toy.targets, Component("schedule", "schedule 'uniform'"))


def test_good_scores_pass_and_inf_scores_do_not():
    toy = toy_targets()
    scores = [t.weight.detach().abs() for t in toy.targets]
    check_scores(scores, toy.targets, Component("scorer", "scorer m"))
    scores[2] = scores[2].clone()
    scores[2][0, 0] = float("inf")  # inf is the already-pruned sentinel of prune_lowest
    with pytest.raises(PluginError, match=r"scores for 'fc' \(group 'mid'\) that have 1 NaN or infinite"):
        check_scores(scores, toy.targets, Component("scorer", "scorer m"))


# -- the contract mixins assert the same rules ------------------------------------------------------
@pytest.mark.parametrize("bad,words", [
    (FloatMasks(), "must be bool"),
    (Reviving(), "not a subset"),
    (EmptiesATensor(), "prune all"),
    (WrongShapeMasks(), "have shape"),
])
def test_schedule_mixin_fails_on_what_the_engine_refuses(bad, words):
    keep = 0.6 if isinstance(bad, Reviving) else 1.0
    with pytest.raises(pytest.fail.Exception, match=f"the engine would refuse this output: .*{words}"):
        ScheduleContract().test_passes_the_engine_checks(bad, keep=keep)


@pytest.mark.parametrize("bad,words", [(NanScores(), "NaN or infinite"), (IntScores(), "torch.int64"),
                                       (TooFewScores(), "3 score tensors for 4")])
def test_scorer_mixin_fails_on_what_the_engine_refuses(bad, words):
    with pytest.raises(pytest.fail.Exception, match=f"the engine would refuse this output: .*{words}"):
        ScorerContract().test_passes_the_engine_checks(bad, keep=1.0)


class WrongDataShape(toy_plugin.ToySpec):
    data_shape = (1, 16, 16)  # the toy is trained on 8x8 images


def test_spec_mixin_catches_a_data_shape_the_batches_do_not_have():
    contract = ModelSpecContract()
    contract.batch_shape = (2, 1, 8, 8)
    with pytest.raises(AssertionError, match=r"data_shape \(1, 16, 16\) differs from the training batches' \(1, 8, 8\)"):
        contract.test_declared_data_shape_is_what_the_loss_takes(WrongDataShape())

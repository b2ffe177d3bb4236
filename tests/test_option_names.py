"""Each command's KEY=VALUE option is named for what it sets, and --device means the same everywhere."""

from __future__ import annotations

import json

import click
import pytest
import toy_plugin
from click.testing import CliRunner
from helpers import core_registry

import ticketforge.registry as registry_module
from ticketforge import ComponentRecord, Option, hookimpl
from ticketforge.cli.main import all_commands, cli

SEEN: list[tuple[str, dict]] = []  # (what, the options it was given)


class _SeenSpec(toy_plugin.ToySpec):
    def sample(self, network, n, *, generator=None, **options):
        SEEN.append(("sampler", options))
        return super().sample(network, n, generator=generator)


class _SeenEvaluator:
    def __init__(self, scale: float = 1.0):
        SEEN.append(("evaluator", {"scale": scale}))
        self.scale = scale

    def evaluate(self, spec, network, *, dataset, n_samples, generator, device, **options):
        images = spec.sample(network, n_samples, generator=generator)
        return {"mean_pixel": self.scale * float(images.detach().mean()), "featurizer_sha256": "0" * 64}


class _Plugin:
    @hookimpl
    def ticketforge_models(self):
        return [ComponentRecord("toy-seen", _SeenSpec, "the toy net, recording its sampler options",
                                (Option("preset", str, None, "ignored"), Option("width", int, 8, "channels")))]

    @hookimpl
    def ticketforge_evaluators(self):
        return [ComponentRecord("seen", _SeenEvaluator, "records its options", (Option("scale", float, 1.0, "x"),))]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    registry = core_registry(_Plugin())
    out = tmp_path_factory.mktemp("options") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(registry_module, "_registry", registry)
        made = CliRunner().invoke(cli, ["run", "--model", "toy-seen", "--schedule", "uniform", "--rounds", "0",
                                        "--steps-per-round", "4", "--device", "cpu", "--out", str(out), "--quiet",
                                        "--no-artifacts"])
    assert made.exit_code == 0, made.output
    return out, registry


@pytest.fixture
def runner(run, monkeypatch):
    monkeypatch.setattr(registry_module, "_registry", run[1])
    SEEN.clear()
    return CliRunner()


@pytest.mark.parametrize("flag,warned", [("--sampler-option", False), ("--option", True)])
def test_sample_gives_sampler_options_to_the_sampler(runner, run, tmp_path, flag, warned):
    result = runner.invoke(cli, ["sample", str(run[0]), "--n", "2", "--steps", "2", "--device", "cpu", flag, "eta=0.5",
                                 "--out", str(tmp_path / "grid.png")])
    assert result.exit_code == 0, result.output
    assert SEEN[-1][0] == "sampler" and SEEN[-1][1]["eta"] == 0.5
    assert ("warning: --option is deprecated here: use --sampler-option" in result.stderr) == warned


@pytest.mark.parametrize("flag,warned", [("--evaluator-option", False), ("--option", True)])
def test_eval_gives_evaluator_options_to_the_evaluator(runner, run, flag, warned):
    result = runner.invoke(cli, ["eval", str(run[0]), "--evaluator", "seen", "--samples", "2", "--steps", "2",
                                 "--device", "cpu", flag, "scale=2", "--json"])
    assert result.exit_code == 0, result.output
    assert ("evaluator", {"scale": 2}) in SEEN
    assert ("warning: --option is deprecated here: use --evaluator-option" in result.stderr) == warned


@pytest.mark.parametrize("flag,warned", [("--model-option", False), ("--option", True)])
def test_flops_gives_model_options_to_the_model(runner, flag, warned):
    def params(*extra: str) -> int:
        result = runner.invoke(cli, ["flops", "--model", "toy-seen", *extra, "--json"])
        assert result.exit_code == 0, result.output
        assert ("warning: --option is deprecated here: use --model-option" in result.stderr) == (warned and bool(extra))
        return json.loads(result.stdout)["params"]

    assert params(flag, "width=4") < params()


def test_every_device_option_defaults_to_auto_or_the_runs_own():
    defaults = {}
    for name, command in all_commands().items():
        for param in command.params:
            if isinstance(param, click.Option) and "--device" in param.opts:
                defaults[name] = param.default
    assert {"compare", "report", "sample", "eval"} <= set(defaults)
    assert {name: d for name, d in defaults.items() if d not in ("auto", None)} == {}  # run, branch: None

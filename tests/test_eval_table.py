"""``ticketforge eval``'s table shows what is stored with a score: KID with its spread over subsets and
the featurizer's held-out accuracy (a featurizer that cannot classify makes distances meaningless)."""

from __future__ import annotations

import dataclasses

from click.testing import CliRunner
from helpers import core_registry

import ticketforge.registry as registry_module
from ticketforge import ComponentRecord, Engine, hookimpl
from ticketforge.cli.main import cli


class KidEvaluator:
    def evaluate(self, spec, network, **kwargs):
        return {"fd_lenet": 12.5, "kid_lenet": 0.0123, "kid_lenet_std": 0.0004, "n_samples": kwargs["n_samples"],
                "featurizer": "lenet", "featurizer_sha256": "f" * 64, "featurizer_test_accuracy": 0.987}


class Plain:
    def evaluate(self, spec, network, **kwargs):
        return {"toy_score": 1.0}


class Plugin:
    @hookimpl
    def ticketforge_evaluators(self):
        return [ComponentRecord("kid-toy", KidEvaluator, "reports KID and accuracy"),
                ComponentRecord("plain-toy", Plain, "a score alone")]


def _eval(toy_config, monkeypatch, evaluator):
    registry = core_registry(Plugin())
    monkeypatch.setattr(registry_module, "_registry", registry)
    Engine(dataclasses.replace(toy_config, rounds=1), registry=registry).run()
    monkeypatch.setenv("COLUMNS", "200")  # rich's width off a terminal
    result = CliRunner().invoke(cli, ["eval", toy_config.out, "--all", "--evaluator", evaluator, "--samples", "4",
                                      "--device", "cpu", "--progress", "none"])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_the_eval_table_shows_kid_with_its_std_and_the_featurizer_accuracy(toy_config, monkeypatch):
    out = _eval(toy_config, monkeypatch, "kid-toy")
    header = next(ln for ln in out.splitlines() if "┃ round" in ln)
    assert " kid ┃" in header and "featurizer acc" in header
    rows = [ln for ln in out.splitlines() if "fd_lenet" in ln]
    assert len(rows) == 2 and all("0.0123 ± 0.0004" in r and "98.70%" in r and "12.5000" in r for r in rows)


def test_an_evaluator_without_kid_gets_no_empty_columns(toy_config, monkeypatch):
    out = _eval(toy_config, monkeypatch, "plain-toy")
    header = next(ln for ln in out.splitlines() if "┃ round" in ln)
    assert "toy_score" in out and "kid" not in header and "acc" not in header

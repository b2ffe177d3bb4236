"""The command line: exit codes, one-line errors, the JSON shapes outside tools rely on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import toy_plugin
from click.testing import CliRunner
from helpers import StopAt, core_registry
from torch.utils.data import TensorDataset

import ticketforge.registry as registry_module
from ticketforge import ComponentRecord, hookimpl
from ticketforge.cli.main import cli
from ticketforge.errors import ConfigError
from ticketforge.store import RunStore


@pytest.fixture
def runner(registry, monkeypatch):
    monkeypatch.setattr(registry_module, "_registry", registry)
    return CliRunner()


def _toy_run(runner, out, *extra):
    return runner.invoke(cli, ["run", "--model", "toy", "--schedule", "uniform", "--rounds", "1", "--steps-per-round",
                               "10", "--device", "cpu", "--out", str(out), "--quiet", "--no-artifacts", *extra])


def test_run_then_inspect_json_has_the_stable_shape(runner, tmp_path):
    result = _toy_run(runner, tmp_path / "run")
    assert result.exit_code == 0, result.output
    doc = json.loads(runner.invoke(cli, ["inspect", str(tmp_path / "run"), "--json"]).output)
    assert set(doc) == {"run", "config", "rounds", "branches"} and doc["branches"] == []
    assert doc["config"]["model"] == "toy" and doc["config"]["steps_per_round"] == 10
    assert [r["round"] for r in doc["rounds"]] == [0, 1]
    r1 = doc["rounds"][1]
    assert set(r1) >= {"round", "sparsity", "mask_sha256", "groups", "metrics"}
    assert set(r1["groups"][0]) == {"index", "name", "params", "sparsity"}
    assert 0.15 < r1["sparsity"] < 0.25 and len(r1["mask_sha256"]) == 64



@pytest.mark.parametrize("stop,line", [
    ((0, 15), "round 0: step 10 of 20 (checkpointed)"),
    ((0, 5), "round 0: step 0 of 20 (no checkpoint yet: it starts at step 0)"),
    ((1, 15), "round 1: step 10 of 20 (checkpointed)"),
])
def test_inspect_of_an_unfinished_round_shows_its_step(runner, registry, tmp_path, stop, line):
    out = tmp_path / "run"
    stopper = StopAt(*stop)
    registry.pm.register(stopper)
    try:
        stopped = _toy_run(runner, out, "--steps-per-round", "20", "--log-every", "5", "--checkpoint-every", "10")
    finally:
        registry.pm.unregister(stopper)
    assert stopped.exit_code == 130, stopped.output
    shown = runner.invoke(cli, ["inspect", str(out)])
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.output.split())  # rich wraps at the terminal's width
    assert f"{line}; the same `ticketforge run` command resumes it" in text
    assert ("Rounds" in text) == (stop[0] > 0)  # no empty table when no round is finished
    assert ": toy, dataset" in text and "None" not in text  # no preset: none shown
    doc = json.loads(runner.invoke(cli, ["inspect", str(out), "--json"]).output)
    assert doc["unfinished"] == {"round": stop[0], "step": 10 if stop[1] == 15 else 0, "steps": 20,
                                 "checkpoint": stop[1] == 15}
    assert _toy_run(runner, out, "--steps-per-round", "20").exit_code == 0  # resumed to the end
    assert "unfinished" not in json.loads(runner.invoke(cli, ["inspect", str(out), "--json"]).output)


def test_inspect_names_the_preset_a_model_chose_when_none_was_given():
    from ticketforge.cli.inspect_cmd import model_text
    assert model_text({"model": "ddpm-unet", "preset": None, "model_config": {"preset": "tiny"}}) == \
        "ddpm-unet (tiny, the model's default)"
    assert model_text({"model": "ddpm-unet", "preset": "mnist", "model_config": {"preset": "mnist"}}) == \
        "ddpm-unet (mnist)"
    assert model_text({"model": "toy", "preset": None, "model_config": {"width": 8}}) == "toy"


def test_list_json_shape(runner):
    result = runner.invoke(cli, ["list", "--json"])
    doc = json.loads(result.output)
    for kind in ("scorers", "schedules", "models", "datasets", "similarities", "evaluators"):
        assert isinstance(doc[kind], list)
    assert {"name": "toy", "summary": "a tiny conv net for tests", "plugin": "toy_plugin"} in doc["models"]
    assert all(set(item) == {"name", "summary", "plugin"} for item in doc["scorers"])


@pytest.mark.parametrize("args,code,needle", [
    (["--schedule", "incremantal"], 2, "Did you mean 'incremental'"),
    (["--p", "60", "--q", "30", "--schedule", "incremental"], 2, "group 2 (out) would prune 120%"),
    (["--target-sparsity", "95"], 2, "write 0.9 for 90%"),
    pytest.param(["--device", "cuda:7"], 2, "no CUDA GPU is visible: use --device cpu",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="the message is for a machine without CUDA")),
    (["--config", "/nonexistent.toml"], 2, "does not exist"),
    (["--model-option", "nokey"], 2, "KEY=VALUE"),
    (["--cuda-graphs"], 2, "--cuda-graphs needs a CUDA device"),
])
def test_bad_input_is_one_line_with_exit_code_and_no_traceback(runner, tmp_path, args, code, needle):
    result = _toy_run(runner, tmp_path / "run", *args)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert needle and needle in lines[0]


def test_a_missing_run_is_a_failure(runner, tmp_path):
    # (a --data-root with no data: plugins/ticketforge-ddpm/tests/test_data_errors.py, the datasets' plugin)
    result = runner.invoke(cli, ["inspect", str(tmp_path)])
    assert result.exit_code == 1 and "is not a ticketforge run" in result.stderr
    assert len(result.stderr.splitlines()) == 1


class _Uncached(TensorDataset):
    def fingerprint(self) -> None:  # no data cache for a test's images
        return None


class _FolderData:
    """A dataset read from --data-root, refused in one line when that folder is missing."""

    @hookimpl
    def ticketforge_datasets(self):
        return [ComponentRecord("folder-data", self.load, "the toy images, from a folder that must exist")]

    @staticmethod
    def load(root=None, download=False, train=True):
        if root is None or not Path(root).is_dir():
            raise ConfigError(f"no images in {root}: give their folder with --data-root")
        return _Uncached(*toy_plugin.toy_data().tensors)


def test_a_wrong_data_root_leaves_nothing_that_refuses_the_corrected_command(monkeypatch, tmp_path):
    monkeypatch.setattr(registry_module, "_registry", core_registry(_FolderData()))
    runner, out, data = CliRunner(), tmp_path / "run", tmp_path / "data"
    data.mkdir()
    wrong = _toy_run(runner, out, "--dataset", "folder-data", "--data-root", str(tmp_path / "dta"))
    assert wrong.exit_code == 2 and wrong.stderr.splitlines() == [
        f"Error: no images in {tmp_path / 'dta'}: give their folder with --data-root"], wrong.output
    corrected = _toy_run(runner, out, "--dataset", "folder-data", "--data-root", str(data))
    assert corrected.exit_code == 0, corrected.output
    assert RunStore(out).read_config()["data_root"] == str(data) and RunStore(out).finished_rounds() == [0, 1]
    # Still one run folder per config: another one is refused before its data is read.
    other = _toy_run(runner, out, "--dataset", "folder-data", "--data-root", str(tmp_path / "dta"))
    assert other.exit_code == 2 and "holds a run with another config (data_root:" in other.stderr, other.output


def test_paths_in_a_toml_file_are_relative_to_its_folder_and_flags_to_the_working_directory(monkeypatch, tmp_path):
    monkeypatch.setattr(registry_module, "_registry", core_registry(_FolderData()))
    (tmp_path / "data").mkdir()
    (tmp_path / "experiments").mkdir()
    cfg = tmp_path / "experiments" / "c.toml"
    cfg.write_text('model = "toy"\nschedule = "uniform"\nrounds = 1\nsteps-per-round = 4\ndevice = "cpu"\n'
                   'dataset = "folder-data"\ndata-root = "../data"\nout = "runs/a"\nartifacts = false\n')
    monkeypatch.chdir(tmp_path)  # where ../data and runs/a would be other folders
    runner = CliRunner()
    result = runner.invoke(cli, ["run", "--config", "experiments/c.toml", "--quiet"])
    assert result.exit_code == 0, result.output
    config = RunStore(tmp_path / "experiments" / "runs" / "a").read_config()
    assert config["data_root"] == "data" and config["out"] == "experiments/runs/a"  # as the working directory sees them
    assert not (tmp_path / "runs").exists()
    result = runner.invoke(cli, ["run", "--config", str(cfg), "--out", "b", "--data-root", "data", "--quiet"])
    assert result.exit_code == 0, result.output  # flags: relative to the working directory
    assert RunStore(tmp_path / "b").read_config()["data_root"] == "data"


def test_toml_paths_that_are_absolute_or_home_relative_are_kept(tmp_path):
    from ticketforge.config import relative_to_file
    data = {"data-root": "/srv/mnist", "out": "~/runs/a", "ticket_run": "t", "runs-root": "../r", "seed": 1}
    assert relative_to_file(data, tmp_path / "exp") == {
        "data-root": "/srv/mnist", "out": "~/runs/a", "ticket_run": str(tmp_path / "exp" / "t"),
        "runs-root": str(tmp_path / "r"), "seed": 1}


def test_toml_config_with_flag_override(runner, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('model = "toy"\nschedule = "uniform"\nrounds = 1\nsteps-per-round = 10\np = 50.0\n'
                   f'device = "cpu"\nout = "{tmp_path / "run"}"\nartifacts = false\n')
    result = runner.invoke(cli, ["run", "--config", str(cfg), "--p", "40", "--quiet"])
    assert result.exit_code == 0, result.output
    doc = json.loads(runner.invoke(cli, ["inspect", str(tmp_path / "run"), "--json"]).output)
    assert doc["config"]["p"] == 40.0
    assert doc["rounds"][1]["sparsity"] == pytest.approx(0.4, abs=0.02)
    bad = tmp_path / "bad.toml"
    bad.write_text("stepz = 3\n")
    result = runner.invoke(cli, ["run", "--config", str(bad)])
    assert result.exit_code == 2 and "unknown key 'stepz'" in result.output


def test_export_command_reports_sizes(runner, tmp_path):
    assert _toy_run(runner, tmp_path / "run").exit_code == 0
    result = runner.invoke(cli, ["export", str(tmp_path / "run"), "--out", str(tmp_path / "t.safetensors")])
    assert result.exit_code == 0, result.output
    assert "bytes of dense fp32 weights" in result.output


def test_module_entry_point_runs(monkeypatch, capsys):
    """``python -m ticketforge`` runs the command: the module run as the interpreter runs it, here
    (test_error_messages.py starts ``python -m ticketforge`` as a process of its own, to signal it)."""
    import runpy
    import signal
    import sys

    monkeypatch.setattr(sys, "argv", ["ticketforge", "--help"])
    term = signal.getsignal(signal.SIGTERM)  # main() installs its own
    try:
        with pytest.raises(SystemExit) as done:
            runpy.run_module("ticketforge", run_name="__main__")
    finally:
        signal.signal(signal.SIGTERM, term)
    assert done.value.code == 0 and "lottery tickets" in capsys.readouterr().out


def test_progress_reporter_prints_the_round_table_after_each_round(registry, tmp_path):
    import dataclasses
    import io

    from rich.console import Console

    from ticketforge import Engine, RunConfig
    from ticketforge.builtins.reporter import RichReporter

    buf = io.StringIO()
    registry.pm.register(RichReporter(Console(file=buf, width=120)))
    cfg = RunConfig(model="toy", schedule="uniform", rounds=1, steps_per_round=10, device="cpu",
                    out=str(tmp_path / "run"), log_every=5, artifacts=False)
    Engine(cfg, registry=registry).run()
    text = buf.getvalue()
    assert "after round 0" in text and "after round 1" in text
    after_1 = text.split("after round 1")[1]
    assert "│     0 │" in after_1 and "│     1 │" in after_1  # both rounds in the table
    buf.truncate(0)
    Engine(dataclasses.replace(cfg), registry=registry).run()  # resumed, nothing to train
    assert "resuming: rounds 0, 1 already finished" in buf.getvalue()

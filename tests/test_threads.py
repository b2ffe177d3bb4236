"""--threads: torch's CPU thread count, chosen by auto or given, recorded, and never part of a run's identity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import ticketforge.registry as registry_module
from ticketforge import Engine, RunConfig
from ticketforge.cli.main import cli
from ticketforge.errors import ConfigError
from ticketforge.threads import check_threads, resolve_threads, threads_applied

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
TOY = ["run", "--model", "toy", "--schedule", "uniform", "--rounds", "1", "--steps-per-round", "6", "--device", "cpu",
       "--quiet", "--no-artifacts", "--log-every", "3"]


@pytest.fixture
def runner(registry, monkeypatch):
    monkeypatch.setattr(registry_module, "_registry", registry)
    return CliRunner()


@pytest.fixture(autouse=True)
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("cores, wanted", [(1, 1), (2, 1), (3, None), (16, None)])
def test_auto_is_one_thread_on_a_cpu_of_at_most_two_cores(cores, wanted):
    assert resolve_threads("auto", CPU, cores=cores, environ={}) == wanted


def test_auto_leaves_torch_alone_on_a_gpu_and_under_omp_num_threads():
    assert resolve_threads("auto", CUDA, cores=2, environ={}) is None
    assert resolve_threads("auto", CPU, cores=2, environ={"OMP_NUM_THREADS": "2"}) is None


def test_a_given_count_is_used_on_every_device():
    assert resolve_threads(3, CPU, cores=2, environ={"OMP_NUM_THREADS": "1"}) == 3
    assert resolve_threads("2", CUDA, cores=16, environ={}) == 2


@pytest.mark.parametrize("bad", [0, -1, "x", "1.5", 1.5, True, None])
def test_bad_counts_are_refused_in_one_line(bad):
    with pytest.raises(ConfigError, match=r"^threads must be auto or a number of threads >= 1"):
        check_threads(bad)


def test_threads_applied_restores_the_callers_count():
    torch.set_num_threads(2)
    with threads_applied(1, CPU) as used:
        assert used == 1 == torch.get_num_threads()
    assert torch.get_num_threads() == 2


def test_threads_are_recorded_and_not_part_of_the_identity(toy_config, registry):
    assert RunConfig(threads=2).digest() == RunConfig().digest()
    assert RunConfig(threads=1).identity() == RunConfig().identity() == {}
    torch.set_num_threads(2)
    records = Engine(toy_config, threads=1, registry=registry).run()
    assert [r["metrics"]["threads"] for r in records] == [1, 1, 1]
    assert torch.get_num_threads() == 2  # the caller's count again
    assert json.loads((Path(toy_config.out) / "config.json").read_text())["threads"] == 1


def test_a_run_resumes_under_another_thread_count(runner, tmp_path):
    out = str(tmp_path / "run")
    first = runner.invoke(cli, [*TOY, "--out", out, "--threads", "1"])
    assert first.exit_code == 0, first.output
    more = runner.invoke(cli, [*TOY, "--out", out, "--threads", "2", "--rounds", "2"])
    assert more.exit_code == 0, more.output  # not "holds a run with another config"
    rounds = json.loads(runner.invoke(cli, ["inspect", out, "--json"]).output)["rounds"]
    assert [r["metrics"]["threads"] for r in rounds] == [1, 1, 2]


@pytest.mark.parametrize("command", [TOY, ["sample", "RUN", "--out", "x.png"], ["eval", "RUN", "--evaluator", "x"]])
@pytest.mark.parametrize("value", ["0", "many"])
def test_the_flag_refuses_a_bad_count_in_one_line(runner, tmp_path, command, value):
    args = [str(tmp_path) if a == "RUN" else a for a in command]
    result = runner.invoke(cli, [*args, "--threads", value])
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--threads" in lines[0] and "auto or a number of threads >= 1" in lines[0], result.stderr

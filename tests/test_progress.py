"""Progress that tells the truth: updates by the clock (not every log_every steps), seconds per step
when slow, the resume and compile messages, and the progress= argument of the Python API."""

from __future__ import annotations

import dataclasses
import io
import itertools
import os
import signal

import pytest
import torch
from click.testing import CliRunner
from rich.console import Console

import ticketforge.registry as registry_module
from ticketforge import Engine, branch, hookimpl
from ticketforge.builtins.reporter import rounds_table
from ticketforge.cli.main import cli
from ticketforge.engine.engine import cpu_compile_warning
from ticketforge.engine.interrupts import StepBoundary, interrupted_at
from ticketforge.errors import UsageError
from ticketforge.progress import LogProgress, ProgressEvent, Task, format_rate, progress_line, resolve


class FakeClock:
    """A clock that moves ``tick`` seconds at every read."""

    def __init__(self, tick: float) -> None:
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


class SteppedClock:
    """A clock set by the test."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    def __init__(self) -> None:
        self.progress: list[int] = []
        self.logged: list[int] = []

    @hookimpl
    def ticketforge_train_progress(self, run, round_index, step, steps, steps_per_s):
        self.progress.append(step)

    @hookimpl
    def ticketforge_train_step(self, run, round_index, step, metrics):
        self.logged.append(step)


# -- tasks update by time ---------------------------------------------------------------------------
def test_a_task_sends_one_update_per_interval_whatever_the_step_count():
    events: list[ProgressEvent] = []
    clock = SteppedClock()
    bar = Task(events.append, "round 0", 100, clock=clock, interval=1.0)
    for step, t in zip(range(1, 11), [0.1, 0.2, 0.5, 1.0, 1.1, 1.9, 2.0, 2.5, 3.4, 3.5]):
        clock.now = t
        bar.set(step)
    assert [e.done for e in events if e.kind == "update"] == [4, 7, 9]  # at t = 1.0, 2.0 and 3.4
    clock.now = 100.0
    bar.set(11)  # one slow step: an update at once
    assert events[-1].done == 11


def test_the_rate_leaves_out_the_first_step_which_compiles():
    events: list[ProgressEvent] = []
    clock = SteppedClock()
    bar = Task(events.append, "round 0", 10, clock=clock, interval=0.0)
    clock.now = 60.0
    bar.set(1)  # a minute of compilation
    assert events[-1].rate is None
    clock.now = 62.0
    bar.set(5)
    assert events[-1].rate == pytest.approx(2.0)  # 4 steps in 2 s, not 5 in 62


@pytest.mark.parametrize("tick,expected", [(1.0, list(range(1, 21))), (0.0, [20])])
def test_the_engine_reports_progress_by_the_clock_between_log_steps(toy_config, registry, tick, expected):
    recorder = Recorder()
    registry.pm.register(recorder)
    engine = Engine(dataclasses.replace(toy_config, rounds=0, log_every=50), registry=registry)
    engine.progress_clock = FakeClock(tick)
    engine.run()
    assert recorder.logged == [20]  # the loss: at log steps (and the last) only
    assert recorder.progress == expected  # a second per clock read: every step; a frozen clock: the last


# -- seconds per step when slow ---------------------------------------------------------------------
def test_slow_steps_show_seconds_per_step_not_zero_steps_per_second():
    assert format_rate(0.25) == "4.0 s/step"
    assert format_rate(2.5) == "2.5 step/s"
    assert format_rate(0.5, "image") == "2.0 s/image"
    line = progress_line(ProgressEvent("update", "round 3", 10, 100, rate=0.1))
    assert "10.0 s/step" in line and "ETA 0:15:00" in line and "step/s" not in line
    buf = io.StringIO()
    Console(file=buf, width=200).print(rounds_table([{"round": 0, "sparsity": 0.0, "mask_sha256": "ab" * 32,
                                                      "metrics": {"loss": 0.1, "steps_per_s": 0.05}}]))
    assert "20.0 s/step" in buf.getvalue()


def test_log_lines_go_by_the_tasks_own_clock():
    buf = io.StringIO()
    log = LogProgress(buf, every=10.0)
    log(ProgressEvent("start", "sampling", 0, 40, "image"))
    for done, elapsed in [(1, 0.5), (2, 1.2), (5, 5.0), (9, 11.0), (10, 11.5), (40, 22.0)]:
        log(ProgressEvent("update", "sampling", done, 40, "image", 1.0, elapsed))
    log(ProgressEvent("end", "sampling", 40, 40, "image", 1.0, 22.5))
    lines = buf.getvalue().splitlines()
    assert [ln.split(":")[1].split()[0] for ln in lines[:-1]] == ["2/40", "10/40", "40/40"]
    assert lines[-1] == "sampling: 40/40 images in 0:00:22"
    quick = io.StringIO()
    log = LogProgress(quick)
    log(ProgressEvent("start", "features", 0, 4, "image"))
    log(ProgressEvent("update", "features", 4, 4, "image", 100.0, 0.04))
    log(ProgressEvent("end", "features", 4, 4, "image", 100.0, 0.05))
    assert quick.getvalue() == ""  # a task done within a second prints nothing


# -- the Python API ---------------------------------------------------------------------------------
def test_engine_run_takes_a_progress_callable(toy_config, registry):
    events: list[ProgressEvent] = []
    Engine(dataclasses.replace(toy_config, rounds=1), registry=registry).run(progress=events.append)
    rounds = [e for e in events if e.task.startswith("round 1")]
    assert [rounds[0].kind, rounds[-1].kind] == ["start", "end"] and rounds[-1].done == 20
    assert any(e.kind == "update" and "loss" in e.info for e in rounds)
    assert any(e.kind == "message" and e.message.startswith("round 1 finished") for e in events)
    assert registry.pm.get_plugin("progress-reporter") is None  # unregistered afterwards


def test_branch_takes_progress_too(toy_config, registry):
    Engine(dataclasses.replace(toy_config, rounds=1), registry=registry).run()
    events: list[ProgressEvent] = []
    branch(toy_config.out, 1, masks="random", registry=registry, progress=events.append)
    assert events[0].kind == "start" and events[0].task.startswith("round 0") and events[-1].kind == "message"


def test_an_unknown_progress_is_refused():
    with pytest.raises(UsageError, match="unknown progress 'bars'"):
        resolve("bars")


# -- resuming says so -------------------------------------------------------------------------------
class Interrupt:
    @hookimpl
    def ticketforge_train_step(self, run, round_index, step, metrics):
        if (round_index, step) == (1, 15):
            raise KeyboardInterrupt


def test_a_resumed_round_says_from_which_step(toy_config, registry):
    cfg = dataclasses.replace(toy_config, rounds=1, log_every=5, checkpoint_every=5)
    stop = Interrupt()
    registry.pm.register(stop)
    with pytest.raises(KeyboardInterrupt) as caught:
        Engine(cfg, registry=registry).run()
    registry.pm.unregister(stop)
    at = interrupted_at(caught.value)
    assert (at.what, at.step, at.now) == ("round 1", 10, False)  # the hook raised before step 15's checkpoint
    assert "resumes from its checkpoint at step 10 of 20" in at.describe()
    events: list[ProgressEvent] = []
    Engine(cfg, registry=registry).run(progress=events.append)
    messages = [e.message for e in events if e.kind == "message"]
    assert "resuming round 1 from step 10 (of 20)" in messages
    start = next(e for e in events if e.kind == "start")
    assert start.done == 10 and start.total == 20


# -- Ctrl-C waits for the step in flight only when there is something to save ------------------------
def test_the_step_boundary_holds_a_signal_only_while_a_step_is_unsaved():
    with pytest.raises(KeyboardInterrupt):
        with StepBoundary() as boundary:
            os.kill(os.getpid(), signal.SIGINT)  # nothing to save yet: at once
            for _ in itertools.repeat(None, 10 ** 6):  # the handler runs between bytecodes
                pass
    with StepBoundary() as boundary:
        boundary.unsaved = True
        os.kill(os.getpid(), signal.SIGINT)
        for _ in itertools.repeat(None, 10 ** 5):
            pass
        assert boundary.pending == signal.SIGINT  # held, not raised
        with pytest.raises(KeyboardInterrupt):
            boundary.deliver()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


# -- compiling --------------------------------------------------------------------------------------
TOY = ["--model", "toy", "--schedule", "uniform", "--rounds", "0", "--steps-per-round", "4", "--device", "cpu",
       "--no-artifacts", "--progress", "log"]


def test_compile_on_a_cpu_warns_in_one_line_and_says_what_the_first_step_took(registry, tmp_path, monkeypatch):
    compiled: list[object] = []
    monkeypatch.setattr(torch, "compile", lambda net, **kw: compiled.append(net) or net)  # no real compilation
    monkeypatch.setattr(registry_module, "_registry", registry)
    result = CliRunner().invoke(cli, ["run", *TOY, "--compile", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert compiled, "the network was not given to torch.compile"
    err = result.stderr.splitlines()
    warnings = [ln for ln in err if ln.startswith("warning:")]
    assert len(warnings) == 1 and "--compile on a CPU" in warnings[0] and "without --compile" in warnings[0]
    assert err.index(warnings[0]) < err.index("compiling the training step (first steps take longer)")
    assert any(ln.startswith("compiled the training step: the first step took 0:00:") for ln in err), err
    plain = CliRunner().invoke(cli, ["run", *TOY, "--out", str(tmp_path / "plain")])
    assert "warning" not in plain.stderr and "compiling" not in plain.stderr  # nothing without --compile


def test_no_compile_warning_off_the_cpu():
    assert cpu_compile_warning(torch.device("cuda")) is None
    assert cpu_compile_warning(torch.device("cpu"))

"""Run a toy engine in a subprocess, optionally SIGKILLing itself at a chosen moment (resume tests).

Usage: python run_toy.py OUT [--kill-at-step R:S | --kill-in-write NAME] [--pause-at R:S CONTROL] [--rounds N]

``--pause-at R:S CONTROL`` holds the run (and its lock) at round R, step S: it writes CONTROL/ready
and waits until CONTROL/go exists (a second process can then try the same folder).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from helpers import core_registry  # noqa: E402

import ticketforge.store.atomic as atomic  # noqa: E402
from ticketforge import Engine, RunConfig, hookimpl  # noqa: E402


class KillAtStep:
    def __init__(self, round_index: int, step: int):
        self.round_index, self.step = round_index, step

    @hookimpl
    def ticketforge_train_step(self, run, round_index, step, metrics):
        if (round_index, step) == (self.round_index, self.step):
            os.kill(os.getpid(), signal.SIGKILL)


class PauseAtStep:
    def __init__(self, round_index: int, step: int, control: Path):
        self.round_index, self.step, self.control = round_index, step, control

    @hookimpl
    def ticketforge_train_step(self, run, round_index, step, metrics):
        if (round_index, step) == (self.round_index, self.step):
            (self.control / "ready").write_text(str(os.getpid()))
            deadline = time.monotonic() + 300
            while not (self.control / "go").exists() and time.monotonic() < deadline:
                time.sleep(0.05)


def kill_during_write(name: str) -> None:
    """SIGKILL after the temp file of ``name`` is written, before it replaces the old file."""
    real = os.replace

    def replace(src, dst):
        if Path(dst).name == name:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(src, dst)

    atomic.os.replace = replace  # type: ignore[attr-defined]


def run_config(out: str | Path, rounds: int = 2) -> RunConfig:
    """The run this script makes (tests make the same one in-process to compare with)."""
    return RunConfig(model="toy", schedule="uniform", rounds=rounds, steps_per_round=20, device="cpu", out=str(out),
                     log_every=5, checkpoint_every=5, artifacts=False)


def main(argv: list[str]) -> None:
    out = argv[0]
    torch.set_num_threads(1)  # as the tests in-process (conftest.py): a toy, on a shared CPU
    registry = core_registry()
    if "--kill-at-step" in argv:
        round_index, step = map(int, argv[argv.index("--kill-at-step") + 1].split(":"))
        registry.pm.register(KillAtStep(round_index, step))
    if "--kill-in-write" in argv:
        kill_during_write(argv[argv.index("--kill-in-write") + 1])
    if "--pause-at" in argv:
        at = argv.index("--pause-at")
        round_index, step = map(int, argv[at + 1].split(":"))
        registry.pm.register(PauseAtStep(round_index, step, Path(argv[at + 2])))
    rounds = int(argv[argv.index("--rounds") + 1]) if "--rounds" in argv else 2
    Engine(run_config(out, rounds), registry=registry).run()


if __name__ == "__main__":
    main(sys.argv[1:])

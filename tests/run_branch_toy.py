"""A toy run (and optionally a branch of it) in a subprocess that can SIGKILL itself at a logged step.

Usage: python run_branch_toy.py OUT [--tau-frac F] [--keep F,F] [--kill-at-step ROUND:STEP]
                                    [--branch ROUND [--masks M] [--start S]]
With ``--branch`` the run is finished first (without kills) and the kill applies to the branch (round 0).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).parent))

import run_toy  # noqa: E402
import torch  # noqa: E402
from helpers import core_registry  # noqa: E402
from run_toy import KillAtStep  # noqa: E402

from ticketforge import Engine, RunConfig, branch  # noqa: E402


def _arg(argv: list[str], name: str, default: str | None = None) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else default


def run_config(out: str | Path, tau_frac: float = 0.05, keep: Sequence[float] = ()) -> RunConfig:
    """The run this script makes (tests make the same one in-process to compare with)."""
    return dataclasses.replace(run_toy.run_config(out), tau_frac=tau_frac, keep_rewind_points=list(keep))


def main(argv: list[str]) -> None:
    out = argv[0]
    torch.set_num_threads(1)  # as the tests in-process (conftest.py)
    registry = core_registry()
    keep = _arg(argv, "--keep")
    config = run_config(out, float(_arg(argv, "--tau-frac", "0.05")), [float(f) for f in keep.split(",")] if keep else [])
    kill = _arg(argv, "--kill-at-step")
    killer = KillAtStep(*map(int, kill.split(":"))) if kill else None
    if "--branch" not in argv:
        if killer:
            registry.pm.register(killer)
        Engine(config, registry=registry).run()
        return
    Engine(config, registry=registry).run()
    if killer:
        registry.pm.register(killer)
    branch(out, int(_arg(argv, "--branch")), masks=_arg(argv, "--masks", "ticket"), start=_arg(argv, "--start", "tau"),
           registry=registry)


if __name__ == "__main__":
    main(sys.argv[1:])

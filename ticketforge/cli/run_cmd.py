"""``ticketforge run``: find a ticket (train, prune, rewind, repeat)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from ..engine import Engine, RunConfig
from ..errors import UsageError
from .options import progress_option
from .settings_options import given_settings, setting_options


@click.command("run")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="TOML file with the same keys as these flags (flags override it). Paths in it are relative "
                   "to its folder; paths given as flags, to the working directory.")
@setting_options
@click.option("--nproc", type=int, default=None,
              help="Train each round on N processes (GPUs) of this machine: re-executes this command under "
                   "torchrun --standalone --nproc-per-node N. The batch size stays the global batch. [default: 1]")
@click.option("--fresh", is_flag=True,
              help="Delete the run's files and start over instead of resuming (only a ticketforge run's files, "
                   "and only when no other process holds the run).")
@click.option("--quiet", is_flag=True, help="No progress display (--progress none).")
@progress_option
def command(config_file: str | None, fresh: bool, quiet: bool, progress: str, nproc: int | None,
            **flags: object) -> None:
    """Find a lottery ticket: train, prune, rewind, repeat.

    Giving the same command again resumes: finished rounds are skipped and an interrupted round
    continues from its last checkpoint. Ctrl-C (or SIGTERM) finishes the step in flight and checkpoints
    it; a second Ctrl-C stops at once. Percent values are written as in the paper
    (--prune-percent 20 --prune-increment 1, or --p 20 --q 1 where no torchrun parses them).

    \b
    Examples:
      ticketforge run --model ddpm-unet --schedule incremental
      ticketforge run --preset mnist --dataset mnist --data-root ../shared/data/mnist --rounds 10
      ticketforge run --config experiments/mnist.toml --seed 1
      ticketforge run --preset cifar10 --nproc 2
      torchrun --standalone --nproc-per-node 2 -m ticketforge run --preset cifar10      (the same)
    """
    if nproc is not None:
        if nproc < 1:
            raise UsageError(f"--nproc must be at least 1, not {nproc}")
        world = os.environ.get("WORLD_SIZE")
        if world is None and nproc > 1:
            from ..engine.distributed import relaunch
            # Every argument as given, --nproc too: each process checks it against WORLD_SIZE below.
            raise SystemExit(relaunch(nproc, sys.argv[1:]))
        if world is not None and int(world) != nproc:
            raise UsageError(f"--nproc {nproc} under torchrun with WORLD_SIZE {world}: drop --nproc")
    config = RunConfig.from_toml(config_file) if config_file else RunConfig()
    config = config.merged(given_settings(flags, config))
    engine = Engine(config, fresh=fresh)
    engine.run(progress="none" if quiet else progress)
    if engine.dist.is_main:
        click.echo(f"Run folder: {Path(engine.run_dir)}")

"""``ticketforge run``: find a ticket (train, prune, rewind, repeat)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from ..engine import Engine, RunConfig
from ..engine.config import BASELINES, PRECISIONS, REWIND_MODES
from ..errors import UsageError
from .options import THREADS_HELP, ThreadsParam, parse_fractions, parse_key_values, progress_option


@click.command("run")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="TOML file with the same keys as these flags (flags override it). Paths in it are relative "
                   "to its folder; paths given as flags, to the working directory.")
@click.option("--model", default=None, help="Model plugin name (see `ticketforge list models`). [default: ddpm-unet]")
@click.option("--preset", default=None, help="Model preset, e.g. quickstart, mnist, cifar10. [default: the model's]")
@click.option("--model-option", "model_options", multiple=True, metavar="KEY=VALUE",
              help="Extra model keyword argument, repeatable (e.g. ch=64).")
@click.option("--dataset", default=None, help="Dataset name (see `ticketforge list datasets`). [default: the preset's]")
@click.option("--data-root", default=None, help="Folder (or file) the dataset is read from.")
@click.option("--download/--no-download", default=None, help="Let torchvision download the dataset into --data-root.")
@click.option("--schedule", default=None, help="Pruning schedule: uniform, incremental, global, ... [default: incremental]")
@click.option("--scorer", default=None, help="Weight scorer: magnitude, random, ... [default: magnitude]")
# Long names first: after `torchrun`, argparse takes --p for its own --print-completion (torch >= 2.14).
@click.option("--prune-percent", "--p", "p", type=float, default=None,
              help="Percent of each group's remaining weights pruned per round (the paper's p). [default: 20]")
@click.option("--prune-increment", "--q", "q", type=float, default=None,
              help="Incremental schedule: group j prunes p + j*q percent (the paper's q). [default: 1]")
@click.option("--rounds", type=int, default=None, help="Number of prunings (round 0 is the dense run). [default: the preset's]")
@click.option("--steps-per-round", type=int, default=None, help="Training steps per round. [default: the preset's]")
@click.option("--target-sparsity", type=float, default=None, help="Stop once this fraction is pruned (e.g. 0.95).")
@click.option("--rewind", type=click.Choice(REWIND_MODES), default=None,
              help="Rewind survivors to theta_tau (tau), theta_0 (init), or keep trained weights (none). [default: tau]")
@click.option("--tau-frac", type=float, default=None, help="Rewind point as a fraction of the round's steps. [default: 0.05]")
@click.option("--keep-rewind-points", default=None, metavar="F,F,...", callback=parse_fractions,
              help="Also keep theta at these fractions of round 0's steps (e.g. 0,0.05,0.2), so that "
                   "`ticketforge branch --rewind-fraction F` can start from them later. Not part of the run's "
                   "identity; asked for once round 0 is finished, they can no longer be recorded.")
@click.option("--baseline", type=click.Choice(BASELINES), default=None,
              help="Iterative sanity baseline, a pruning trajectory of its own: random-reinit (rewinds every "
                   "round to a second init) or random-prune (random positions at the ticket's per-tensor "
                   "counts). The canonical controls of one ticket are `ticketforge branch`. [default: none]")
@click.option("--ticket-run", default=None,
              help="random-prune: the run folder of its ticket (the same config with --baseline none), whose "
                   "per-tensor counts each round copies. [default: the folder that config's hash names]")
@click.option("--seed", type=int, default=None, help="Seed of init, data order, noise and random choices. [default: 0]")
@click.option("--init-seed", type=int, default=None,
              help="Seed of the initial weights alone, so that two runs share theta_0 but not their data order "
                   "and noise (--seed 1 --init-seed 0). [default: --seed]")
@click.option("--batch-size", type=int, default=None, help="Training batch size. [default: the preset's]")
@click.option("--lr", type=float, default=None, help="Peak learning rate. [default: the preset's]")
@click.option("--precision", type=click.Choice(PRECISIONS), default=None,
              help="fp32, tf32 or bf16 autocast; auto = tf32 on a GPU, fp32 on a CPU. [default: auto]")
@click.option("--compile/--no-compile", "compile_", default=None,
              help="torch.compile the network (on a GPU: channels-last layout inside the compiled graph). "
                   "[default: off]")
@click.option("--cuda-graphs/--no-cuda-graphs", default=None,
              help="Record each round's whole training step (loss, backward, clipping, Adam, EMA) as one "
                   "CUDA graph after 3 eager steps and replay it. One GPU only. [default: on with --compile "
                   "on one GPU]")
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N. [default: auto]")
@click.option("--threads", type=ThreadsParam(), default=None,
              help=THREADS_HELP + " Recorded, not part of the run's identity (a run may resume with "
                   "another count). [default: auto]")
@click.option("--out", default=None,
              help="Run folder. [default: runs/<model>-<schedule>[-<scorer>][-<baseline>]-<config hash>, "
                   "scorer and baseline when not the default]")
@click.option("--log-every", type=int, default=None, help="Log (and check the loss) every N steps. [default: 50]")
@click.option("--checkpoint-every", type=int, default=None, help="Checkpoint the round every N steps. [default: 500]")
@click.option("--artifacts/--no-artifacts", default=None, help="Write sample grids each round. [default: on]")
@click.option("--nproc", type=int, default=None,
              help="Train each round on N processes (GPUs) of this machine: re-executes this command under "
                   "torchrun --standalone --nproc-per-node N. The batch size stays the global batch. [default: 1]")
@click.option("--fresh", is_flag=True,
              help="Delete the run's files and start over instead of resuming (only a ticketforge run's files, "
                   "and only when no other process holds the run).")
@click.option("--quiet", is_flag=True, help="No progress display (--progress none).")
@progress_option
def command(config_file: str | None, model_options: tuple[str, ...], fresh: bool, quiet: bool, progress: str,
            compile_: bool | None, nproc: int | None, **flags: object) -> None:
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
    overrides = dict(flags)
    overrides["compile"] = compile_
    if model_options:
        overrides["model_options"] = {**config.model_options, **parse_key_values(model_options, "--model-option")}
    config = config.merged(overrides)
    engine = Engine(config, fresh=fresh)
    engine.run(progress="none" if quiet else progress)
    if engine.dist.is_main:
        click.echo(f"Run folder: {Path(engine.run_dir)}")

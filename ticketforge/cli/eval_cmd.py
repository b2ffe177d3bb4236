"""``ticketforge eval``: score a round's (or a branch's) samples with an evaluator and store the scores with it."""

from __future__ import annotations

import click
from rich.console import Console

from ..errors import UsageError
from ..evaluation import EvalItem, evaluate_items
from .eval_table import scores_table
from .options import (
    check_seed,
    echo_json,
    given_options,
    json_option,
    key_values_option,
    progress_option,
    round_option,
    sampling_options,
)

MIN_REPORTED_SAMPLES = 10000


def eval_items(run: str, round_: int | None, all_rounds: bool, branch: str | None, all_branches: bool
               ) -> tuple[list[EvalItem], list[str]]:
    """The items that ``eval RUN [--round K | --all] [--branch NAME | --branches]`` scores, and notes to print."""
    from ..branches import list_branches, resolve_source
    from ..store import RunStore
    if all_rounds and round_ is not None:
        raise UsageError("give --round K or --all, not both")
    if branch is not None and (all_rounds or all_branches):
        raise UsageError("--branch NAME scores one branch: drop --all/--branches, or drop --branch")
    if all_branches and round_ is not None:
        raise UsageError("--branches scores every finished branch: give it alone or with --all, not with --round")
    if branch is not None:
        path, k, info = resolve_source(run, branch, round_)
        return [EvalItem(str(path), k, info.name if info else None)], []
    items: list[EvalItem] = []
    if not all_branches or all_rounds:
        rounds = RunStore(run).finished_rounds() if all_rounds else ([round_] if round_ is not None else None)
        if rounds == []:
            raise UsageError(f"{run} has no finished round yet")
        items += [EvalItem(run, k) for k in (rounds if rounds is not None else [None])]
    notes = []
    if all_branches:
        branches = list_branches(run)
        notes = [f"note: skipping branch {b.name} ({b.status})" for b in branches if not b.finished]
        finished = [b for b in branches if b.finished]
        if not finished and not items:
            raise UsageError(f"{run} has no finished branch" + (f" ({len(branches)} unfinished)" if branches else
                             f": make one with `ticketforge branch {run} --round K`"))
        items += [EvalItem(str(b.path), 0, b.name) for b in finished]
    return items, notes


@click.command("eval")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@round_option
@click.option("--all", "all_rounds", is_flag=True, help="Evaluate every finished round.")
@click.option("--branch", default=None, metavar="NAME",
              help="Evaluate this branch of RUN (name, unique prefix or part such as reinit; "
                   "`inspect RUN` lists them).")
@click.option("--branches", "all_branches", is_flag=True,
              help="Evaluate every finished branch of RUN (with --all: the rounds too), in one process.")
@click.option("--evaluator", required=True, help="Evaluator name (ticketforge list shows them): fid, fd-lenet, ...")
@click.option("--samples", "n_samples", type=int, default=MIN_REPORTED_SAMPLES, show_default=True,
              help="Generated samples per round.")
@key_values_option("--evaluator-option", "Option of the evaluator, repeatable (e.g. batch_size=500; "
                                         "`ticketforge list evaluators` names them).")
@sampling_options
@progress_option
@json_option
def command(run: str, round_: int | None, all_rounds: bool, branch: str | None, all_branches: bool, evaluator: str,
            n_samples: int, sampler: str | None, steps: int, options: tuple[str, ...], old_options: tuple[str, ...],
            seed: int, no_ema: bool, device: str, threads: int | str, precision: str, compile_: bool,
            progress: str, as_json: bool) -> None:
    """Score generated samples of a round (or --all rounds) and store the scores with the round.

    --branch NAME (or a branch folder as RUN) scores a branch and stores the scores in the branch's
    record; --branches scores every finished branch, --all --branches the rounds and the branches,
    all in one process (the denoiser is compiled once). Every score is stored with its sample
    count, sampler, steps, seed and featurizer sha256. Under torchrun the samples are drawn across
    the processes.

    \b
    Examples:
      ticketforge eval runs/<run> --all --branches --evaluator fd-lenet --compile --precision bf16
      torchrun --nproc-per-node 2 -m ticketforge eval runs/<run> --all --evaluator fd-lenet
    """
    from ..engine.distributed import launch_env
    from ..engine.engine import resolve_device
    from ..threads import apply_threads
    check_seed(seed)
    apply_threads(threads, resolve_device(device))  # sampling and the featurizer's CPU work
    main = launch_env()[0] == 0
    evaluator_options = given_options(options, old_options, "--evaluator-option", warn=main)
    items, notes = eval_items(run, round_, all_rounds, branch, all_branches)
    for note in notes if main else []:
        click.echo(note, err=True)
    if n_samples < MIN_REPORTED_SAMPLES and main:
        click.echo(f"note: {n_samples} samples; distances are biased upward at small counts, and any "
                   f"published figure needs {MIN_REPORTED_SAMPLES} at the least", err=True)
    results = evaluate_items(items, evaluator, n_samples=n_samples, sampler=sampler, steps=steps,
                             options=evaluator_options, seed=seed, device=device, ema=not no_ema,
                             precision=precision, compile=compile_,
                             progress="none" if as_json and progress == "auto" else progress)
    if not main:
        return
    if as_json:
        echo_json(results)
        return
    drawn_by = sampler or "the model's sampler"
    Console().print(scores_table(results, f"{evaluator} of {run} ({n_samples} samples, {drawn_by} {steps} steps, "
                                          f"seed {seed})"))

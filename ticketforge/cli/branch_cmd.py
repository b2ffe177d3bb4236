"""``ticketforge branch``: the canonical controls of a ticket, trained once from a finished round."""

from __future__ import annotations

import click

from ..engine.branch import MASK_MODES, START_MODES, BranchRequest, run_branch
from .options import echo_json, json_option, progress_option


@click.command("branch")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--round", "round_", type=int, required=True,
              help="K: the finished round whose masks (and data order and noise seeds) the branch uses.")
@click.option("--masks", default="ticket", show_default=True, metavar="|".join(MASK_MODES),
              help="ticket: round K's masks; random: random positions with exactly round K's count in every "
                   "tensor (drawn from --seed); none: dense, a reference of the same training budget.")
@click.option("--start", default="tau", show_default=True, metavar="|".join(START_MODES),
              help="Start weights: tau (the run's theta_tau), init (theta_0), reinit (a fresh init from "
                   "--init-seed), trained:J (round J's trained weights: fine-tuning).")
@click.option("--rewind-fraction", type=float, default=None, metavar="F",
              help="With --start tau: start from theta at fraction F of round 0's steps instead of theta_tau "
                   "(the run must have kept it: `ticketforge run --keep-rewind-points ...`; 0 is theta_0).")
@click.option("--steps", type=int, default=None, help="Training steps. [default: the run's steps per round]")
@click.option("--seed", type=int, default=None, help="Seed of --masks random. [default: 0]")
@click.option("--init-seed", type=int, default=None,
              help="Seed of --start reinit's weights (built as theta_0 is from a run's seed). "
                   "[default: the run's init seed + 1]")
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N. [default: the run's]")
@click.option("--quiet", is_flag=True, help="No progress display (--progress none).")
@progress_option
@json_option
def command(run: str, round_: int, masks: str, start: str, rewind_fraction: float | None, steps: int | None,
            seed: int | None, init_seed: int | None, device: str | None, quiet: bool, progress: str,
            as_json: bool) -> None:
    """Train a lottery branch of RUN: round K's ticket once more, with other masks or start weights.

    Everything else (optimizer, EMA, learning-rate warm-up, precision, compile, CUDA graphs, gradient
    clipping) is the run's, with round K's data order and noise seeds: the default branch (--masks
    ticket --start tau) repeats round K exactly on a CPU. The branch is written to
    RUN/branches/<masks>-<start>-<hash>/, a one-round run folder that inspect, eval, sample and
    load_round read like a run. The same command again skips a finished branch or resumes an
    interrupted one.

    \b
    Examples (the controls of Frankle & Carbin 2019, Frankle et al. 2020/2021, Ma et al. 2021):
      ticketforge branch runs/<run> --round 5 --start reinit     is the initialisation what matters?
      ticketforge branch runs/<run> --round 5 --masks random     are the mask positions what matter?
      ticketforge branch runs/<run> --round 5 --start init       rewinding to theta_0 instead of theta_tau
      ticketforge branch runs/<run> --round 5 --masks none       a dense network, same steps
      ticketforge branch runs/<run> --round 5 --start trained:5  fine-tuning instead of rewinding
      ticketforge branch runs/<run> --round 5 --rewind-fraction 0.2
                         (after `ticketforge run ... --keep-rewind-points 0,0.05,0.2`)
    """
    request = BranchRequest.make(round_, masks, start, rewind_fraction, steps, seed, init_seed)
    if quiet or (as_json and progress == "auto"):  # --json: stderr stays for errors unless asked
        progress = "none"
    record, folder, trained = run_branch(run, request, device=device, progress=progress)
    if as_json:
        echo_json({"path": str(folder), "trained": trained, **record})
        return
    loss = record.get("metrics", {}).get("loss", float("nan"))
    click.echo(f"Branch folder: {folder} ({'trained' if trained else 'already finished'}; "
               f"sparsity {100 * record['sparsity']:.2f}%, final loss {loss:.4f})")

"""``ticketforge eval``: score a round's (or a branch's) samples with an evaluator and store the scores with it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import click
import torch
from torch import nn
from rich.console import Console
from rich.table import Table

from ..errors import UsageError
from .options import check_seed, echo_json, json_option, parse_key_values, round_option, sampling_options

MIN_REPORTED_SAMPLES = 10000


def headline(scores: dict[str, Any]) -> tuple[str, float]:
    """The evaluator's main score: the first float in its dict (evaluators put it first)."""
    for key, value in scores.items():
        if isinstance(value, float):
            return key, value
    raise UsageError("the evaluator returned no score")


@dataclass(frozen=True)
class EvalItem:
    """What to score: round ``round`` of the run folder ``path`` (None: its last), ``branch`` set for a branch."""

    path: str
    round: int | None = None
    branch: str | None = None


def copy_state_into(target: nn.Module, source: nn.Module) -> bool:
    """Copy ``source``'s parameters and buffers (pruning masks included) into ``target``'s own tensors.

    Returns False, copying nothing, when the two do not have the same tensors (names, shapes, dtypes).
    In place, so that a sampler compiled around ``target`` (and its CUDA graphs) serves the new weights
    without being compiled again.
    """
    mine, theirs = target.state_dict(keep_vars=True), source.state_dict(keep_vars=True)
    if mine.keys() != theirs.keys() or any(
            mine[k].shape != theirs[k].shape or mine[k].dtype != theirs[k].dtype for k in mine):
        return False
    with torch.no_grad():
        for k, tensor in mine.items():
            tensor.copy_(theirs[k])
    return True


class SamplerCache:
    """One denoiser for every item of an evaluation: the first item's network, wrapped (and compiled) once.

    Later items' weights and masks are copied into it (:func:`copy_state_into`); a network of another
    shape gets a fresh wrapper.
    """

    def __init__(self, precision: str, compile: bool, device: torch.device) -> None:
        self.precision, self.compile, self.device = precision, compile, device
        self.base: nn.Module | None = None
        self.network: nn.Module | None = None
        self.resolved = ""

    def load(self, network: nn.Module) -> tuple[nn.Module, str]:
        """The sampling network holding ``network``'s weights, and the resolved precision."""
        from ..engine.sampling import sampling_network
        if self.base is None or not copy_state_into(self.base, network):
            self.base = network.to(self.device)
            self.network, self.resolved = sampling_network(self.base, self.precision, self.compile, self.device)
        assert self.network is not None
        return self.network, self.resolved


def evaluate_items(items: list[EvalItem], evaluator_name: str, *, n_samples: int, sampler: str, steps: int,
                   options: dict[str, Any], seed: int = 0, device: str = "auto", ema: bool = True,
                   precision: str = "auto", compile: bool = False) -> list[dict[str, Any]]:
    """Evaluate each item (rounds of a run, branches) in this process and record its scores with it.

    Scores are stored in the item's round record under the evaluator's name (a branch's own record
    for a branch), with the seed, whether EMA weights were used and the denoiser's precision and
    compilation; each evaluation draws its samples from ``seed``. The evaluator, the dataset and the
    (compiled) denoiser are made once for all items. Under torchrun the evaluator shards the sampling
    over the processes and rank 0 stores the scores.
    """
    from ..api import load_round, record_metrics
    from ..engine import distributed
    from ..engine.engine import resolve_device
    from ..registry import get_registry
    from ..store import RunLock, RunStore

    if not items:
        raise UsageError("nothing to evaluate")
    registry = get_registry()
    evaluator = registry.create("evaluators", evaluator_name, **options)
    ctx = distributed.setup(resolve_device(device))  # torchrun: join the process group, cuda:LOCAL_RANK
    dev = ctx.device
    config = RunStore(items[0].path).read_config()  # a branch trains on its run's dataset
    for path in dict.fromkeys(item.path for item in items):  # refused before the work, not after it
        ctx.on_main(RunLock(path).check)
    dataset = registry.create("datasets", config["dataset"], root=config.get("data_root"),
                              download=bool(config.get("download")), train=True)
    denoiser = SamplerCache(precision, compile, dev)
    results = []
    for item in items:
        loaded = load_round(item.path, item.round, ema=ema, device="cpu")
        network, resolved = denoiser.load(loaded.network)
        gen = torch.Generator(device=dev).manual_seed(seed)
        scores = evaluator.evaluate(loaded.spec, network, dataset=dataset, n_samples=n_samples,
                                    generator=gen, device=dev, sampler=sampler, steps=steps)
        scores = {**scores, "seed": seed, "ema": ema, "precision": resolved, "compile": compile}
        if ctx.is_main:
            record_metrics(item.path, loaded.round, {evaluator_name: scores})
        branch = loaded.config.get("branch") if isinstance(loaded.config.get("branch"), dict) else None
        results.append({"round": loaded.round, "branch": item.branch or (branch or {}).get("name"),
                        "of_round": (branch or {}).get("of_round"), "run": str(item.path),
                        "sparsity": loaded.record.get("sparsity"), "evaluator": evaluator_name, "scores": scores})
    ctx.barrier()  # every process returns once rank 0 stored the scores
    return results


def evaluate_rounds(run: str, rounds: list[int] | None, evaluator_name: str, **kwargs: Any) -> list[dict[str, Any]]:
    """Evaluate each round of ``run`` (the last finished one when ``rounds`` is None); see :func:`evaluate_items`."""
    return evaluate_items([EvalItem(run, k) for k in (rounds if rounds is not None else [None])], evaluator_name,
                          **kwargs)


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
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE", help="Evaluator option, repeatable.")
@sampling_options
@json_option
def command(run: str, round_: int | None, all_rounds: bool, branch: str | None, all_branches: bool, evaluator: str,
            n_samples: int, sampler: str, steps: int, options: tuple[str, ...], seed: int, no_ema: bool, device: str,
            threads: int | str, precision: str, compile_: bool, as_json: bool) -> None:
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
    from ..engine.threads import apply_threads
    check_seed(seed)
    apply_threads(threads, resolve_device(device))  # sampling and the featurizer's CPU work
    items, notes = eval_items(run, round_, all_rounds, branch, all_branches)
    main = launch_env()[0] == 0
    for note in notes if main else []:
        click.echo(note, err=True)
    if n_samples < MIN_REPORTED_SAMPLES and main:
        click.echo(f"note: {n_samples} samples; distances are biased upward at small counts, and any "
                   f"published figure needs {MIN_REPORTED_SAMPLES} at the least", err=True)
    results = evaluate_items(items, evaluator, n_samples=n_samples, sampler=sampler, steps=steps,
                             options=parse_key_values(options, "--option"), seed=seed, device=device, ema=not no_ema,
                             precision=precision, compile=compile_)
    if not main:
        return
    if as_json:
        echo_json(results)
        return
    table = Table(title=f"{evaluator} of {run} ({n_samples} samples, {sampler} {steps} steps, seed {seed})",
                  title_justify="left")
    has_branches = any(r["branch"] for r in results)
    for col in ("round", *(["branch"] if has_branches else []), "sparsity", "score", "value", "featurizer sha256"):
        table.add_column(col, justify="left" if col in ("branch", "score", "featurizer sha256") else "right",
                         no_wrap=col == "branch")
    for r in results:
        key, value = headline(r["scores"])
        where = [str(r["of_round"] if r["branch"] else r["round"])] + ([r["branch"] or ""] if has_branches else [])
        table.add_row(*where, f"{100 * (r['sparsity'] or 0):.2f}%", key, f"{value:.4f}",
                      str(r["scores"].get("featurizer_sha256", ""))[:12])
    Console().print(table)

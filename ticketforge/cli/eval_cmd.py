"""``ticketforge eval``: score a round's samples with an evaluator and store the scores with the round."""

from __future__ import annotations

from typing import Any

import click
import torch
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


def evaluate_rounds(run: str, rounds: list[int] | None, evaluator_name: str, *, n_samples: int, sampler: str,
                    steps: int, options: dict[str, Any], seed: int = 0, device: str = "auto",
                    ema: bool = True, precision: str = "auto", compile: bool = False) -> list[dict[str, Any]]:
    """Evaluate each round (the last finished one when ``rounds`` is None) and record the scores.

    Scores are stored in the round's metrics under the evaluator's name, with the seed, whether
    EMA weights were used and the denoiser's precision and compilation; each evaluation draws its samples from ``seed``. Under torchrun the
    evaluator shards the sampling over the processes and rank 0 stores the scores.
    """
    from ..api import load_round, record_metrics
    from ..engine import distributed
    from ..engine.engine import resolve_device
    from ..engine.sampling import sampling_network
    from ..registry import get_registry
    from ..store import RunLock, RunStore

    registry = get_registry()
    evaluator = registry.create("evaluators", evaluator_name, **options)
    ctx = distributed.setup(resolve_device(device))  # torchrun: join the process group, cuda:LOCAL_RANK
    dev = ctx.device
    config = RunStore(run).read_config()
    ctx.on_main(RunLock(run).check)  # a run that another process holds is refused before the work, not after it
    dataset = registry.create("datasets", config["dataset"], root=config.get("data_root"),
                              download=bool(config.get("download")), train=True)
    results = []
    for k in rounds if rounds is not None else [None]:
        loaded = load_round(run, k, ema=ema, device=str(dev))
        network, resolved = sampling_network(loaded.network, precision, compile, dev)
        gen = torch.Generator(device=dev).manual_seed(seed)
        scores = evaluator.evaluate(loaded.spec, network, dataset=dataset, n_samples=n_samples,
                                    generator=gen, device=dev, sampler=sampler, steps=steps)
        scores = {**scores, "seed": seed, "ema": ema, "precision": resolved, "compile": compile}
        if ctx.is_main:
            record_metrics(run, loaded.round, {evaluator_name: scores})
        results.append({"round": loaded.round, "sparsity": loaded.record.get("sparsity"),
                        "evaluator": evaluator_name, "scores": scores})
    ctx.barrier()  # every process returns once rank 0 stored the scores
    return results


@click.command("eval")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@round_option
@click.option("--all", "all_rounds", is_flag=True, help="Evaluate every finished round.")
@click.option("--evaluator", required=True, help="Evaluator name (ticketforge list shows them): fid, fd-lenet, ...")
@click.option("--samples", "n_samples", type=int, default=MIN_REPORTED_SAMPLES, show_default=True,
              help="Generated samples per round.")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE", help="Evaluator option, repeatable.")
@sampling_options
@json_option
def command(run: str, round_: int | None, all_rounds: bool, evaluator: str, n_samples: int, sampler: str,
            steps: int, options: tuple[str, ...], seed: int, no_ema: bool, device: str, precision: str,
            compile_: bool, as_json: bool) -> None:
    """Score generated samples of a round (or --all rounds) and store the scores with the round.

    Every score is stored with its sample count, sampler, steps, seed and featurizer sha256.
    Under torchrun (torchrun --nproc-per-node N -m ticketforge eval ...) the samples are drawn
    across the processes.
    """
    from ..engine.distributed import launch_env
    from ..store import RunStore
    if all_rounds and round_ is not None:
        raise UsageError("give --round K or --all, not both")
    check_seed(seed)
    rounds = RunStore(run).finished_rounds() if all_rounds else ([round_] if round_ is not None else None)
    if rounds == []:
        raise UsageError(f"{run} has no finished round yet")
    main = launch_env()[0] == 0
    if n_samples < MIN_REPORTED_SAMPLES and main:
        click.echo(f"note: {n_samples} samples; distances are biased upward at small counts, and any "
                   f"published figure needs {MIN_REPORTED_SAMPLES} at the least", err=True)
    results = evaluate_rounds(run, rounds, evaluator, n_samples=n_samples, sampler=sampler, steps=steps,
                              options=parse_key_values(options, "--option"), seed=seed, device=device, ema=not no_ema,
                              precision=precision, compile=compile_)
    if not main:
        return
    if as_json:
        echo_json(results)
        return
    table = Table(title=f"{evaluator} of {run} ({n_samples} samples, {sampler} {steps} steps, seed {seed})",
                  title_justify="left")
    for col in ("round", "sparsity", "score", "value", "featurizer sha256"):
        table.add_column(col, justify="left" if col in ("score", "featurizer sha256") else "right")
    for r in results:
        key, value = headline(r["scores"])
        table.add_row(str(r["round"]), f"{100 * (r['sparsity'] or 0):.2f}%", key, f"{value:.4f}",
                      str(r["scores"].get("featurizer_sha256", ""))[:12])
    Console().print(table)

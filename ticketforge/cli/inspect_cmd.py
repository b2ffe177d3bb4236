"""``ticketforge inspect``: what a run holds, round by round, with its branches under their rounds."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ..branches import BranchInfo, list_branches, resolve_branch
from ..builtins.reporter import rounds_table
from ..inspection import inspect_run
from ..scores import stored_scores
from ..store import RunStore
from .options import echo_json, json_option


def progress_line(unfinished: dict[str, Any]) -> str:
    """``round 2: step 40 of 200 (checkpointed); the same `ticketforge run` command resumes it``."""
    k, step, steps = unfinished["round"], unfinished["step"], unfinished["steps"]
    where = "checkpointed" if unfinished["checkpoint"] else "no checkpoint yet: it starts at step 0"
    return f"round {k}: step {step} of {steps} ({where}); the same `ticketforge run` command resumes it"


def _start_text(branch: dict[str, Any]) -> str:
    fraction = branch.get("rewind_fraction")
    return str(branch.get("start", "")) + (f" @ {fraction:g}" if fraction is not None else "")


def rounds_and_branches_table(rounds: list[dict[str, Any]], branches: list[BranchInfo], title: str = "Rounds") -> Table:
    """Each finished round, then the branches made from it (unfinished ones with their progress).

    A branch's name says its masks and start (``random-tau-<hash>``); the steps show when a branch
    trained for another budget than the rounds, and each stored evaluator's headline score has a column.
    """
    records = [*rounds, *(b.record for b in branches if b.record)]
    scores = {id(r): stored_scores(r.get("metrics", {})) for r in records}
    evaluators: dict[str, str] = {}  # evaluator name -> the key of its headline score (the column's header)
    for per in scores.values():
        for name, score in per.items():
            evaluators.setdefault(name, score["key"])
    steps_seen = {r.get("metrics", {}).get("steps") for r in rounds} | {b.steps for b in branches}
    with_steps = len(steps_seen - {None}) > 1
    table = Table(title=title, title_justify="left")
    table.add_column("round / branch", no_wrap=True)
    for col in (*(["steps"] * with_steps), "sparsity", "kept weights", "final loss", *evaluators.values()):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("mask sha256")  # what gives way first on a narrow terminal

    def cells(record: dict[str, Any] | None, steps: int | None) -> list[str]:
        m = record.get("metrics", {}) if record else {}
        head = [str(m.get("steps", steps or ""))] * with_steps
        if record is None:
            return [*head, "", "", "", *([""] * len(evaluators))]
        mine = scores[id(record)]
        return [*head, f"{100 * record['sparsity']:.2f}%", f"{m.get('nonzero_params', 0):,}",
                f"{m.get('loss', float('nan')):.4f}",
                *(f"{mine[name]['value']:.4g}" if name in mine else "" for name in evaluators)]

    def branch_row(b: BranchInfo, of: str = "") -> None:
        name = f"{of}└ {b.name}" + ("" if b.finished else f"\n  [yellow]{b.status}[/]")
        table.add_row(name, *cells(b.record, b.steps), b.record["mask_sha256"][:12] if b.record else "")

    listed = set()
    for r in rounds:
        table.add_row(str(r["round"]), *cells(r, None), r["mask_sha256"][:12])
        for b in branches:
            if b.of_round == r["round"]:
                branch_row(b)
                listed.add(b.name)
    for b in branches:  # branches of rounds not shown (or unreadable ones)
        if b.name not in listed:
            branch_row(b, f"{'?' if b.of_round is None else b.of_round} ")
    return table


def model_text(config: dict[str, Any]) -> str:
    """``ddpm-unet (mnist)``; the preset the model chose when none was given (``ddpm-unet (tiny, the
    model's default)``); the model alone when it has no presets."""
    if config.get("preset"):
        return f"{config['model']} ({config['preset']})"
    chosen = (config.get("model_config") or {}).get("preset")
    return f"{config['model']} ({chosen}, the model's default)" if chosen else str(config["model"])


def _branch_header(branch: dict[str, Any], path: str) -> str:
    return (f"[bold]branch {branch.get('name')}[/] ({path}) of round {branch.get('of_round')}: masks "
            f"{branch.get('masks')}, start {_start_text(branch)}, {branch.get('steps')} steps, seed "
            f"{branch.get('seed')}" + (f", init seed {branch['init_seed']}" if branch.get("init_seed") is not None
                                       else ""))


@click.command("inspect")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--branch", "branch_name", default=None, metavar="NAME",
              help="Show this branch of RUN (its name, a unique prefix or a part such as reinit; "
                   "`inspect RUN` lists them).")
@click.option("--groups", "show_groups", is_flag=True, help="Also show per-group sparsity of the last round.")
@json_option
def command(run: str, branch_name: str | None, show_groups: bool, as_json: bool) -> None:
    """Show a run's config and its rounds: sparsity, kept weights, loss, mask digest.

    A round still to train is shown with the step its checkpoint holds (``round 2: step 400 of
    1000``); the same ``ticketforge run`` command resumes it there.

    Branches (``ticketforge branch``) are listed under the round they branch from, with their
    masks, start, steps, final loss, stored scores, or progress while unfinished. A branch folder
    may be given as RUN, or by name with --branch. The module groups (what the incremental schedule
    counts j over) are listed with --groups.
    """
    info = resolve_branch(run, branch_name) if branch_name is not None else None
    if info is not None and info.error:
        from ..errors import UsageError
        raise UsageError(f"branch {info.name} of {run} cannot be read: {info.error}")
    listed = [] if info else list_branches(run)  # a branch folder has no branches of its own
    doc = inspect_run(str(info.path) if info else run, listed)
    if info is not None:
        doc["parent_run"] = run
    if as_json:
        echo_json(doc)
        return
    console = Console()
    cfg = doc["config"]
    if "branch" in doc:
        console.print(_branch_header(doc["branch"], doc["run"]))
    console.print(f"[bold]{doc['run']}[/]: {model_text(cfg)}, dataset {cfg['dataset']}, "
                  f"schedule {cfg['schedule']} (p={cfg['p']}, q={cfg['q']}), scorer {cfg['scorer']}, "
                  f"rewind {cfg['rewind']}, baseline {cfg['baseline']}, seed {cfg['seed']}")
    if info is not None:
        parent = RunStore(run)
        k = info.of_round
        rounds = [parent.round_record(k)] if k is not None and k in parent.finished_rounds() else []
        console.print(rounds_and_branches_table(rounds, [info], title=f"round {k} and this branch"))
    elif doc["branches"]:
        console.print(rounds_and_branches_table(doc["rounds"], listed))
        if any(not b.finished for b in listed):
            console.print("[dim]unfinished branches resume when their `ticketforge branch` command is given again[/]")
    elif doc["rounds"]:
        console.print(rounds_table(doc["rounds"]))
    if "unfinished" in doc and "branch" not in doc:  # a branch's table row shows its progress
        console.print(progress_line(doc["unfinished"]))
    if show_groups and doc["rounds"]:
        last = doc["rounds"][-1]
        table = Table(title=f"groups (round {last['round']})", title_justify="left")
        for col in ("index", "name", "params", "sparsity"):
            table.add_column(col, justify="right" if col != "name" else "left")
        for g in last["groups"]:
            table.add_row(str(g["index"]), g["name"], f"{g['params']:,}", f"{100 * g['sparsity']:.2f}%")
        console.print(table)

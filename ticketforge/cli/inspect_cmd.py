"""``ticketforge inspect``: what a run holds, round by round."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from ..builtins.reporter import rounds_table
from ..store import RunStore
from ..store.read_checks import verify_run
from .options import echo_json, json_option


def inspect_run(run: str) -> dict:
    """The ``inspect --json`` document: run path, resolved config, every finished round."""
    store = RunStore(run)
    config = store.read_config()
    verify_run(store, config)  # report only what the files hold: a damaged one is an error naming it
    return {"run": str(store.path), "config": config,
            "rounds": [store.round_record(k) for k in store.finished_rounds()]}


@click.command("inspect")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--groups", "show_groups", is_flag=True, help="Also show per-group sparsity of the last round.")
@json_option
def command(run: str, show_groups: bool, as_json: bool) -> None:
    """Show a run's config and its rounds: sparsity, kept weights, loss, mask digest.

    The module groups (what the incremental schedule counts j over) are listed with --groups.
    """
    doc = inspect_run(run)
    if as_json:
        echo_json(doc)
        return
    console = Console()
    cfg = doc["config"]
    console.print(f"[bold]{doc['run']}[/]: {cfg['model']} ({cfg.get('preset')}), dataset {cfg['dataset']}, "
                  f"schedule {cfg['schedule']} (p={cfg['p']}, q={cfg['q']}), scorer {cfg['scorer']}, "
                  f"rewind {cfg['rewind']}, baseline {cfg['baseline']}, seed {cfg['seed']}")
    console.print(rounds_table(doc["rounds"]))
    if show_groups and doc["rounds"]:
        last = doc["rounds"][-1]
        table = Table(title=f"groups (round {last['round']})", title_justify="left")
        for col in ("index", "name", "params", "sparsity"):
            table.add_column(col, justify="right" if col != "name" else "left")
        for g in last["groups"]:
            table.add_row(str(g["index"]), g["name"], f"{g['params']:,}", f"{100 * g['sparsity']:.2f}%")
        console.print(table)

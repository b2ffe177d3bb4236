"""``ticketforge list``: what the installed plugins provide."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from ..errors import UsageError
from ..records import KINDS
from ..registry import get_registry
from .options import echo_json, json_option


@click.command("list")
@click.argument("kind", required=False, type=click.Choice(KINDS))
@json_option
def command(kind: str | None, as_json: bool) -> None:
    """List installed components (scorers, schedules, models, datasets, similarities, evaluators).

    Plugins that failed to load are shown as broken, with their error; the others still work.
    """
    registry = get_registry()
    kinds = [kind] if kind else list(KINDS)
    data = {k: [{"name": r.name, "summary": r.summary, "plugin": r.plugin} for r in registry.records(k).values()]
            for k in kinds}
    broken = [{"name": b.name, "plugin": b.distribution, "error": b.error} for b in registry.broken]
    if as_json:
        echo_json({**data, "broken": broken})
        return
    console = Console()
    for k in kinds:
        table = Table(title=k, title_justify="left", show_header=True)
        for col in ("name", "summary", "plugin"):
            table.add_column(col)
        for item in data[k]:
            table.add_row(item["name"], item["summary"], item["plugin"])
        console.print(table)
    for b in broken:
        console.print(f"[red]broken plugin[/] {b['name']} ({b['plugin']}): {b['error']}")
    if kind and not data[kind]:
        raise UsageError(f"no {kind} are installed")

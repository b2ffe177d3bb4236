"""``ticketforge list``: what the installed plugins provide."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..errors import UsageError
from ..records import KINDS, Option
from ..registry import get_registry
from .options import echo_json, json_option


@click.command("list")
@click.argument("kind", required=False, type=click.Choice(KINDS))
@click.option("--options", "show_options", is_flag=True,
              help="Also list each component's options: name, type, default and help. A run sets those of its "
                   "model, dataset, schedule and scorer with --<kind>-option KEY=VALUE or a [<kind>-options] "
                   "table of its TOML file.")
@json_option
def command(kind: str | None, show_options: bool, as_json: bool) -> None:
    """List installed components (scorers, schedules, models, datasets, similarities, evaluators).

    Plugins that failed to load are shown as broken, with their error; the others still work. A name
    that two plugins register is shown once per plugin, marked as a conflict: using it is an error
    until one of them is uninstalled, every other name works.
    """
    registry = get_registry()
    kinds = [kind] if kind else list(KINDS)
    data: dict[str, list[dict[str, Any]]] = {k: [{"name": r.name, "summary": r.summary, "plugin": r.plugin,
                 **({"options": [option_row(o) for o in r.options]} if show_options else {})}
                for r in [*registry.records(k).values(), *(r for rs in registry.conflicts(k).values() for r in rs)]]
            for k in kinds}
    conflicts: list[dict[str, Any]] = [{"kind": k, "name": name, "plugins": [r.plugin for r in records],
                  "error": registry.conflict_message(k, name)}
                 for k in kinds for name, records in registry.conflicts(k).items()]
    broken = [{"name": b.name, "plugin": b.distribution, "error": b.error} for b in registry.broken]
    if as_json:
        echo_json({**data, "broken": broken, "conflicts": conflicts})
        return
    console = Console()
    for k in kinds:
        clash = {c["name"] for c in conflicts if c["kind"] == k}
        table = Table(title=k, title_justify="left", show_header=True)
        for col in ("name", "summary", "plugin", *(["options"] if show_options else [])):
            table.add_column(col)
        for item in data[k]:
            name = escape(item["name"]) + (" [red](conflict)[/]" if item["name"] in clash else "")
            options = ["\n".join(escape(f"{o['name']} ({o['type']}, default {o['default']!r}): {o['help']}")
                                 for o in item["options"]) or "-"] if show_options else []
            table.add_row(name, escape(item["summary"]), escape(item["plugin"]), *options)
        console.print(table)
    for b in broken:
        console.print(f"[red]broken plugin[/] {escape(b['name'])} ({escape(b['plugin'])}): {escape(b['error'])}")
    for c in conflicts:
        console.print(f"[red]conflict[/]: {escape(c['error'])}; every other name works")
    if kind and not data[kind]:
        raise UsageError(f"no {kind} are installed")


def option_row(option: Option) -> dict[str, Any]:
    """A component option as ``list --options`` shows it (a name users type: ``prune-input-conv``)."""
    return {"name": option.name.replace("_", "-"), "type": getattr(option.type, "__name__", str(option.type)),
            "default": option.default, "help": option.help}

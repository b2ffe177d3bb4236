"""Shared CLI helpers: parsing ``KEY=VALUE`` options, picking a round, printing JSON."""

from __future__ import annotations

import json
from typing import Any

import click


def parse_key_values(items: tuple[str, ...], flag: str) -> dict[str, Any]:
    """``("ch=64", "dropout=0.1")`` -> ``{"ch": 64, "dropout": 0.1}`` (values parsed as JSON when they can be)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=flag)
        try:
            out[key.replace("-", "_")] = json.loads(value)
        except ValueError:
            out[key.replace("-", "_")] = value
    return out


def echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=False, default=str))


round_option = click.option("--round", "round_", type=int, default=None,
                            help="Round index (0 is dense); default: the last finished round. -1 counts back.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")

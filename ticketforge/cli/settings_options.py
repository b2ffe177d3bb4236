"""The ``ticketforge run`` options, one per setting of :class:`~ticketforge.config.RunConfig`.

Each option is derived from its setting's declaration (type, default, help, choices, spellings): a
setting added to ``RunConfig`` is an option here, and a section of docs/cli.md, without an edit.
Every option defaults to None, "not given", so that a TOML file's value stands unless a flag is given.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Callable

import click

from ..config import RunConfig, Setting, _field_defaults, setting_types, settings
from ..errors import ConfigError
from .options import parse_key_values


class ConvertParam(click.ParamType):
    """A setting's own parser of its text (``Setting.convert``), its ConfigError a click error."""

    def __init__(self, name: str, convert: Callable[[str], Any]):
        self.name, self._convert = name, convert

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return self._convert(value)
        except ConfigError as exc:
            self.fail(str(exc).removeprefix(f"{param.name if param else ''} "), param, ctx)


def _shown(value: Any) -> str | None:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if value is None or value == [] or value == {}:
        return None
    return str(value)


def help_text(spec: Setting, default: Any) -> str:
    """The option's help: the setting's, with ``[default: ...]`` from the declaration."""
    shown = spec.shown_default if spec.shown_default is not None else \
        ("the preset's" if spec.from_preset else _shown(default))
    return f"{spec.help} [default: {shown}]" if shown else spec.help


def _option(name: str, spec: Setting, annotation: Any, default: Any) -> Callable[[Any], Any]:
    flags = spec.option_flags(name)
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    kinds = [a for a in typing.get_args(annotation) if a is not type(None)] if union else [annotation]
    base = typing.get_origin(kinds[0]) or kinds[0]
    help = help_text(spec, default)
    if base is dict:
        return click.option(*flags, name, multiple=True, metavar=spec.metavar or "KEY=VALUE", help=help)
    if base is bool:
        negated = [f"--no-{f.removeprefix('--')}" for f in flags]
        return click.option("/".join([flags[0], negated[0]]), name, default=None, help=help)
    if spec.convert is not None:
        kind: Any = ConvertParam(spec.metavar or name, spec.convert)
    elif spec.choices:
        kind = click.Choice(spec.choices)
    else:
        kind = base if base in (int, float) and len(kinds) == 1 else None
    return click.option(*flags, name, type=kind, default=None, metavar=spec.metavar, help=help)


def setting_options(func: Callable[..., Any], cls: type[RunConfig] = RunConfig) -> Callable[..., Any]:
    """Decorate a command with one option per setting of ``cls`` that has one, in declaration order."""
    types, defaults = setting_types(cls), _field_defaults(cls)
    for name, spec in reversed(settings(cls).items()):
        if spec.cli:
            func = _option(name, spec, types[name], defaults[name])(func)
    return func


def given_settings(values: dict[str, Any], base: RunConfig) -> dict[str, Any]:
    """The settings among a command's ``values`` that were given, as ``RunConfig`` values (the pairs of a
    ``--<kind>-option`` added to ``base``'s)."""
    out: dict[str, Any] = {}
    declared = settings(type(base))
    for name, value in values.items():
        if name not in declared or value is None or value == ():
            continue
        if isinstance(value, tuple):  # KEY=VALUE pairs
            flag = declared[name].option_flags(name)[0]
            value = {**getattr(base, name), **parse_key_values(value, flag)}
        out[name] = value
    return out

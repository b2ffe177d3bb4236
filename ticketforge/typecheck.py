"""Checking values from TOML, JSON or Python against declared types, with words a user can act on.

``fits(value, annotation)`` follows the annotations of :class:`~ticketforge.config.RunConfig`
and the ``type`` of a component's :class:`~ticketforge.records.Option`: a bool is not an int (TOML's
``rounds = true`` is refused, not taken as 1), an int is a float, a tuple is a list.
"""

from __future__ import annotations

import json
import os
import types
import typing
from typing import Any

_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list",
          tuple: "a list", dict: "a table (key = value pairs)", type(None): "nothing"}
_FOUND = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
          tuple: "a list", dict: "a table", type(None): "nothing"}


def _args(annotation: Any) -> tuple[Any, ...]:
    return typing.get_args(annotation)


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def fits(value: Any, annotation: Any) -> bool:
    """Whether ``value`` is of the type ``annotation`` names (Any and unknown constructs: yes)."""
    if annotation is Any or annotation is typing.Any:
        return True
    if annotation is None or annotation is type(None):
        return value is None
    if _is_union(annotation):
        return any(fits(value, arg) for arg in _args(annotation))
    origin = typing.get_origin(annotation) or annotation
    if origin is bool:
        return isinstance(value, bool)
    if origin is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        item = _args(annotation)[:1]
        return not item or all(fits(v, item[0]) for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            return False
        kv = _args(annotation)
        return not kv or all(fits(k, kv[0]) and fits(v, kv[1]) for k, v in value.items())
    if isinstance(origin, type):
        return isinstance(value, origin)
    return True


def wanted(annotation: Any) -> str:
    """``int | None`` -> "an integer" (None means "the default", nothing a user writes)."""
    if _is_union(annotation):
        names = [wanted(a) for a in _args(annotation) if a is not type(None)]
        return " or ".join(dict.fromkeys(names)) or "nothing"
    origin = typing.get_origin(annotation) or annotation
    return _NAMES.get(origin, getattr(origin, "__name__", str(origin)))


def found(value: Any) -> str:
    """``true (a boolean)``, ``"abc" (a string)``: the value as the user wrote it, and its type."""
    try:
        shown = json.dumps(os.fspath(value) if isinstance(value, os.PathLike) else value)
    except (TypeError, ValueError):
        shown = repr(value)
    kind = _FOUND.get(type(value), f"a {type(value).__name__}")
    return f"{shown} ({kind})"


def problem(name: str, value: Any, annotation: Any) -> str | None:
    """None if ``value`` fits, else "NAME must be WANTED, not VALUE (TYPE)"."""
    if fits(value, annotation):
        return None
    hint = ": pass str(path)" if isinstance(value, os.PathLike) and fits("", annotation) else ""
    return f"{name} must be {wanted(annotation)}, not {found(value)}{hint}"

"""The settings of a component given as a Python object: what of it goes into the run's identity.

An object's identity is its class and its settings: the dict its ``settings()`` method returns if it
has one, else its public instance attributes (names not starting with ``_``). Settings are written
as JSON: None, bool, int, float, str, enums (by name), lists, tuples, sets, dicts, dataclasses,
paths, dtypes and devices, tensors and arrays (by the sha256 of their bytes), and nested objects under
the same rule. Anything else (a function, an ``nn.Module``, an open file) cannot be named, and the
object is refused with a one-line error instead of sharing a run folder with another configuration.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import io
import numbers
import types
from pathlib import PurePath
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError

_MAX_DEPTH = 12


class _Unnameable(Exception):
    def __init__(self, where: str, value: Any):
        super().__init__(where)
        self.where, self.value = where, value


def _class_name(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _own_settings(obj: Any, where: str, seen: frozenset[int], depth: int) -> dict[str, Any]:
    settings = getattr(obj, "settings", None)
    if callable(settings):
        value = settings()
        if not isinstance(value, dict):
            raise _Unnameable(f"{where}.settings()", value)
    else:
        value = {k: v for k, v in vars(obj).items() if not k.startswith("_")} if hasattr(obj, "__dict__") else {}
    return {str(k): _encode(v, f"{where}.{k}", seen | {id(obj)}, depth + 1) for k, v in sorted(value.items())}


def _encode(value: Any, where: str, seen: frozenset[int], depth: int) -> Any:
    """``value`` as JSON, or :class:`_Unnameable` naming the first part that cannot be written."""
    if depth > _MAX_DEPTH or id(value) in seen:
        raise _Unnameable(where, value)
    if isinstance(value, enum.Enum):
        return {"enum": f"{_class_name(value)}.{value.name}"}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_encode(v, f"{where}[{i}]", seen, depth + 1) for i, v in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        items = [_encode(v, f"{where}{{}}", seen, depth + 1) for v in value]
        return {"set": sorted(items, key=repr)}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {k: _encode(v, f"{where}[{k!r}]", seen, depth + 1) for k, v in sorted(value.items())}
        if not all(isinstance(k, (int, bool)) or k is None for k in value):
            raise _Unnameable(where, value)
        return {"dict": [[k, _encode(v, f"{where}[{k!r}]", seen, depth + 1)]
                         for k, v in sorted(value.items(), key=lambda kv: repr(kv[0]))]}
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (torch.dtype, torch.device)):
        return str(value)
    if isinstance(value, type):
        return {"type": f"{value.__module__}.{value.__qualname__}"}
    if isinstance(value, torch.Tensor):
        data = value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        return {"tensor": hashlib.sha256(data).hexdigest(), "dtype": str(value.dtype), "shape": list(value.shape)}
    if isinstance(value, np.ndarray):
        data = np.ascontiguousarray(value).tobytes()
        return {"array": hashlib.sha256(data).hexdigest(), "dtype": str(value.dtype), "shape": list(value.shape)}
    if dataclasses.is_dataclass(value):
        return {"class": _class_name(value),
                "fields": {f.name: _encode(getattr(value, f.name), f"{where}.{f.name}", seen | {id(value)}, depth + 1)
                           for f in dataclasses.fields(value)}}
    has_settings = callable(getattr(value, "settings", None))
    if not has_settings and (isinstance(value, (nn.Module, types.FunctionType, types.MethodType,
                                                types.BuiltinFunctionType, functools.partial, io.IOBase))
                             or not hasattr(value, "__dict__")):
        raise _Unnameable(where, value)
    return {"class": _class_name(value), "settings": _own_settings(value, where, seen, depth)}


def component_settings(obj: Any, kind: str) -> dict[str, Any]:
    """The settings of component object ``obj`` (a ``kind``: model, schedule, scorer) as JSON values.

    Raises :class:`ConfigError` (one line) when a setting cannot be written down.
    """
    cls = type(obj).__name__
    try:
        return _own_settings(obj, cls, frozenset(), 0)
    except _Unnameable as exc:
        raise ConfigError(
            f"{kind} object {cls}: setting {exc.where} ({type(exc.value).__name__}) cannot be part of the run's "
            f"identity, so runs of differently configured {cls} objects could share a folder: give {cls} a "
            f"settings() method that returns what changes its behaviour as JSON values (str, number, bool, "
            f"None, list, dict)") from None

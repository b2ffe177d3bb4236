"""The model spec a stored run was made with, rebuilt from its resolved config.

Below the engine and the store's read checks (both rebuild networks from a run's ``config.json``), so
that neither reaches up into :mod:`ticketforge.api` (which imports ``spec_from_config`` from here).
"""

from __future__ import annotations

from typing import Any

from .errors import ConfigError
from .protocols import ModelSpec
from .registry import Registry, get_registry


def spec_from_config(config: dict[str, Any], registry: Registry | None = None) -> ModelSpec:
    """Rebuild the model spec a run was made with, from its resolved config."""
    name = config.get("model")
    if not isinstance(name, str) or name.startswith("python:"):
        raise ConfigError(f"this run's model {name!r} was given as a Python object; rebuild it in Python "
                          f"and load the weights with ticketforge.pruning.state.load_plain_state_dict")
    options = dict(config.get("model_options") or {})
    preset = run_preset(config)
    if preset is not None:
        options["preset"] = preset
    return (registry or get_registry()).create("models", name, **options)


def run_preset(config: dict[str, Any]) -> str | None:
    """The preset a stored run was made with: its ``preset``, else the one its model recorded in
    ``model_config`` (a run made with the model's default preset is rebuilt with that preset after the
    default changes, as ddpm-unet's did from tiny to quickstart)."""
    if config.get("preset") is not None:
        return config["preset"]
    recorded = config.get("model_config")
    preset = recorded.get("preset") if isinstance(recorded, dict) else None
    return preset if isinstance(preset, str) else None

"""Where a run without ``--out`` lives: ``runs_root/<name>``, the name ending in the run's hash.

The name shows what tells the runs of one schedule apart at a glance: the model, the schedule, the
scorer when it is not ``magnitude`` and the baseline when it is not ``none``, then the hash of the
run's identity (``ddpm-unet-incremental-random-reinit-<hash>``). The hash alone identifies the run,
so a folder named by an earlier rule (``<model>-<schedule>-<hash>``) is found by its hash and
resumed where it is, never silently replaced by a new folder.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..config import RunConfig

_DEFAULTS = {"scorer": RunConfig.scorer, "baseline": RunConfig.baseline}


def slug(name: str) -> str:
    """A folder-safe short form of a component name (a Python object's: its class name)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name.split("{")[0].removeprefix("python:").rsplit(".", 1)[-1])


def run_folder_name(config: RunConfig) -> str:
    """``<model>-<schedule>[-<scorer>][-<baseline>]-<hash>``: scorer and baseline only when not the default."""
    parts = [slug(config.model), slug(config.schedule)]
    parts += [slug(getattr(config, key)) for key, default in _DEFAULTS.items() if getattr(config, key) != default]
    return "-".join([*parts, config.digest()])


def default_run_dir(config: RunConfig) -> Path:
    """The run folder of ``config`` under ``runs_root``: the one of its name, or one that an earlier
    naming rule gave the same run (the same hash at the end of its name, holding a run's config)."""
    root = Path(config.runs_root)
    named = root / run_folder_name(config)
    if named.exists():
        return named
    digest = config.digest()
    earlier = sorted(p for p in root.glob(f"*-{digest}") if p.is_dir() and (p / "config.json").is_file())
    return earlier[0] if len(earlier) == 1 else named

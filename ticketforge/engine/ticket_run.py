"""The ``random-prune`` baseline's ticket: the run whose per-tensor kept counts it copies, round by round.

Round k of a random-prune run keeps, in every tensor, exactly as many weights as round k of the
ticket (the same config with ``baseline = "none"``) and draws their positions at random inside its
own round k-1 mask. The ticket's counts come from the ticket's trained weights, so they are read
from the ticket's run folder: ``--ticket-run PATH``, or by default the folder that the ticket's
config names (``runs/<model>-<schedule>[-<scorer>]-<hash>``). A round the ticket has not finished stops the
baseline with the command that produces it.
"""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path
from typing import Any, Callable

from torch import Tensor

from ..config import RUNTIME_FIELDS, RunConfig, config_differences, settings
from ..errors import ConfigError, UsageError
from ..protocols import PruneTarget
from ..store import RunStore
from ..store.read_checks import round_masks


def ticket_config(config: RunConfig) -> RunConfig:
    """The ticket's config: the same run without the baseline."""
    return dataclasses.replace(config, baseline="none", ticket_run=None)


def ticket_command(asked: RunConfig, rounds: int, out: str | None) -> str:
    """The ``ticketforge run`` command that makes the ticket of ``asked`` (the config as the user gave it).

    Spelled with the settings' own option flags (the ones ``ticketforge run`` derives); a setting no option can give (a Python object, a TOML-only
    key) makes it the same command with ``--baseline none`` instead."""
    options = {name: spec for name, spec in settings(RunConfig).items() if spec.cli}
    ticket = dataclasses.replace(ticket_config(asked), rounds=rounds, out=out)
    defaults = RunConfig()
    parts = ["ticketforge", "run"]
    for field in dataclasses.fields(RunConfig):
        value = getattr(ticket, field.name)
        if value == getattr(defaults, field.name) or field.name in RUNTIME_FIELDS - {"out", "device", "runs_root"}:
            continue
        spec = options.get(field.name)
        if spec is None or (isinstance(value, str) and value.startswith("python:")):
            return f"the same command (or Engine call) with baseline none and at least {rounds} rounds"
        flag = spec.option_flags(field.name)[0]
        if isinstance(value, dict):  # a component's options: --<kind>-option KEY=VALUE
            parts += [a for k, v in sorted(value.items()) for a in (flag, shlex.quote(f"{k}={v}"))]
        elif isinstance(value, bool):
            parts.append(flag if value else f"--no-{flag.removeprefix('--')}")
        elif isinstance(value, list):  # fractions: --keep-rewind-points 0,0.05,0.2
            parts += [flag, ",".join(str(v) for v in value)]
        else:
            parts += [flag, shlex.quote(str(value))]
    return " ".join(parts)


def ticket_masks(k: int, config: RunConfig, asked: RunConfig, model_config: dict[str, Any],
                 targets: list[PruneTarget], default_dir: Callable[[RunConfig], Path]) -> list[Tensor]:
    """Round ``k``'s masks of the ticket of ``config``, in the order of ``targets``; a one-line error if
    the ticket has not finished that round or was made with another config."""
    folder = Path(config.ticket_run) if config.ticket_run else default_dir(ticket_config(config))
    store = RunStore(folder)
    if not store.exists() or k not in store.finished_rounds():
        state = "does not exist yet" if not store.exists() else f"has finished rounds {store.finished_rounds()}"
        command = ticket_command(asked, max(k, config.rounds or k), config.ticket_run)
        raise UsageError(f"random-prune round {k} keeps the per-tensor counts of round {k} of its ticket, and the "
                         f"ticket run {folder} {state}: make it first with `{command}` "
                         f"(or give its folder with --ticket-run), then give this command again")
    ticket = {**dataclasses.asdict(ticket_config(config)), "model_config": model_config}
    diff = config_differences(store.read_config(), ticket)  # extent aside: the ticket may go further
    if diff:
        raise ConfigError(f"ticket run {folder} has another config than this run's ticket ({'; '.join(diff[:3])}): "
                          f"give --ticket-run the folder of this config's run with --baseline none")
    masks = round_masks(store, k, targets)  # bool, the model's shapes, the record's mask_sha256
    return [masks[t.name] for t in targets]

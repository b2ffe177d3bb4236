"""Load what a run left on disk: a round's network with its masks, its config and its record.

Used by the ``sample``, ``flops``, ``compare``, ``eval``, ``export`` and ``report`` commands and by
user scripts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from .errors import ConfigError
from .protocols import ModelSpec, ModuleGroup
from .registry import Registry
from .specs import spec_from_config
from .store import RunLock, RunStore
from .store.read_checks import redo_advice, round_masks
from .store.run_store import round_dir


@dataclass
class LoadedRound:
    """One finished round of a run, ready to use.

    Attributes:
        run_dir: the run's directory.
        round: the round index (0 is the dense round).
        config: the run's resolved config (as ``ticketforge inspect --json`` shows it).
        spec: the model spec rebuilt from the config.
        network: the round's trained network (EMA weights when asked and present), masks applied
            through ``torch.nn.utils.prune``, in eval mode, on the requested device.
        masks: qualified module name -> bool mask of its weight.
        groups: the module groups, in forward order.
        record: the round's record (sparsity, groups, mask_sha256, metrics).
    """

    run_dir: Path
    round: int
    config: dict[str, Any]
    spec: ModelSpec
    network: nn.Module
    masks: dict[str, Tensor]
    groups: list[ModuleGroup]
    record: dict[str, Any]


def _pick_round(store: RunStore, round: int | None) -> int:
    finished = store.finished_rounds()
    if not finished:
        raise ConfigError(f"{store.path} has no finished round yet")
    if round is None:
        return finished[-1]
    if round < 0:
        if -round > len(finished):
            raise ConfigError(no_such_round(store, round, finished))
        round = finished[round]
    store.round_record(round)  # a clear error for an unfinished round
    return round


def no_such_round(store: RunStore, round: int, finished: list[int]) -> str:
    """The message for a ``--round`` that counts back past the first finished round."""
    return (f"round {round} does not exist in {store.path}: it has {len(finished)} finished rounds "
            f"({', '.join(map(str, finished))}); give --round {finished[0]}..{finished[-1]}, "
            f"or -1..-{len(finished)} to count back from the last")


def load_round(run: str | Path, round: int | None = None, *, ema: bool = True, device: str = "cpu",
               registry: Registry | None = None) -> LoadedRound:
    """Load round ``round`` of the run in ``run`` (the last finished round when None; -1 counts back)."""
    from .pruning.targets import PrunableNetwork

    store = RunStore(run)
    config = store.read_config()
    k = _pick_round(store, round)
    spec = spec_from_config(config, registry)
    net = PrunableNetwork.build(spec)
    rdir = round_dir(k)
    masks = round_masks(store, k, net.targets)  # bool, the model's shapes, the record's mask_sha256
    weights = f"{rdir}/ema.safetensors" if ema and store.has(f"{rdir}/ema.safetensors") else f"{rdir}/weights.safetensors"
    net.load([masks[t.name] for t in net.targets], store.read_tensors(weights), source=str(store.path / weights),
             advice=redo_advice(store, weights))
    net.network.to(device).eval()
    return LoadedRound(Path(run), k, config, spec, net.network, masks, net.groups, store.round_record(k))


def record_metrics(run: str | Path, round: int, metrics: dict[str, Any]) -> None:
    """Merge ``metrics`` into the stored metrics of a finished round (atomically, under the run's lock)."""
    store = RunStore(run)
    with RunLock(store.path):
        record = store.round_record(round)
        record["metrics"] = {**record.get("metrics", {}), **metrics}
        store.write_json(f"{round_dir(round)}/record.json", record)


def load_branch(run: str | Path, name: str, *, ema: bool = True, device: str = "cpu",
                registry: Registry | None = None) -> LoadedRound:
    """Load the finished branch ``name`` of ``run`` (full name, unique prefix or whole parts such as
    ``reinit``; see :func:`ticketforge.branches.resolve_branch`).

    Its ``config["branch"]`` says what it is (``of_round``, ``masks``, ``start``, ...); ``round`` is 0.
    """
    from .branches import resolve_source
    path, k, _ = resolve_source(run, name)
    return load_round(path, k, ema=ema, device=device, registry=registry)

"""What is read back from a run is checked against what the run says it holds.

The manifest's sha256 proves that a file is the one the store wrote, not that its content is what
the round's record describes: someone who edits both (or a bug that writes the wrong tensor) would
otherwise be trusted. So a round's masks must be bool tensors with the model's weight shapes whose
digest is the record's ``mask_sha256``, and weights must be finite floating-point values with the
model's shapes (checked by :func:`ticketforge.pruning.state.load_plain_state_dict`). Each failure is a
:class:`~ticketforge.errors.CheckpointError` naming the file and saying how to redo its round.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence, cast

import torch
from torch import Tensor, nn

from ..errors import CheckpointError
from ..protocols import PruneTarget
from .run_store import RunStore, round_dir


def redo_advice(store: Any, rel: str) -> str:
    """What to do about a damaged file of round ``k``: delete its round folder and rerun."""
    parts = rel.split("/")
    if len(parts) == 3 and parts[0] == "rounds":
        folder = Path(store.path) / parts[0] / parts[1]
        return (f"delete {folder} and give the `ticketforge run` command that made this run again "
                f"(same --out) to redo that round")
    return "start the run over with --fresh"


def checked_masks(store: Any, rel: str, targets: Sequence[PruneTarget], digest: str | None = None) -> dict[str, Tensor]:
    """The masks in ``rel`` by target name: bool, the weights' shapes, and (given) the record's digest."""
    from ..pruning.targets import mask_digest

    file = Path(store.path) / rel
    tensors = store.read_tensors(rel)
    for t in targets:
        mask = tensors.get(t.name)
        if mask is None:
            raise CheckpointError(f"{file} has no mask for {t.name}: the run was made with another model version")
        problem = None
        shape = tuple(cast(Tensor, t.module.weight).shape)
        if mask.dtype != torch.bool:
            problem = f"the mask of {t.name} has dtype {mask.dtype}, not bool"
        elif tuple(mask.shape) != shape:
            problem = f"the mask of {t.name} has shape {tuple(mask.shape)}, the model's weight {shape}"
        if problem:
            raise CheckpointError(f"{file} is damaged ({problem}): {redo_advice(store, rel)}")
    masks = {t.name: tensors[t.name] for t in targets}
    if digest is not None and mask_digest([masks[t.name] for t in targets]) != digest:
        raise CheckpointError(f"{file} does not hold the masks its round's record describes (their sha256 is not "
                              f"the record's mask_sha256): {redo_advice(store, rel)}")
    return masks


def round_masks(store: Any, k: int, targets: Sequence[PruneTarget]) -> dict[str, Tensor]:
    """Finished round ``k``'s masks, checked against the model and the round's record."""
    record = store.round_record(k)
    return checked_masks(store, f"{round_dir(k)}/masks.safetensors", targets, record.get("mask_sha256"))


def verify_round(store: RunStore, k: int, targets: Sequence[PruneTarget] | None = None,
                 network: nn.Module | None = None) -> None:
    """Check every file of finished round ``k`` against the manifest, the record and (given) the model.

    ``targets`` and ``network`` come from the run's model (built on the meta device is enough: only
    shapes and dtypes are compared); without them masks are checked for their dtype alone.
    """
    from ..pruning.state import expected_entries, value_problem

    rdir = round_dir(k)
    record = store.round_record(k)
    tensor_files = {f"{rdir}/{name}.safetensors" for name in ("masks", "weights", "ema")}  # read below
    for rel in sorted(store.manifest):
        if rel.startswith(f"{rdir}/") and rel not in tensor_files:
            store.read_bytes(rel)  # every file against its checksum (a missing one included)
    rel = f"{rdir}/masks.safetensors"
    if targets is not None:
        checked_masks(store, rel, targets, record.get("mask_sha256"))
    else:
        for name, mask in store.read_tensors(rel).items():
            if mask.dtype != torch.bool:
                raise CheckpointError(f"{store.path / rel} is damaged (the mask of {name} has dtype {mask.dtype}, "
                                      f"not bool): {redo_advice(store, rel)}")
    for rel in (f"{rdir}/weights.safetensors", f"{rdir}/ema.safetensors"):
        if rel not in store.manifest:
            continue
        tensors = store.read_tensors(rel)
        if network is None:
            continue
        entries = expected_entries(network)
        missing = sorted(set(entries) - set(tensors))
        if missing:
            raise CheckpointError(f"{store.path / rel} has no {missing[0]}: {redo_advice(store, rel)}")
        for key, (expected, parameter) in entries.items():
            problem = value_problem(key, tensors[key], expected, parameter)
            if problem:
                raise CheckpointError(f"{store.path / rel} is damaged ({problem}): {redo_advice(store, rel)}")


def meta_model(config: dict[str, Any], registry: Any = None) -> tuple[nn.Module, list[PruneTarget]] | None:
    """The run's network on the meta device (shapes and dtypes, no memory) and its prune targets;
    None when the model cannot be rebuilt here (an object passed to ``Engine``, a plugin not installed)."""
    from ..errors import TicketforgeError
    from ..pruning.targets import PrunableNetwork
    from ..specs import spec_from_config

    try:
        spec = spec_from_config(config, registry)
        with torch.device("meta"):
            net = PrunableNetwork.build(spec)
        return net.network, net.targets
    except (TicketforgeError, RuntimeError, NotImplementedError, TypeError, ValueError):
        return None


def verify_run(store: RunStore, config: dict[str, Any], registry: Any = None) -> None:
    """Check every file the manifest lists against its checksum, and every finished round's files
    against its record and the run's model (what ``ticketforge inspect`` reports)."""
    model = meta_model(config, registry)
    network, targets = model if model is not None else (None, None)
    for rel in sorted(store.manifest):
        if not rel.startswith("rounds/") and rel != "checkpoint.pt":  # a checkpoint is replaced while a run goes on
            store.read_bytes(rel)
    for k in store.finished_rounds():
        verify_round(store, k, targets, network)

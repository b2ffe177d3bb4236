"""Compact tickets in safetensors: bit-packed masks, the kept values, and the run's config.

Layout of the file: for each pruned weight ``W`` of shape S, ``mask.W`` (uint8, ``packbits`` of the
flattened mask) and ``kept.W`` (the unpruned values in row-major order); every other tensor as
``dense.<name>``. Metadata: ``format``, ``config`` (JSON) and the shapes of the pruned weights.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from .errors import CheckpointError
from .registry import Registry
from .store.atomic import atomic_write_bytes
from .store.canonical import safetensors_bytes

FORMAT = "ticketforge-ticket/1"


def export_ticket(run: str | Path, out: str | Path, round: int | None = None, *, ema: bool = True,
                  registry: Registry | None = None) -> dict[str, Any]:
    """Write round ``round`` of ``run`` to ``out``; returns sizes (bytes) of the file and of dense fp32 weights."""
    from .api import load_round
    from .pruning.state import plain_state_dict

    loaded = load_round(run, round, ema=ema, registry=registry)
    state = plain_state_dict(loaded.network)
    tensors, shapes = {}, {}
    for name, mask in loaded.masks.items():
        weight = state.pop(f"{name}.weight")
        flat_mask = mask.reshape(-1)
        tensors[f"mask.{name}"] = torch.from_numpy(np.packbits(flat_mask.numpy().astype(np.uint8)))
        tensors[f"kept.{name}"] = weight.reshape(-1)[flat_mask].contiguous()
        shapes[name] = list(mask.shape)
    tensors.update({f"dense.{k}": v for k, v in state.items()})
    metadata = {"format": FORMAT, "config": json.dumps(loaded.config, default=str),
                "shapes": json.dumps(shapes), "round": str(loaded.round)}
    out = Path(out)
    atomic_write_bytes(out, safetensors_bytes(tensors, metadata))  # never a half-written ticket
    dense_bytes = sum(p.numel() * 4 for p in loaded.network.parameters())
    return {"file_bytes": out.stat().st_size, "dense_fp32_bytes": dense_bytes, "round": loaded.round,
            "sparsity": loaded.record["sparsity"]}


def load_ticket(path: str | Path, *, device: str = "cpu", registry: Registry | None = None) -> nn.Module:
    """The network stored in an exported ticket, masks applied (pruned weights exactly zero), in eval mode."""
    from .pruning.targets import PrunableNetwork
    from .specs import spec_from_config

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise CheckpointError(f"{path} is not a ticketforge ticket (format {meta.get('format')!r}); "
                                      f"export one with `ticketforge export RUN --out FILE`")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path} cannot be read as safetensors ({exc}): is it truncated?") from None
    config, shapes = _ticket_metadata(path, meta)
    spec = spec_from_config(config, registry)
    with torch.device("meta"):  # the model's own shapes, before anything the file's metadata sizes is allocated
        shell = PrunableNetwork.build(spec)
    _check_ticket(path, tensors, shapes, shell.network, shell.targets)
    net = PrunableNetwork.build(spec)
    state = {k[len("dense."):]: v for k, v in tensors.items() if k.startswith("dense.")}
    masks = []
    for t in net.targets:
        shape = shapes[t.name]
        n = math.prod(shape)
        mask = torch.from_numpy(np.unpackbits(tensors[f"mask.{t.name}"].numpy())[:n].astype(bool))
        weight = torch.zeros(n, dtype=tensors[f"kept.{t.name}"].dtype)
        weight[mask] = tensors[f"kept.{t.name}"]
        state[f"{t.name}.weight"] = weight.reshape(shape)
        masks.append(mask.reshape(shape))
    return net.load(masks, state, source=str(path), advice="export the ticket again").to(device).eval()


def _ticket_metadata(path: str | Path, meta: dict[str, str]) -> tuple[dict[str, Any], dict[str, list[int]]]:
    """The ticket's config and pruned-weight shapes, refused unless they have the exported form."""
    try:
        config, shapes = json.loads(meta["config"]), json.loads(meta["shapes"])
    except (KeyError, ValueError):
        raise CheckpointError(f"{path} has no readable config and shapes metadata: export the ticket again") from None
    if not isinstance(config, dict) or not isinstance(shapes, dict) or not all(
            isinstance(v, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in v)
            for v in shapes.values()):
        raise CheckpointError(f"{path} has malformed config or shapes metadata: export the ticket again")
    return config, shapes


def _check_ticket(path: str | Path, tensors: dict[str, torch.Tensor], shapes: dict[str, list[int]],
                  shell: nn.Module, targets: list[Any]) -> None:
    """Every size the file claims agrees with the model (``shell``, on the meta device): the dense
    tensors' shapes, the pruned weights' shapes, packed-mask lengths, and as many kept values as the
    mask has bits set. So nothing is allocated from a forged size, and the model itself is no larger
    than what the file holds."""
    from .pruning.state import expected_entries

    for t in targets:
        want = list(t.module.weight.shape)
        if t.name not in shapes:
            raise CheckpointError(f"{path} has no mask for {t.name}: it was exported from another model version")
        if shapes[t.name] != want:
            raise CheckpointError(f"{path} says {t.name}.weight has shape {shapes[t.name]}, the model's is {want}: "
                                  f"the file is damaged or from another model; export the ticket again")
        packed, kept = tensors.get(f"mask.{t.name}"), tensors.get(f"kept.{t.name}")
        n = math.prod(want)
        problem = None
        if packed is None or kept is None:
            problem = f"has no mask.{t.name} or kept.{t.name} tensor"
        elif packed.dtype != torch.uint8 or tuple(packed.shape) != ((n + 7) // 8,):
            problem = f"has a packed mask of {t.name} of {packed.dtype} {tuple(packed.shape)}, not uint8 ({(n + 7) // 8},)"
        elif not kept.is_floating_point() or kept.dim() != 1:
            problem = f"has kept values of {t.name} of {kept.dtype} {tuple(kept.shape)}, not a 1-d float tensor"
        else:
            bits = np.unpackbits(packed.numpy())
            if bits[n:].any():
                problem = f"has bits set past the end of the mask of {t.name}"
            elif int(bits[:n].sum()) != kept.numel():
                problem = f"has {kept.numel()} kept values of {t.name} for {int(bits[:n].sum())} mask bits"
        if problem:
            raise CheckpointError(f"{path} {problem}: the file is damaged; export the ticket again")
    pruned = {f"{t.name}.weight" for t in targets}
    for key, (expected, _) in expected_entries(shell).items():
        dense = tensors.get(f"dense.{key}")
        if key not in pruned and (dense is None or tuple(dense.shape) != tuple(expected.shape)):
            got = "none" if dense is None else f"shape {tuple(dense.shape)}"
            raise CheckpointError(f"{path} has {got} for {key}, the model's is {tuple(expected.shape)}: the file is "
                                  f"damaged or from another model; export the ticket again")

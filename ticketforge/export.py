"""Compact tickets in safetensors: bit-packed masks, the kept values, and the run's config.

Layout of the file: for each pruned weight ``W`` of shape S, ``mask.W`` (uint8, ``packbits`` of the
flattened mask) and ``kept.W`` (the unpruned values in row-major order); every other tensor as
``dense.<name>``. Metadata: ``format``, ``config`` (JSON) and the shapes of the pruned weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import nn

from .errors import CheckpointError
from .registry import Registry
from .store.atomic import atomic_write_bytes

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
    atomic_write_bytes(out, save(tensors, metadata=metadata))  # never a half-written ticket
    dense_bytes = sum(p.numel() * 4 for p in loaded.network.parameters())
    return {"file_bytes": out.stat().st_size, "dense_fp32_bytes": dense_bytes, "round": loaded.round,
            "sparsity": loaded.record["sparsity"]}


def load_ticket(path: str | Path, *, device: str = "cpu", registry: Registry | None = None) -> nn.Module:
    """The network stored in an exported ticket, masks applied (pruned weights exactly zero), in eval mode."""
    from .api import spec_from_config
    from .engine.groups import module_groups, prune_targets
    from .pruning import apply_masks
    from .pruning.state import load_plain_state_dict

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise CheckpointError(f"{path} is not a ticketforge ticket (format {meta.get('format')!r}); "
                                      f"export one with `ticketforge export RUN --out FILE`")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path} cannot be read as safetensors ({exc}): is it truncated?") from None
    config, shapes = json.loads(meta["config"]), json.loads(meta["shapes"])
    spec = spec_from_config(config, registry)
    network = spec.build()
    targets = prune_targets(module_groups(spec, network))
    state = {k[len("dense."):]: v for k, v in tensors.items() if k.startswith("dense.")}
    masks = []
    for t in targets:
        if t.name not in shapes:
            raise CheckpointError(f"{path} has no mask for {t.name}: it was exported from another model version")
        shape = shapes[t.name]
        n = int(np.prod(shape))
        mask = torch.from_numpy(np.unpackbits(tensors[f"mask.{t.name}"].numpy())[:n].astype(bool))
        weight = torch.zeros(n, dtype=tensors[f"kept.{t.name}"].dtype)
        weight[mask] = tensors[f"kept.{t.name}"]
        state[f"{t.name}.weight"] = weight.reshape(shape)
        masks.append(mask.reshape(shape))
    apply_masks(targets, masks)
    load_plain_state_dict(network, state, source=str(path))
    return network.to(device).eval()

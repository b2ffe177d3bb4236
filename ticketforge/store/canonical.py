"""safetensors bytes that are a function of their content alone, metadata included.

safetensors writes a file's ``__metadata__`` in a hash order that changes from one save to the next
(safetensors issue #584), so two saves of the same tensors with two or more metadata keys differ in
bytes, and a manifest's sha256 would say that two identical rewind points or tickets differ. The tensors
are serialised by safetensors (without metadata its header order is fixed) and the metadata is put into
the header here, keys sorted.
"""

from __future__ import annotations

import json

from safetensors.torch import save
from torch import Tensor


def safetensors_bytes(tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """``safetensors.torch.save(tensors, metadata=metadata)`` with the metadata's keys in sorted order."""
    raw = save(tensors)
    if not metadata:
        return raw
    bad = next((k for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)), None)
    if bad is not None:
        raise TypeError(f"safetensors metadata takes str keys and values only, not {bad!r}: {metadata[bad]!r}")
    n = int.from_bytes(raw[:8], "little")
    header = {"__metadata__": dict(sorted(metadata.items())), **json.loads(raw[8:8 + n])}
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # the data stays 8-byte aligned, as safetensors pads it
    return len(text).to_bytes(8, "little") + text + raw[8 + n:]

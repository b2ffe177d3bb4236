"""An exponential moving average of the parameters, kept as plain tensors beside the network.

No ``deepcopy`` of a pruned model (it fails on the non-leaf ``weight``): the shadow mirrors
``network.parameters()``, ``weight_orig`` included. Pruned entries of ``weight_orig`` are zero and
receive no update, so their shadow stays exactly zero; swapping the shadow in keeps the masks.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


class EMA:
    """EMA with the usual warm-up ``decay_t = min(decay, (1 + t) / (10 + t))``."""

    def __init__(self, network: nn.Module, decay: float, warmup: bool = True):
        self.params = [p for p in network.parameters()]
        self.shadow = [p.detach().clone() for p in self.params]
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self._count: torch.Tensor | None = None  # the update count on the device, once capture starts

    def decay_at(self, t: int | torch.Tensor) -> float | torch.Tensor:
        """The decay of update number ``t`` (a float, or a tensor for a count held on the device)."""
        if not self.warmup:
            return self.decay
        warm = (1 + t) / (10 + t)
        return warm.clamp(max=self.decay) if isinstance(warm, torch.Tensor) else min(self.decay, warm)

    @torch.no_grad()
    def update(self) -> None:
        self.num_updates += 1
        decay = self.decay_at(self.num_updates)
        assert not isinstance(decay, torch.Tensor)  # a host count: a float
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1.0 - decay)

    def start_capture(self) -> None:
        """Move the update count to the device, for :meth:`update_captured` (call before capturing)."""
        self._count = torch.full((), float(self.num_updates), device=self.shadow[0].device)

    @torch.no_grad()
    def update_captured(self) -> None:
        """:meth:`update` with the count and decay kept on the device, so that a CUDA graph can record it.

        The caller adds 1 to ``num_updates`` after each replay (the host copy that checkpoints store).
        """
        assert self._count is not None, "call start_capture() first"
        self._count += 1
        decay = self.decay_at(self._count)
        torch._foreach_mul_(self.shadow, decay)
        torch._foreach_add_(self.shadow, torch._foreach_mul([p.detach() for p in self.params], 1 - decay))

    @contextmanager
    def swapped(self) -> Iterator[None]:
        """Temporarily load the averaged values into the network."""
        backup = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            torch._foreach_copy_([p.data for p in self.params], self.shadow)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_([p.data for p in self.params], backup)

    def state_dict(self) -> dict:
        return {"shadow": [s.cpu() for s in self.shadow], "num_updates": self.num_updates}

    def load_state_dict(self, state: dict) -> None:
        if len(state["shadow"]) != len(self.shadow):
            raise ValueError("EMA state does not match the network's parameters")
        with torch.no_grad():
            for s, v in zip(self.shadow, state["shadow"]):
                s.copy_(v)
        self.num_updates = int(state["num_updates"])

"""The whole training step recorded once as a CUDA graph and replayed.

A DDPM U-Net step is a few hundred small kernels; launched one by one from Python, the GPU waits
on the CPU. ``torch.compile``'s own CUDA graphs cover the network's forward and backward only: the
loss's noise sampling, gradient clipping, Adam, the EMA and the bookkeeping still launch eagerly.
Here all of it is one graph (measured in docs/performance.md: in bf16, 1.4-1.8x the eager TF32 step without
compiling anything, and a few percent on top of a compiled network, which is then bound by the GPU):

1. the first :data:`WARMUP_STEPS` steps run eagerly on a side stream (compilation, autotuning and
   library workspaces happen there, as graph capture requires);
2. the next step is captured with gradients unset, so the backward pass writes fresh gradient
   buffers that each replay overwrites;
3. every later step copies its batch into the graph's input buffer and replays.

Everything the step changes lives on the device: the parameters, Adam's state and step count, the
learning rate (a tensor, so the warm-up schedule is computed inside the graph), the EMA and its
count, and the random generators (registered with the graph, so each replay draws new numbers and a
checkpointed generator state resumes correctly). Masks are read in place, so a round's graph sees
exactly the masks it was captured with; a new round captures a new graph.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor

WARMUP_STEPS = 3


@contextmanager
def host_syncs() -> Iterator[list[str]]:
    """Where (``file:line``) the block made synchronising CUDA calls (PyTorch's sync debug mode).

    A step that waits for the GPU (``.item()``, a CPU-to-GPU copy, a branch on a tensor) cannot be
    captured; the list is filled when the block exits.
    """
    found: list[str] = []
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield found
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    # Only the per-call reports: setting the mode itself warns that it is a prototype.
    found.extend(f"{Path(w.filename).name}:{w.lineno}" for w in caught if "called a synchronizing" in str(w.message))


class StepGraph:
    """Runs ``body(batch)`` eagerly for :data:`WARMUP_STEPS` steps, then captures it once and replays it.

    The last warm-up step runs under :func:`host_syncs`; a step that synchronises with the host is
    never captured (it would fail, or replay stale values): it keeps running eagerly, with a warning.
    """

    def __init__(self, body: Callable[[Tensor], None], optimizer: torch.optim.Optimizer,
                 generators: Sequence[torch.Generator] = (), before_capture: Callable[[], None] = lambda: None,
                 warmup_steps: int = WARMUP_STEPS):
        self.body = body
        self.before_capture = before_capture
        self.optimizer = optimizer
        self.generators = list(generators)
        self.warmup_steps = warmup_steps
        self.eager_steps = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.captured = False  # whether this round's step was ever captured (for the round's record)
        self.uncapturable: str | None = None  # why not, when the step synchronises with the host
        self.static_batch: Tensor | None = None
        self.side_stream: torch.cuda.Stream | None = None

    def step(self, batch: Tensor) -> None:
        """One training step on ``batch``: eager while warming up, then captured once and replayed."""
        if self.graph is None and self.eager_steps >= self.warmup_steps and self.uncapturable is None:
            self._capture(batch)
        if self.graph is not None:
            assert self.static_batch is not None
            self.static_batch.copy_(batch)
            self.graph.replay()
            return
        current = torch.cuda.current_stream(batch.device)
        if self.side_stream is None:
            self.side_stream = torch.cuda.Stream(batch.device)
        self.side_stream.wait_stream(current)
        with torch.cuda.stream(self.side_stream):
            if self.eager_steps == self.warmup_steps - 1:  # caches and compiled code are warm by now
                with host_syncs() as syncs:
                    self.body(batch)
                if syncs:
                    self.uncapturable = syncs[0]
                    warnings.warn(f"the training step synchronises with the host (at {syncs[0]}), so it runs "
                                  f"without a CUDA graph; pass --no-cuda-graphs to silence this", RuntimeWarning,
                                  stacklevel=2)
            else:
                self.body(batch)
            self.optimizer.zero_grad(set_to_none=True)
        current.wait_stream(self.side_stream)
        self.eager_steps += 1

    def _capture(self, batch: Tensor) -> None:
        torch.cuda.synchronize(batch.device)
        self.static_batch = batch.clone()
        self.optimizer.zero_grad(set_to_none=True)
        self.before_capture()
        graph = torch.cuda.CUDAGraph()
        for generator in self.generators:
            graph.register_generator_state(generator)
        with torch.cuda.graph(graph):
            self.body(self.static_batch)
        self.graph = graph
        self.captured = True

    def release(self) -> None:
        """Drop the graph and the gradients it wrote (they live in its memory pool)."""
        self.graph = None
        self.static_batch = None
        self.optimizer.zero_grad(set_to_none=True)

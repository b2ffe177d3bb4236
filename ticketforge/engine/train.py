"""One round of masked training: a short loop you can read top to bottom, over a stepper.

Host synchronisation happens only every ``log_every`` steps and at checkpoints (that is where the
loss is read and checked for NaN); the step itself never waits for the GPU. The step is one
:class:`StepBody`; :func:`make_stepper` chooses once per round how it runs: :class:`EagerStep`
launches it from Python, :class:`CapturedStep` (``capture`` on a CUDA device) records the whole step
(loss, backward, clipping, Adam, EMA, the NaN bookkeeping) once as a CUDA graph after a few eager
warm-up steps and then replays it: one launch per step instead of hundreds (see
:mod:`ticketforge.engine.step_graph`).
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import torch
from torch import Tensor, nn

from ..errors import TrainingDiverged
from ..protocols import ModelSpec
from ..pruning.masks import refresh_pruned_weights
from .data import BatchSource
from .ema import EMA
from .interrupts import StepBoundary
from .step_graph import StepGraph

Reduce = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


def make_optimizer(network: nn.Module, lr: float, weight_decay: float, device: torch.device,
                   capturable: bool = False, beta2: float = 0.999) -> torch.optim.Optimizer:
    """Adam(W) over every parameter; fused kernels on CUDA, capturable in a CUDA graph if asked."""
    params = [p for p in network.parameters() if p.requires_grad]
    fused, betas = device.type == "cuda", (0.9, beta2)
    return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay, fused=fused,
                             capturable=capturable) \
        if weight_decay else torch.optim.Adam(params, lr=lr, betas=betas, fused=fused, capturable=capturable)


def autocast_for(precision: str, device: torch.device, cache: bool = True) -> Any:
    """bf16 autocast, or nothing; ``cache=False`` inside CUDA graphs (the cast cache outlives a capture)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=cache)
    return nullcontext()


def warmup_lr(base: float, warmup_steps: int, step: int | Tensor) -> Any:
    """Linear warm-up over ``warmup_steps`` steps, then ``base``: a float for a step number, a tensor
    for a step held on the device (inside a captured step)."""
    if not warmup_steps:
        return base
    scale = (step + 1) / warmup_steps
    return base * (scale.clamp(max=1.0) if isinstance(scale, Tensor) else min(1.0, scale))


class Tally:
    """What the steps keep on the device between sync points, so that no step waits for the GPU: the
    window's loss sum, the first non-finite step, (loss, step) of the last finite one, and the step."""

    def __init__(self, device: torch.device, start_step: int):
        self.loss_sum = torch.zeros((), device=device)
        self.bad_step = torch.full((), -1, dtype=torch.long, device=device)
        self.last_finite = torch.full((2,), float("nan"), device=device)
        self.step = torch.full((), start_step - 1, dtype=torch.long, device=device)

    def add(self, loss: Tensor) -> None:
        """Count one step's loss; remember the first non-finite step without a host sync."""
        loss = loss.detach().float()
        self.bad_step.copy_(torch.where((self.bad_step < 0) & ~torch.isfinite(loss), self.step, self.bad_step))
        self.last_finite.copy_(torch.where((self.bad_step < 0) & torch.isfinite(loss),
                                           torch.stack([loss, self.step.to(loss.dtype)]), self.last_finite))
        self.loss_sum.add_(loss)

    def window_loss(self, round_index: int, reduce: Reduce | None) -> Tensor:
        """The sync point: the window's loss sum, or TrainingDiverged at the first non-finite step."""
        window_loss, bad_any = reduce(self.loss_sum, self.bad_step) if reduce is not None \
            else (self.loss_sum, self.bad_step)
        first_bad = int(bad_any)
        if first_bad >= 0:
            loss_at, step_at = self.last_finite.tolist()
            before = "no step of this attempt had a finite loss" if math.isnan(step_at) \
                else f"last finite loss {loss_at:.4g} at step {int(step_at)}"
            detail = (f"loss became non-finite at round {round_index}, step {first_bad} ({before}); "
                      f"the last good checkpoint is kept")
            raise TrainingDiverged(detail)  # the engine adds advice that works for this run
        return window_loss


@dataclass
class StepBody:
    """One training step: loss, backward, clipping, Adam, EMA and the tally, all of it on the device
    (so that it can be captured). ``lr_t``: the learning rate as a device tensor, which the captured
    step sets itself (the warm-up inside the graph); None for eager steps, whose caller sets it."""

    spec: ModelSpec
    network: nn.Module  # what the loss calls: the network, compiled or under DDP
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    ema: EMA | None
    generator: torch.Generator
    tally: Tally
    amp: Any
    grad_clip: float | None
    lr: float
    warmup_steps: int
    lr_t: Tensor | None = None

    def __call__(self, batch: Tensor) -> None:
        self.tally.step.add_(1)
        if self.lr_t is not None and self.warmup_steps:
            self.lr_t.copy_(warmup_lr(self.lr, self.warmup_steps, self.tally.step))
        with self.amp:
            loss = self.spec.loss(self.network, batch, self.generator)
        loss.backward()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update_captured() if self.lr_t is not None else self.ema.update()
        self.tally.add(loss)


class Stepper(Protocol):
    """How a round runs its steps: :class:`EagerStep` or :class:`CapturedStep`, chosen once by
    :func:`make_stepper`."""

    tally: Tally

    def step(self, batch: Tensor, step: int) -> float:
        """Training step number ``step`` on ``batch``; returns its learning rate (warm-up included)."""

    def release(self) -> dict[str, Any]:
        """End of the round: free what the steps held; the summary entries they add."""


class EagerStep:
    """Each step launched from Python."""

    def __init__(self, body: StepBody):
        self.body, self.tally = body, body.tally

    def step(self, batch: Tensor, step: int) -> float:
        lr = warmup_lr(self.body.lr, self.body.warmup_steps, step)
        for group in self.body.optimizer.param_groups:
            group["lr"] = lr
        self.body(batch)
        self.body.optimizer.zero_grad(set_to_none=True)
        return lr

    def release(self) -> dict[str, Any]:
        return {}


class CapturedStep:
    """The whole step recorded once as a CUDA graph after a few eager warm-up steps, then replayed
    (see :mod:`ticketforge.engine.step_graph`). The graph reads the learning rate from the device, set
    here from ``start_step`` (also after a resume's load) and advanced by the step itself."""

    def __init__(self, body: StepBody, network: nn.Module, start_step: int):
        body.lr_t = torch.tensor(warmup_lr(body.lr, body.warmup_steps, start_step), device=body.tally.step.device)
        for group in body.optimizer.param_groups:
            group["lr"] = body.lr_t
        self.body, self.tally = body, body.tally
        self.graph = StepGraph(body, body.optimizer, [body.generator], lambda: refresh_pruned_weights(network))
        if body.ema is not None:
            body.ema.start_capture()

    def step(self, batch: Tensor, step: int) -> float:
        self.graph.step(batch)  # the graph computes the learning rate itself
        if self.body.ema is not None:
            self.body.ema.num_updates += 1  # host copy of the device count, for checkpoints
        return warmup_lr(self.body.lr, self.body.warmup_steps, step)

    def release(self) -> dict[str, Any]:
        self.graph.release()  # the graph's memory and its gradient buffers: the next round starts clean
        return {"cuda_graph": self.graph.captured}


def make_stepper(spec: ModelSpec, network: nn.Module, optimizer: torch.optim.Optimizer, ema: EMA | None,
                 generator: torch.Generator, device: torch.device, start_step: int, *, lr: float,
                 warmup_steps: int = 0, grad_clip: float | None = None, precision: str = "fp32",
                 capture: bool = False, forward_network: nn.Module | None = None) -> Stepper:
    """The round's stepper: captured with ``capture`` on a CUDA device (the optimizer then must come from
    ``make_optimizer(..., capturable=True)``), eager otherwise. ``precision``: fp32, tf32 or bf16."""
    network.train()
    captured = capture and device.type == "cuda"
    body = StepBody(spec, forward_network if forward_network is not None else network,
                    [p for p in network.parameters() if p.requires_grad], optimizer, ema, generator,
                    Tally(device, start_step), autocast_for(precision, device, cache=not captured),
                    grad_clip, lr, warmup_steps)
    optimizer.zero_grad(set_to_none=True)  # the first step must not add to gradients left from before
    return CapturedStep(body, network, start_step) if captured else EagerStep(body)


def train_round(stepper: Stepper, batches: BatchSource, *, round_index: int, start_step: int, steps: int,
                log_every: int, checkpoint_every: int,
                on_log: Callable[[int, dict[str, float]], None], on_checkpoint: Callable[[int], None],
                on_step: Callable[[int], None] = lambda step: None, reduce: Reduce | None = None,
                boundary: StepBoundary | None = None) -> dict[str, Any]:
    """Train from ``start_step`` to ``steps`` with data and seeds of round ``round_index``; returns the
    round's summary metrics.

    ``on_step(step)`` runs after each completed step (the engine stores the rewind point there);
    ``on_checkpoint(step)`` after every ``checkpoint_every`` steps, once the loss is known finite.
    ``reduce(loss_sum, bad_step)`` runs at those sync points only (under torchrun: the mean loss and the
    first non-finite step over all processes, so every rank stops at the same step).
    ``boundary``: a signal it holds ends the loop after the step in flight, checkpointed (once the
    loss is known finite) unless it was the round's last step, which the caller saves.
    """
    tally = stepper.tally
    window, t_window, last_loss = 0, time.perf_counter(), float("nan")
    try:
        for step in range(start_step, steps):
            lr = stepper.step(batches.batch(round_index, step), step)
            window += 1
            done = step + 1
            if boundary is not None:
                boundary.unsaved = True
            at_log = done % log_every == 0 or done == steps
            at_ckpt = done % checkpoint_every == 0 and done < steps
            if at_log or at_ckpt:
                window_loss = tally.window_loss(round_index, reduce)
            try:
                on_step(done)
            except TrainingDiverged:
                if not (at_log or at_ckpt):
                    tally.window_loss(round_index, reduce)  # a non-finite loss says more than the weights it made
                raise
            if at_log:
                now = time.perf_counter()
                last_loss = float(window_loss) / window
                on_log(done, {"loss": last_loss, "lr": lr, "steps_per_s": window / max(now - t_window, 1e-9)})
                tally.loss_sum.zero_()
                window, t_window = 0, now
            if at_ckpt:
                on_checkpoint(done)
            if boundary is not None:
                boundary.unsaved = not at_ckpt
                if boundary.pending is not None and done < steps:
                    if not (at_log or at_ckpt):
                        tally.window_loss(round_index, reduce)  # never a checkpoint of a diverged step
                    if not at_ckpt:
                        on_checkpoint(done)
                    boundary.deliver()
    finally:
        extra = stepper.release()
    return {"loss": last_loss, **extra}

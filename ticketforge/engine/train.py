"""One round of masked training: a short loop you can read top to bottom.

Host synchronisation happens only every ``log_every`` steps and at checkpoints (that is where the
loss is read and checked for NaN); the step itself never waits for the GPU. With ``capture`` on a
CUDA device the whole step (loss, backward, clipping, Adam, EMA, the NaN bookkeeping) is recorded
once as a CUDA graph after a few eager warm-up steps and then replayed: one launch per step instead
of hundreds (see :mod:`ticketforge.engine.step_graph`).
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ..errors import TrainingDiverged
from ..protocols import ModelSpec
from ..pruning.masks import refresh_pruned_weights
from .data import BatchSource
from .ema import EMA
from .interrupts import StepBoundary
from .step_graph import StepGraph


@dataclass
class RoundSetup:
    """What one round trains with."""

    round_index: int
    steps: int
    lr: float
    warmup_steps: int
    grad_clip: float | None
    log_every: int
    checkpoint_every: int
    precision: str  # resolved: fp32, tf32 or bf16
    capture: bool = False  # record the step as one CUDA graph (CUDA only; see step_graph.py)


def make_optimizer(network: nn.Module, lr: float, weight_decay: float, device: torch.device,
                   capturable: bool = False) -> torch.optim.Optimizer:
    """Adam(W) over every parameter; fused kernels on CUDA, capturable in a CUDA graph if asked."""
    params = [p for p in network.parameters() if p.requires_grad]
    fused = device.type == "cuda"
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused, capturable=capturable) \
        if weight_decay else torch.optim.Adam(params, lr=lr, fused=fused, capturable=capturable)


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


def train_round(
    setup: RoundSetup,
    spec: ModelSpec,
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: EMA | None,
    batches: BatchSource,
    generator: torch.Generator,
    start_step: int,
    *,
    on_log: Callable[[int, dict[str, float]], None],
    on_checkpoint: Callable[[int], None],
    on_step: Callable[[int], None] = lambda step: None,
    forward_network: nn.Module | None = None,
    reduce: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
    boundary: StepBoundary | None = None,
) -> dict[str, float]:
    """Train from ``start_step`` to ``setup.steps``; returns the round's summary metrics.

    ``on_step(step)`` runs after each completed step (the engine stores the rewind point there);
    ``on_checkpoint(step)`` after every ``checkpoint_every`` steps, once the loss is known finite.
    ``reduce(loss_sum, bad_step)`` runs at those sync points only (under torchrun: the mean loss and the
    first non-finite step over all processes, so every rank stops at the same step).
    ``boundary``: a signal it holds ends the loop after the step in flight, checkpointed (once the
    loss is known finite) unless it was the round's last step, which the caller saves.
    With ``setup.capture`` the optimizer must come from ``make_optimizer(..., capturable=True)``.
    """
    device = batches.device
    net_fwd = forward_network if forward_network is not None else network
    network.train()
    params = [p for p in network.parameters() if p.requires_grad]
    loss_sum = torch.zeros((), device=device)
    bad_step = torch.full((), -1, dtype=torch.long, device=device)
    last_finite = torch.full((2,), float("nan"), device=device)  # (loss, step) of the last finite step
    step_t = torch.full((), start_step - 1, dtype=torch.long, device=device)
    captured = setup.capture and device.type == "cuda"
    amp = autocast_for(setup.precision, device, cache=not captured)
    lr_t = None
    if captured:  # the graph reads the learning rate from the device (also after a resume's load)
        lr_t = torch.tensor(warmup_lr(setup.lr, setup.warmup_steps, start_step), device=device)
        for group in optimizer.param_groups:
            group["lr"] = lr_t

    def step_body(batch: Tensor) -> None:
        """One step; everything it keeps (loss sum, first bad step) stays on the device."""
        step_t.add_(1)
        if lr_t is not None and setup.warmup_steps:
            lr_t.copy_(warmup_lr(setup.lr, setup.warmup_steps, step_t))
        with amp:
            loss = spec.loss(net_fwd, batch, generator)
        loss.backward()
        if setup.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, setup.grad_clip)
        optimizer.step()
        if ema is not None:
            ema.update_captured() if captured else ema.update()
        loss = loss.detach().float()
        # Remember the first non-finite step without a host sync.
        bad_step.copy_(torch.where((bad_step < 0) & ~torch.isfinite(loss), step_t, bad_step))
        last_finite.copy_(torch.where((bad_step < 0) & torch.isfinite(loss),
                                      torch.stack([loss, step_t.to(loss.dtype)]), last_finite))
        loss_sum.add_(loss)

    optimizer.zero_grad(set_to_none=True)  # the first step must not add to gradients left from before
    graph = StepGraph(step_body, optimizer, [generator], lambda: refresh_pruned_weights(network)) if captured else None
    if graph is not None and ema is not None:
        ema.start_capture()

    def check_finite() -> Tensor:
        """The sync point: the window's loss sum, or TrainingDiverged at the first non-finite step."""
        window_loss, bad_any = reduce(loss_sum, bad_step) if reduce is not None else (loss_sum, bad_step)
        first_bad = int(bad_any)
        if first_bad >= 0:
            loss_at, step_at = last_finite.tolist()
            before = "no step of this attempt had a finite loss" if math.isnan(step_at) \
                else f"last finite loss {loss_at:.4g} at step {int(step_at)}"
            detail = (f"loss became non-finite at round {setup.round_index}, step {first_bad} ({before}); "
                      f"the last good checkpoint is kept")
            raise TrainingDiverged(detail)  # the engine adds advice that works for this run
        return window_loss

    window, t_window, last_loss = 0, time.perf_counter(), float("nan")
    try:
        for step in range(start_step, setup.steps):
            lr = warmup_lr(setup.lr, setup.warmup_steps, step)
            batch = batches.batch(setup.round_index, step)
            if graph is not None:
                graph.step(batch)
                if ema is not None:
                    ema.num_updates += 1  # host copy of the device count, for checkpoints
            else:
                for group in optimizer.param_groups:
                    group["lr"] = lr
                step_body(batch)
                optimizer.zero_grad(set_to_none=True)
            window += 1
            done = step + 1
            if boundary is not None:
                boundary.unsaved = True
            at_log = done % setup.log_every == 0 or done == setup.steps
            at_ckpt = done % setup.checkpoint_every == 0 and done < setup.steps
            if at_log or at_ckpt:
                window_loss = check_finite()
            try:
                on_step(done)
            except TrainingDiverged:
                if not (at_log or at_ckpt):
                    check_finite()  # a non-finite loss says more than the non-finite weights it made
                raise
            if at_log:
                now = time.perf_counter()
                last_loss = float(window_loss) / window
                on_log(done, {"loss": last_loss, "lr": lr, "steps_per_s": window / max(now - t_window, 1e-9)})
                loss_sum.zero_()
                window, t_window = 0, now
            if at_ckpt:
                on_checkpoint(done)
            if boundary is not None:
                boundary.unsaved = not at_ckpt
                if boundary.pending is not None and done < setup.steps:
                    if not (at_log or at_ckpt):
                        check_finite()  # never a checkpoint of a diverged step
                    if not at_ckpt:
                        on_checkpoint(done)
                    boundary.deliver()
    finally:
        if graph is not None:
            graph.release()  # the graph's memory and its gradient buffers: the next round starts clean
    return {"loss": last_loss, **({"cuda_graph": graph.captured} if graph is not None else {})}

"""One round of masked training: a short loop you can read top to bottom.

Host synchronisation happens only every ``log_every`` steps and at checkpoints (that is where the
loss is read and checked for NaN); the step itself never waits for the GPU.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from ..errors import TrainingDiverged
from ..protocols import ModelSpec
from .data import BatchSource
from .ema import EMA


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


def make_optimizer(network: nn.Module, lr: float, weight_decay: float, device: torch.device) -> torch.optim.Optimizer:
    """Adam(W) over every parameter; fused kernels on CUDA."""
    params = [p for p in network.parameters() if p.requires_grad]
    fused = device.type == "cuda"
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused) if weight_decay \
        else torch.optim.Adam(params, lr=lr, fused=fused)


def autocast_for(precision: str, device: torch.device) -> Any:
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


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
) -> dict[str, float]:
    """Train from ``start_step`` to ``setup.steps``; returns the round's summary metrics.

    ``on_step(step)`` runs after each completed step (the engine stores the rewind point there);
    ``on_checkpoint(step)`` after every ``checkpoint_every`` steps, once the loss is known finite.
    ``reduce(loss_sum, bad_step)`` runs at those sync points only (under torchrun: the mean loss and the
    first non-finite step over all processes, so every rank stops at the same step).
    """
    device = batches.device
    net_fwd = forward_network if forward_network is not None else network
    network.train()
    loss_sum = torch.zeros((), device=device)
    bad_step = torch.full((), -1, dtype=torch.long, device=device)
    step_t = torch.full((), start_step - 1, dtype=torch.long, device=device)
    window, t_window, last_loss = 0, time.perf_counter(), float("nan")
    amp = autocast_for(setup.precision, device)
    for step in range(start_step, setup.steps):
        lr = setup.lr * min(1.0, (step + 1) / setup.warmup_steps) if setup.warmup_steps else setup.lr
        for group in optimizer.param_groups:
            group["lr"] = lr
        with amp:
            loss = spec.loss(net_fwd, batches.batch(setup.round_index, step), generator)
        loss.backward()
        if setup.grad_clip:
            torch.nn.utils.clip_grad_norm_(network.parameters(), setup.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update()
        loss = loss.detach().float()
        # Remember the first non-finite step without a host sync.
        step_t += 1
        bad_step = torch.where((bad_step < 0) & ~torch.isfinite(loss), step_t, bad_step)
        loss_sum += loss
        window += 1
        done = step + 1
        at_log = done % setup.log_every == 0 or done == setup.steps
        at_ckpt = done % setup.checkpoint_every == 0 and done < setup.steps
        if at_log or at_ckpt:
            window_loss, bad_any = reduce(loss_sum, bad_step) if reduce is not None else (loss_sum, bad_step)
            first_bad = int(bad_any)
            if first_bad >= 0:
                raise TrainingDiverged(
                    f"loss became non-finite at round {setup.round_index}, step {first_bad} "
                    f"(last finite loss {last_loss:.4g}): lower --lr or enable grad clipping; the last good "
                    f"checkpoint is kept and the same command resumes from it")
        on_step(done)
        if at_log:
            now = time.perf_counter()
            last_loss = float(window_loss) / window
            on_log(done, {"loss": last_loss, "lr": lr, "steps_per_s": window / max(now - t_window, 1e-9)})
            loss_sum.zero_()
            window, t_window = 0, now
        if at_ckpt:
            on_checkpoint(done)
    return {"loss": last_loss}

"""The training step captured as one CUDA graph on the tiny DDPM U-Net: the eager step's numbers, in
fp32 and compiled in bf16, and an eager fallback for a loss that syncs with the host.

The core's side of the captured step (a toy run resumed mid-round, the device-side EMA) is in
tests/test_step_graph.py; these run on a GPU machine (the suite skips them elsewhere).
"""

from __future__ import annotations

import warnings

import pytest
import torch

from ticketforge.engine.data import BatchSource
from ticketforge.engine.ema import EMA
from ticketforge.engine.train import make_optimizer, make_stepper, train_round
from ticketforge.registry import get_registry

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _train(capture: bool, steps: int = 12, precision: str = "fp32", rounds: int = 2, spec=None, compile: bool = False,
           ) -> tuple[list[torch.Tensor], list[float], EMA, list[dict]]:
    """Rounds of a few steps of the tiny DDPM U-Net on random images, with warm-up, clipping and EMA;
    each round gets a new optimizer and EMA, as in the engine."""
    device = torch.device("cuda")
    spec = spec or get_registry().create("models", "ddpm-unet", preset="tiny")
    torch.manual_seed(0)
    network = spec.build().to(device)
    images = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    batches = BatchSource(images, 8, seed=0, device=device)
    forward = torch.compile(network) if compile else network  # default mode: no CUDA graphs of its own
    losses: list[float] = []
    summaries = []
    for k in range(rounds):
        optimizer = make_optimizer(network, 2e-4, 0.0, device, capturable=capture)
        ema = EMA(network, 0.999)
        gen = torch.Generator(device=device).manual_seed(k)
        torch.manual_seed(1)  # dropout
        stepper = make_stepper(spec, network, optimizer, ema, gen, device, 0, lr=2e-4, warmup_steps=5, grad_clip=1.0,
                               precision=precision, capture=capture, forward_network=forward)
        summaries.append(train_round(stepper, batches, round_index=k, start_step=0, steps=steps, log_every=1,
                                     checkpoint_every=10 ** 9,
                                     on_log=lambda step, m: losses.append(m["loss"]), on_checkpoint=lambda step: None))
    return [p.detach().clone() for p in network.parameters()], losses, ema, summaries


@cuda
def test_captured_step_trains_like_the_eager_step():
    eager_params, eager_losses, eager_ema, _ = _train(capture=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the step has no host sync: no fallback warning
        graph_params, graph_losses, graph_ema, summaries = _train(capture=True)
    assert [s["cuda_graph"] for s in summaries] == [True, True]
    assert len(graph_losses) == 24 and all(map(lambda x: x == x, graph_losses))
    # Same kernels, same random numbers: the replays reproduce the eager step, and a second round
    # (new optimizer, new graph) starts as clean as an eager one.
    assert graph_losses == pytest.approx(eager_losses, rel=1e-4)
    # cuDNN's backward kernels are not bitwise deterministic: two eager runs of 24 steps differ by up
    # to 2e-5 in single weights (measured on an H100), as much as eager and captured do. So compare
    # the whole difference with how far training moved the weights (benchmarks/step_graph_drift.py:
    # mean difference 1e-7 against a mean movement of 1.7e-3); a lost, doubled or stale step is one of
    # twelve Adam steps, several percent of that movement.
    init = _initial_params()
    assert _relative_gap(graph_params, eager_params, init) < 2e-3
    assert graph_ema.num_updates == eager_ema.num_updates == 12  # the last round's EMA
    assert _relative_gap(graph_ema.shadow, eager_ema.shadow, init) < 2e-3


def _initial_params() -> list[torch.Tensor]:
    torch.manual_seed(0)
    return [p.detach().cuda() for p in get_registry().create("models", "ddpm-unet", preset="tiny").build().parameters()]


def _relative_gap(got: list[torch.Tensor], want: list[torch.Tensor], start: list[torch.Tensor]) -> float:
    """||got - want|| over ||want - start||, all tensors as one vector."""
    gap = torch.cat([(a - b).flatten() for a, b in zip(got, want)]).norm()
    moved = torch.cat([(b - s).flatten() for b, s in zip(want, start)]).norm()
    return float(gap / moved)


@cuda
def test_captured_step_compiles_in_bf16():
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # compiled code has no host sync either
        params, losses, _, summaries = _train(capture=True, steps=8, precision="bf16", rounds=1, compile=True)
    assert summaries[0]["cuda_graph"] is True
    assert len(losses) == 8 and all(0 < x < 10 for x in losses)


class _SyncingLoss:
    """The tiny DDPM's loss plus a host sync (``.item()``), as a careless plugin might write it."""

    def __init__(self):
        self.inner = get_registry().create("models", "ddpm-unet", preset="tiny")

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def loss(self, network, batch, generator=None):
        loss = self.inner.loss(network, batch, generator)
        if loss.item() > 1e6:  # a branch on a tensor: waits for the GPU
            raise RuntimeError("unreachable")
        return loss


@cuda
def test_a_step_that_syncs_with_the_host_falls_back_to_eager_with_a_warning():
    eager_params, eager_losses, _, _ = _train(capture=False, rounds=1, spec=_SyncingLoss())
    with pytest.warns(RuntimeWarning, match="synchronises with the host"):
        params, losses, _, summaries = _train(capture=True, rounds=1, spec=_SyncingLoss())
    assert summaries[0]["cuda_graph"] is False
    assert losses == pytest.approx(eager_losses, rel=1e-4)

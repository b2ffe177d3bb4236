"""Samplers: DDPM ancestral sampling and DDIM, optionally switching networks at given timesteps.

Switching networks: ``network_schedule=[(s, other)]`` denoises with ``network`` at every model
timestep ``t >= s`` (the noisy steps) and with ``other`` at ``t < s``. Several switches may follow
each other, e.g. ``[(600, half_sparse), (200, sparse)]``. Timesteps are the 0-based inputs of the
network (``T - 1`` is the noisiest). The reverse ("ticket first, dense last") is the same call with
the networks exchanged. :func:`~ticketforge_ddpm.switching.switch_at` builds the same thing as one
module, for code that takes a single network (``spec.sample``, evaluators).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from .diffusion import GaussianDiffusion, eps_from_x0, from_model_space, randn, x0_from_eps
from .switching import NetworkSchedule, TimestepSwitch, network_picker, switch_at

__all__ = ["SAMPLERS", "NetworkSchedule", "TimestepSwitch", "switch_at", "network_picker", "ddim_timesteps",
           "step_count", "ddim_sigmas", "ancestral_sigmas", "sample_steps", "sample", "denoising_trajectory"]

SAMPLERS = ("ddim", "ddpm")
DEFAULT_DDIM_STEPS = 50


def step_count(sampler: str, steps: int | None, timesteps: int) -> int:
    """The denoising steps a sampler takes: ``steps``, by default all T for ``ddpm``, 50 for ``ddim``."""
    if steps is not None:
        return steps
    return timesteps if sampler == "ddpm" else min(DEFAULT_DDIM_STEPS, timesteps)


def ddim_timesteps(timesteps: int, steps: int) -> list[int]:
    """The ``steps`` model timesteps DDIM visits, noisiest first (uniform stride, as in Song et al.)."""
    if not 1 <= steps <= timesteps:
        raise ValueError(f"steps must be in 1..{timesteps}, got {steps}")
    stride = timesteps // steps
    return list(range(0, stride * steps, stride))[::-1]


def _abar_pairs(diffusion: GaussianDiffusion, timesteps: Sequence[int]) -> tuple[Tensor, Tensor]:
    """abar at each visited timestep and at the next one (1 after the last), float64."""
    abar = diffusion.alphas_cumprod
    t = torch.as_tensor(list(timesteps))
    return abar[t], torch.cat([abar[t[1:]], torch.ones(1, dtype=abar.dtype)])


def ddim_sigmas(diffusion: GaussianDiffusion, timesteps: Sequence[int], eta: float) -> Tensor:
    """DDIM's sigma for each step of ``timesteps`` (noisiest first), float64:
    ``eta * sqrt((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev))``."""
    cur, prev = _abar_pairs(diffusion, timesteps)
    return eta * ((1 - prev) / (1 - cur) * (1 - cur / prev)).sqrt()


def ancestral_sigmas(diffusion: GaussianDiffusion, timesteps: Sequence[int], variance: str = "small") -> Tensor:
    """Per-step sigma of ancestral sampling over ``timesteps`` (noisiest first), float64.

    Over a subsequence the chain is respaced (Nichol & Dhariwal 2021): its betas are
    ``1 - abar_t / abar_prev``. ``small``: the posterior's beta tilde (Ho et al.'s "fixedsmall");
    ``large``: beta itself."""
    cur, prev = _abar_pairs(diffusion, timesteps)
    beta = 1 - cur / prev
    if variance == "small":
        return (beta * (1 - prev) / (1 - cur)).sqrt()
    if variance == "large":
        return beta.sqrt()
    raise ValueError(f"variance must be 'small' or 'large', got {variance!r}")


@contextmanager
def _eval_mode(modules: Sequence[nn.Module]) -> Iterator[None]:
    """Put ``modules`` in eval mode (no dropout) and restore each submodule's mode afterwards."""
    saved = [(m, m.training) for net in modules for m in net.modules()]
    for net in modules:
        net.eval()
    try:
        yield
    finally:
        for m, training in saved:
            m.training = training


def _device(network: nn.Module) -> torch.device:
    return next(network.parameters()).device


@torch.no_grad()
def sample_steps(network: nn.Module, diffusion: GaussianDiffusion, shape: Sequence[int], *,
                 sampler: str = "ddim", steps: int | None = None, eta: float = 0.0,
                 generator: torch.Generator | None = None, network_schedule: NetworkSchedule = (),
                 clip_x0: bool = True, variance: str = "small") -> Iterator[tuple[int, Tensor]]:
    """Run the reverse process in model space ([-1, 1]), yielding ``(k, x_k)`` for the starting
    noise and after every step. ``k`` is the 1-based noise level: ``t + 1`` for the state that
    enters the network at model timestep ``t`` (``T`` for DDPM's start; DDIM with a stride starts
    at its first visited timestep, e.g. 801 for 5 steps of T = 1000, as in Song et al.), 0 at the end.

    Args:
        network: denoiser (epsilon prediction) used where ``network_schedule`` says nothing else.
        diffusion: the process the network was trained with.
        shape: ``[n, C, H, W]`` in the network's input size.
        sampler: ``ddim`` or ``ddpm`` (ancestral).
        steps: number of denoising steps, uniformly strided over T (default: 50 for ``ddim``,
            all T for ``ddpm``; fewer steps make ``ddpm`` sample the respaced chain).
        eta: DDIM stochasticity (0 deterministic, 1 = ancestral variance).
        generator: RNG for the starting noise and every step's noise (on any device).
        network_schedule: switches to other networks at lower timesteps (module docstring).
        clip_x0: clip the predicted x_0 to [-1, 1] and use the noise it implies (Ho et al.;
            diffusers and guided-diffusion do so for DDIM too). Song et al.'s DDIM code does not:
            pass False to match it. Clipping matters most for undertrained networks.
        variance: ancestral variance, ``small`` (beta tilde) or ``large`` (beta).
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; known: {', '.join(SAMPLERS)}")
    T = diffusion.timesteps
    seq = ddim_timesteps(T, step_count(sampler, steps, T))
    abar, abar_prev = (v.tolist() for v in _abar_pairs(diffusion, seq))
    sigmas = ancestral_sigmas(diffusion, seq, variance) if sampler == "ddpm" else ddim_sigmas(diffusion, seq, eta)
    pick = network_picker(network, network_schedule)
    device = _device(network)
    networks = [network, *(net for _, net in network_schedule)]

    x = randn(shape, generator, device)
    yield seq[0] + 1, x
    with _eval_mode(networks):
        for i, t in enumerate(seq):
            tt = torch.full((x.shape[0],), t, device=device, dtype=torch.long)
            eps = pick(t)(x, tt).float()
            # t is the same for the whole batch: the schedule enters as Python scalars, so a step
            # launches a few elementwise kernels and never gathers from a table on the device.
            sigma, a, a_prev = float(sigmas[i]), abar[i], abar_prev[i]
            x0 = x0_from_eps(x, eps, a ** 0.5, (1.0 - a) ** 0.5)
            if clip_x0:
                x0 = x0.clamp(-1.0, 1.0)
                eps = eps_from_x0(x, x0, a ** 0.5, (1.0 - a) ** 0.5)
            if sampler == "ddpm":  # mean of q(x_prev | x_t, x_0) of the (respaced) chain
                beta = 1.0 - a / a_prev
                mean = (a_prev ** 0.5 * beta * x0 + (1.0 - beta) ** 0.5 * (1.0 - a_prev) * x) / (1.0 - a)
            else:  # DDIM (Song et al. eq. 12)
                mean = a_prev ** 0.5 * x0 + max(1.0 - a_prev - sigma ** 2, 0.0) ** 0.5 * eps
            last = i + 1 == len(seq)
            x = mean if last or sigma == 0.0 else mean + sigma * randn(x.shape, generator, device)
            yield (0 if last else seq[i + 1] + 1), x


def sample(network: nn.Module, diffusion: GaussianDiffusion, shape: Sequence[int], *,
           data_size: int | None = None, on_step: Callable[[], None] | None = None, **options) -> Tensor:
    """Generated images in [0, 1], center-cropped to ``data_size`` when the network's input was
    padded. ``on_step`` is called after each denoising step (progress); ``options`` are those of
    :func:`sample_steps`."""
    x = None
    for i, (_, x) in enumerate(sample_steps(network, diffusion, shape, **options)):  # noqa: B007 (the last x)
        if i and on_step is not None:  # the first state is the starting noise
            on_step()
    assert x is not None  # the first state, the starting noise, is always there
    return from_model_space(x, data_size)


def denoising_trajectory(network: nn.Module, diffusion: GaussianDiffusion, shape: Sequence[int], *,
                         frames: int = 8, data_size: int | None = None, **options) -> tuple[list[int], Tensor]:
    """The states x_T ... x_0 at ``frames`` evenly spaced steps of a sampling run.

    Returns ``(levels, images)``: the noise level of each frame as :func:`sample_steps` yields
    them (the starting level first, 0 last) and the images in [0, 1], ``[frames, n, C, h, w]``.
    ``options`` are those of :func:`sample_steps`."""
    n_steps = step_count(options.get("sampler", "ddim"), options.get("steps") or None, diffusion.timesteps)
    picks = {round(i * n_steps / max(frames - 1, 1)) for i in range(frames)}
    states = enumerate(sample_steps(network, diffusion, shape, **options))
    kept = [(k, from_model_space(x, data_size)) for i, (k, x) in states if i in picks]
    return [k for k, _ in kept], torch.stack([x for _, x in kept])

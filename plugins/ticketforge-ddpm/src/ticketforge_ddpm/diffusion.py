"""The Gaussian diffusion process of DDPM: beta schedules, q(x_t | x_0), the posterior
q(x_{t-1} | x_t, x_0), and the epsilon-prediction training loss.

Timesteps are 0-based: ``t = 0`` is the first noising step, ``t = T - 1`` the last. Schedules are
kept in float64 and cast to the input's dtype when gathered.
"""

from __future__ import annotations

import math
from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BETA_SCHEDULES = ("linear", "cosine")


def beta_schedule(name: str = "linear", timesteps: int = 1000, *, beta_start: float = 1e-4,
                  beta_end: float = 0.02) -> Tensor:
    """Betas ``[T]`` (float64). ``linear``: Ho et al., ``beta_start``..``beta_end``, scaled by
    1000 / T as in Nichol & Dhariwal so that other T keep about the same total noise (T must then
    exceed 1000 * beta_end, i.e. 20). ``cosine``: Nichol & Dhariwal (2021)."""
    if name == "linear":
        scale = 1000 / timesteps
        if scale * beta_end >= 1:
            raise ValueError(f"a linear schedule with T = {timesteps} has betas up to {scale * beta_end:.2f} >= 1; "
                             f"use T > {int(1000 * beta_end)} or the cosine schedule")
        return torch.linspace(scale * beta_start, scale * beta_end, timesteps, dtype=torch.float64)
    if name == "cosine":
        s = 0.008
        steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
        alphas_cumprod = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        return (1 - alphas_cumprod[1:] / alphas_cumprod[:-1]).clamp(max=0.999)
    raise ValueError(f"unknown beta schedule {name!r}; known: {', '.join(BETA_SCHEDULES)}")


def extract(values: Tensor, t: Tensor, like: Tensor) -> Tensor:
    """``values[t]`` on ``like``'s device and dtype, shaped ``[B, 1, 1, ...]`` to broadcast."""
    out = values.to(like.device)[t.to(like.device)].to(like.dtype)
    return out.reshape(t.shape[0], *([1] * (like.dim() - 1)))


class GaussianDiffusion:
    """Precomputed quantities of a beta schedule and the closed forms that use them.

    Args:
        betas: the schedule ``[T]``; ``beta_schedule(...)`` makes the usual ones.
    """

    def __init__(self, betas: Tensor) -> None:
        self.betas = betas.to(torch.float64)
        self.timesteps = int(betas.shape[0])
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.one_minus_alphas_cumprod = 1.0 - self.alphas_cumprod
        self.sqrt_one_minus_alphas_cumprod = self.one_minus_alphas_cumprod.sqrt()
        # q(x_{t-1} | x_t, x_0) = N(coef1 x_0 + coef2 x_t, beta_tilde_t)
        self.posterior_variance = self.betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef1 = self.betas * self.alphas_cumprod_prev.sqrt() / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * self.alphas.sqrt() / (1.0 - self.alphas_cumprod)
        self._device_copies: dict[tuple[int, torch.device], Tensor] = {}

    def _extract(self, values: Tensor, t: Tensor, like: Tensor) -> Tensor:
        """:func:`extract` from a copy of ``values`` made once per device. Copying a CPU tensor to a
        GPU waits for the whole stream: a copy per call would stall every training step twice."""
        key = (id(values), like.device)
        if key not in self._device_copies:
            self._device_copies[key] = values.to(like.device)
        return extract(self._device_copies[key], t, like)

    @classmethod
    def from_name(cls, schedule: str = "linear", timesteps: int = 1000) -> "GaussianDiffusion":
        """A process with a named beta schedule (see :func:`beta_schedule`)."""
        return cls(beta_schedule(schedule, timesteps))

    def q_mean_variance(self, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)."""
        return (self._extract(self.sqrt_alphas_cumprod, t, x0) * x0,
                self._extract(self.one_minus_alphas_cumprod, t, x0))

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """A draw of x_t ~ q(x_t | x_0) using the given standard normal ``noise``."""
        return (self._extract(self.sqrt_alphas_cumprod, t, x0) * x0
                + self._extract(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise)

    def q_posterior_mean_variance(self, x0: Tensor, xt: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance (beta tilde) of q(x_{t-1} | x_t, x_0)."""
        mean = (self._extract(self.posterior_mean_coef1, t, xt) * x0
                + self._extract(self.posterior_mean_coef2, t, xt) * xt)
        return mean, self._extract(self.posterior_variance, t, xt)

    def predict_x0(self, xt: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x_0 implied by x_t and a noise prediction."""
        return x0_from_eps(xt, eps, self._extract(self.sqrt_alphas_cumprod, t, xt),
                           self._extract(self.sqrt_one_minus_alphas_cumprod, t, xt))

    def predict_eps(self, xt: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        """Noise implied by x_t and an x_0 prediction."""
        return eps_from_x0(xt, x0, self._extract(self.sqrt_alphas_cumprod, t, xt),
                           self._extract(self.sqrt_one_minus_alphas_cumprod, t, xt))

    def training_loss(self, network: nn.Module, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Ho et al.'s simple loss: MSE between the noise and the network's prediction of it, at a
        uniformly drawn t per example. ``x0`` is already scaled to [-1, 1]."""
        t = torch.randint(0, self.timesteps, (x0.shape[0],), **rng(generator, x0.device))
        noise = randn(x0.shape, generator, x0.device, x0.dtype)
        pred = network(self.q_sample(x0, t.to(x0.device), noise), t.to(x0.device))
        return F.mse_loss(pred.float(), noise.float())


ScaleLike = Union[float, Tensor]


def x0_from_eps(xt: Tensor, eps: Tensor, sqrt_abar: ScaleLike, sqrt_one_minus_abar: ScaleLike) -> Tensor:
    """x_0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar); the scales are per-example tensors or, when the
    whole batch shares its timestep (sampling), Python floats."""
    return (xt - sqrt_one_minus_abar * eps) / sqrt_abar


def eps_from_x0(xt: Tensor, x0: Tensor, sqrt_abar: ScaleLike, sqrt_one_minus_abar: ScaleLike) -> Tensor:
    """eps = (x_t - sqrt(abar) x_0) / sqrt(1 - abar), the inverse of :func:`x0_from_eps`."""
    return (xt - sqrt_abar * x0) / sqrt_one_minus_abar


def rng(generator: torch.Generator | None, device: torch.device) -> dict:
    """Keyword arguments that draw from ``generator`` on its own device (or the global RNG on ``device``)."""
    return {"generator": generator, "device": generator.device} if generator is not None else {"device": device}


def randn(shape: Sequence[int], generator: torch.Generator | None, device: torch.device | str,
          dtype: torch.dtype = torch.float32) -> Tensor:
    """Standard normal noise drawn from ``generator`` (on its device), returned on ``device``."""
    return torch.randn(tuple(shape), dtype=dtype, **rng(generator, torch.device(device))).to(device)


def to_model_space(images: Tensor, image_size: int, *, pad_value: float = 0.0, hflip: bool = False,
                   generator: torch.Generator | None = None) -> Tensor:
    """Images in [0, 1] -> the network's input space: scaled to [-1, 1], padded symmetrically to
    ``image_size`` with ``pad_value`` (given in [0, 1], the background), optionally flipped
    horizontally at random (each image with probability 1/2)."""
    h, w = images.shape[-2:]
    if h > image_size or w > image_size:
        raise ValueError(f"images of {h}x{w} are larger than the network's {image_size}x{image_size}")
    x = images * 2.0 - 1.0
    if (h, w) != (image_size, image_size):
        top, left = (image_size - h) // 2, (image_size - w) // 2
        pad = (left, image_size - w - left, top, image_size - h - top)
        x = F.pad(x, pad, value=pad_value * 2.0 - 1.0)
    if hflip:
        flip = torch.rand(x.shape[0], **rng(generator, x.device)).to(x.device) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x


def from_model_space(x: Tensor, data_size: int | None = None) -> Tensor:
    """The inverse of :func:`to_model_space`: [-1, 1] -> [0, 1], center-cropped to ``data_size``."""
    images = ((x + 1.0) / 2.0).clamp(0.0, 1.0)
    size = x.shape[-1]
    if data_size is not None and data_size < size:
        top = (size - data_size) // 2
        images = images[..., top:top + data_size, top:top + data_size]
    return images

"""A tiny model and dataset for the core's tests: a denoising conv net on random 8x8 images."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from ticketforge import ComponentRecord, ModuleGroup, Option, TrainingDefaults, hookimpl


class ToyNet(nn.Module):
    def __init__(self, width: int = 8):
        super().__init__()
        self.inp = nn.Conv2d(1, width, 3, padding=1)
        self.mid = nn.Conv2d(width, width, 3, padding=1)
        self.norm = nn.GroupNorm(2, width)
        self.fc = nn.Linear(width, width)
        self.out = nn.Conv2d(width, 1, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.inp(x))
        h = self.norm(torch.relu(self.mid(h)))
        h = h + self.fc(h.mean((2, 3)))[:, :, None, None]
        return self.out(h)


class ToySpec:
    """Denoising autoencoder loss: enough to make weights move and magnitudes differ."""

    name = "toy"
    default_sampler = "ddim"  # a name only: sample() ignores it

    def __init__(self, preset: str | None = None, width: int = 8):
        self.config = {"width": width}
        self.defaults = TrainingDefaults(batch_size=16, lr=1e-2, warmup_steps=2, grad_clip=1.0, ema_decay=0.9,
                                         steps_per_round=20, rounds=2, dataset="toy-data")

    def build(self) -> nn.Module:
        return ToyNet(**self.config)

    def loss(self, network: nn.Module, batch: Tensor, generator: torch.Generator | None = None) -> Tensor:
        noise = torch.randn(batch.shape, generator=generator, device=batch.device)
        return ((network(batch + 0.1 * noise) - batch) ** 2).mean()

    def module_groups(self, network: nn.Module) -> list[ModuleGroup]:
        return [ModuleGroup("inp", [("inp", network.inp)]),
                ModuleGroup("mid", [("mid", network.mid), ("fc", network.fc)]),
                ModuleGroup("out", [("out", network.out)])]

    def sample(self, network: nn.Module, n: int, *, generator: torch.Generator | None = None, **options: Any) -> Tensor:
        x = torch.rand((n, 1, 8, 8), generator=generator, device=next(network.parameters()).device)
        return network(x).clamp(0, 1)

    def example_inputs(self, batch_size: int, device: torch.device | str = "cpu") -> tuple[Any, ...]:
        return (torch.zeros(batch_size, 1, 8, 8, device=device),)


def toy_data(root: str | None = None, download: bool = False, train: bool = True, **options: Any) -> TensorDataset:
    gen = torch.Generator().manual_seed(123)
    images = torch.rand(64, 1, 8, 8, generator=gen)
    return TensorDataset(images, torch.zeros(64, dtype=torch.long))


@hookimpl
def ticketforge_models() -> list[ComponentRecord]:
    return [ComponentRecord("toy", ToySpec, "a tiny conv net for tests",
                            (Option("preset", str, None, "ignored"), Option("width", int, 8, "channels")))]


@hookimpl
def ticketforge_datasets() -> list[ComponentRecord]:
    return [ComponentRecord("toy-data", toy_data, "64 random 8x8 images")]

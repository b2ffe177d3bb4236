"""A minimal model and dataset plugin, so the ERK schedule can be tried in a real (tiny) engine run.

Copy this into your own plugin's tests: it depends on nothing but ticketforge and torch.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from ticketforge import ComponentRecord, ModuleGroup, TrainingDefaults, hookimpl
from ticketforge.registry import build_registry


class TinyNet(nn.Module):
    def __init__(self, width: int = 8):
        super().__init__()
        self.inp = nn.Conv2d(1, width, 3, padding=1)
        self.mid = nn.Conv2d(width, width, 3, padding=1)
        self.out = nn.Conv2d(width, 1, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(torch.relu(self.mid(torch.relu(self.inp(x)))))


class TinySpec:
    """A denoising autoencoder on 8x8 images: the smallest thing the engine can train."""

    name = "tiny-example"

    def __init__(self, preset: str | None = None, width: int = 8):
        self.config = {"width": width}
        self.defaults = TrainingDefaults(batch_size=8, lr=1e-2, ema_decay=None, steps_per_round=5, rounds=2,
                                         dataset="tiny-example-data")

    def build(self) -> nn.Module:
        return TinyNet(**self.config)

    def loss(self, network: nn.Module, batch: Tensor, generator: torch.Generator | None = None) -> Tensor:
        noise = torch.randn(batch.shape, generator=generator, device=batch.device)
        return ((network(batch + 0.1 * noise) - batch) ** 2).mean()

    def module_groups(self, network: nn.Module) -> list[ModuleGroup]:
        return [ModuleGroup(name, [(name, getattr(network, name))]) for name in ("inp", "mid", "out")]

    def sample(self, network: nn.Module, n: int, *, generator: torch.Generator | None = None, **options: Any) -> Tensor:
        return network(torch.rand((n, 1, 8, 8), generator=generator)).clamp(0, 1)

    def example_inputs(self, batch_size: int, device: torch.device | str = "cpu") -> tuple[Any, ...]:
        return (torch.zeros(batch_size, 1, 8, 8, device=device),)


class TinyPlugin:
    @hookimpl
    def ticketforge_models(self) -> list[ComponentRecord]:
        return [ComponentRecord("tiny-example", TinySpec, "a tiny conv net for the example plugin's tests")]

    @hookimpl
    def ticketforge_datasets(self) -> list[ComponentRecord]:
        return [ComponentRecord("tiny-example-data", tiny_data, "32 random 8x8 images")]


def tiny_data(root: str | None = None, download: bool = False, train: bool = True, **options: Any) -> TensorDataset:
    images = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    return TensorDataset(images, torch.zeros(32, dtype=torch.long))


@pytest.fixture
def tiny_registry():
    """The core's built-ins and this plugin (through their entry points) plus the tiny model; another
    installed plugin, broken or registering the same names, stays out of these tests."""
    return build_registry(entry_points=["ticketforge", "ticketforge-example"], plugins=[TinyPlugin()])

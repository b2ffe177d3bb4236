import pytest
import torch

from ticketforge.testing import one_thread
from ticketforge_ddpm import DDPMSpec


@pytest.fixture
def tiny_spec() -> DDPMSpec:
    return DDPMSpec.from_preset("tiny")


@pytest.fixture
def tiny_net(tiny_spec):
    torch.manual_seed(0)
    return tiny_spec.build()


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    """Tar extraction and default data roots go to a per-test folder, never ~/.cache."""
    monkeypatch.setenv("TICKETFORGE_CACHE", str(tmp_path / "cache"))


_one_thread = pytest.fixture(autouse=True)(one_thread)  # torch on one CPU thread

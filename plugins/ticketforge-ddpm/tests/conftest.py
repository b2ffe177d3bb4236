import pytest
import torch

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


@pytest.fixture(autouse=True)
def _one_thread():
    """These tensors are small: one thread is as fast, and far faster on a shared, busy CPU
    (OpenMP threads spin-wait for each other when a core is taken)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

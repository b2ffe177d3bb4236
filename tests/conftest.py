"""Shared fixtures: a registry of the built-ins and the toy plugin alone, and quick run configs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import core_registry  # noqa: E402

import ticketforge.registry as registry_module  # noqa: E402
from ticketforge import RunConfig  # noqa: E402
from ticketforge.testing import one_thread  # noqa: E402


@pytest.fixture
def registry():
    """The built-ins plus the toy model and dataset; no other installed plugin (see helpers.core_registry)."""
    return core_registry()


@pytest.fixture(autouse=True)
def _isolated_registry(registry, monkeypatch):
    """``get_registry()`` (the CLI, ``Engine`` without ``registry=``) is the test's ``registry`` too."""
    monkeypatch.setattr(registry_module, "_registry", registry)


_one_thread = pytest.fixture(autouse=True, scope="session")(one_thread)  # torch on one CPU thread


@pytest.fixture
def toy_config(tmp_path):
    """A two-round toy run that takes well under a second per round."""
    return RunConfig(model="toy", schedule="uniform", p=20.0, rounds=2, steps_per_round=20, device="cpu",
                     out=str(tmp_path / "run"), log_every=5, checkpoint_every=10, artifacts=False)

"""Shared fixtures: a registry with the toy plugin, and quick run configs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import toy_plugin  # noqa: E402

from ticketforge import RunConfig  # noqa: E402
from ticketforge.registry import build_registry  # noqa: E402


@pytest.fixture
def registry():
    """Installed plugins plus the toy model and dataset."""
    return build_registry(plugins=[toy_plugin])


@pytest.fixture
def toy_config(tmp_path):
    """A two-round toy run that takes well under a second per round."""
    return RunConfig(model="toy", schedule="uniform", p=20.0, rounds=2, steps_per_round=20, device="cpu",
                     out=str(tmp_path / "run"), log_every=5, checkpoint_every=10, artifacts=False)

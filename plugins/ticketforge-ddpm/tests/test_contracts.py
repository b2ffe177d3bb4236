"""ticketforge's contract tests (what the engine relies on) for the ddpm-unet spec and the plugin."""

import pytest

from ticketforge.testing import ModelSpecContract, RecordsContract
from ticketforge_ddpm import DDPMSpec, plugin


class TestTinySpec(ModelSpecContract):
    batch_shape = (2, 1, 28, 28)  # MNIST digits, padded to 32x32 inside the spec
    sample_options = {"steps": 2}

    @pytest.fixture
    def spec(self):
        return DDPMSpec.from_preset("tiny")


class TestCifarShapedSpec(ModelSpecContract):
    """The cifar10 preset's layout (4 levels, flips, no padding) at a tenth of the width."""

    batch_shape = (2, 3, 32, 32)
    sample_options = {"steps": 2}

    @pytest.fixture
    def spec(self):
        return DDPMSpec.from_preset("cifar10", ch=16, num_res_blocks=1)


class TestPluginRecords(RecordsContract):
    distribution = "ticketforge-ddpm"

    @pytest.fixture
    def plugin(self):
        return plugin

"""Module groups: every prunable module exactly once, in the order the forward pass calls them."""

import pytest
import torch
from torch import nn

from ticketforge_ddpm import DDPMSpec


def prunable_names(net):
    return {name for name, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


@pytest.mark.parametrize("preset", ["tiny", "quickstart", "mnist"])
def test_groups_cover_every_conv_and_linear_once_in_forward_order(preset):
    spec = DDPMSpec.from_preset(preset)
    net = spec.build()
    groups = spec.module_groups(net)
    listed = [name for g in groups for name, _ in g.modules]
    assert len(listed) == len(set(listed)) and set(listed) == prunable_names(net)
    assert all(net.get_submodule(name) is m for g in groups for name, m in g.modules)
    assert len({g.name for g in groups}) == len(groups)

    calls = []
    for name in listed:
        net.get_submodule(name).register_forward_hook(lambda m, i, o, name=name: calls.append(name))
    with torch.no_grad():
        net(*spec.example_inputs(1))
    assert calls == listed


def test_group_names_of_tiny(tiny_spec, tiny_net):
    assert [g.name for g in tiny_spec.module_groups(tiny_net)] == [
        "time_embed", "conv_in", "down.0.blocks.0", "down.0.downsample", "down.1.blocks.0", "mid",
        "up.1.blocks.0", "up.1.blocks.1", "up.1.upsample", "up.0.blocks.0", "up.0.blocks.1", "conv_out"]


def test_cifar10_has_30_groups():
    spec = DDPMSpec.from_preset("cifar10")
    with torch.device("meta"):
        net = spec.build()
    groups = spec.module_groups(net)
    assert len(groups) == 30 and groups[0].name == "time_embed" and groups[-1].name == "conv_out"


def test_input_and_output_conv_can_be_excluded():
    spec = DDPMSpec.from_preset("tiny", prune_input_conv=False, prune_output_conv=False)
    net = spec.build()
    names = [g.name for g in spec.module_groups(net)]
    assert "conv_in" not in names and "conv_out" not in names
    listed = {name for g in spec.module_groups(net) for name, _ in g.modules}
    assert prunable_names(net) - listed == {"conv_in", "conv_out"}


def test_no_norm_layer_or_bias_is_listed(tiny_spec, tiny_net):
    for g in tiny_spec.module_groups(tiny_net):
        assert all(isinstance(m, (nn.Conv2d, nn.Linear)) for _, m in g.modules)

"""Preset sizes, forward shapes, and that pruned weights have exactly no effect."""

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils import prune

from ticketforge_ddpm import DDPMSpec, UNet
from ticketforge_ddpm.unet_blocks import num_groups, upsample_nearest2x

PARAMS = {"cifar10": 35_746_307, "mnist": 6_469_889, "quickstart": 280_177, "tiny": 176_849}


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_cifar10_matches_ho_et_al():
    net = DDPMSpec.from_preset("cifar10").build()
    assert abs(n_params(net) - 35.7e6) / 35.7e6 < 0.01
    assert n_params(net) == PARAMS["cifar10"]
    x, t = DDPMSpec.from_preset("cifar10").example_inputs(1)
    with torch.no_grad():
        assert net(x, t).shape == (1, 3, 32, 32)


@pytest.mark.parametrize("preset, size", [("mnist", 32), ("quickstart", 28), ("tiny", 32)])
def test_small_presets(preset, size):
    spec = DDPMSpec.from_preset(preset)
    net = spec.build()
    assert n_params(net) == PARAMS[preset]  # documented in the README
    x, t = spec.example_inputs(2)
    with torch.no_grad():
        assert net(x, t).shape == (2, 1, size, size)


def test_group_norm_groups():
    assert [num_groups(c) for c in (16, 32, 64, 96, 128, 384)] == [4, 8, 16, 24, 32, 32]


def test_image_size_must_divide():
    with pytest.raises(ValueError, match="divisible"):
        UNet(image_size=30, in_channels=1, ch=16, ch_mult=(1, 2, 2), num_res_blocks=1)


@pytest.mark.parametrize("module_name", [
    "conv_in", "time_embed.dense0", "down.0.blocks.0.res.conv1", "down.1.blocks.0.res.temb_proj",
    "down.1.blocks.0.res.skip", "mid.attn.q", "mid.attn.v", "up.1.blocks.0.attn.proj_out", "conv_out",
])
def test_pruned_weights_have_no_effect(tiny_net, module_name):
    net = tiny_net.eval()
    module = net.get_submodule(module_name)
    with torch.no_grad():  # non-zero weights everywhere, so that a perturbation would show
        for p in net.parameters():
            p.normal_(0, 0.05)
    mask = torch.ones_like(module.weight)
    mask.view(-1)[::2] = 0
    prune.custom_from_mask(module, "weight", mask)
    x, t = torch.randn(2, 1, 32, 32), torch.tensor([3, 700])
    with torch.no_grad():
        before = net(x, t)
        module.weight_orig.view(-1)[0] += 10.0  # a pruned entry
        assert torch.equal(net(x, t), before)
        module.weight_orig.view(-1)[1] += 10.0  # a kept entry
        assert not torch.equal(net(x, t), before)


def test_fully_pruned_output_conv_gives_its_bias(tiny_net):
    prune.custom_from_mask(tiny_net.conv_out, "weight", torch.zeros_like(tiny_net.conv_out.weight))
    with torch.no_grad():
        tiny_net.conv_out.bias.fill_(0.5)
        out = tiny_net(torch.randn(2, 1, 32, 32), torch.tensor([1, 2]))
    assert torch.equal(out, torch.full_like(out, 0.5))


def _assert_interpolates(out: torch.Tensor, x: torch.Tensor) -> None:
    """``out`` (computed from the leaf ``x``) has F.interpolate's nearest-x2 values and gradient."""
    ref = x.detach().clone().requires_grad_()
    expected = F.interpolate(ref, scale_factor=2.0, mode="nearest")
    assert torch.equal(out, expected)
    g = torch.randn_like(out)
    out.backward(g)
    expected.backward(g)
    assert torch.allclose(x.grad, ref.grad, atol=1e-6)


@pytest.mark.parametrize("compiling", [False, True])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_upsample_is_nearest_interpolation(memory_format, compiling, monkeypatch):
    """Both forms of the upsample (the broadcast that compiled graphs get, the native kernel run
    eagerly) give F.interpolate's values and gradients, in either memory layout."""
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: compiling)
    x = torch.randn(2, 3, 4, 5).to(memory_format=memory_format).requires_grad_()
    out = upsample_nearest2x(x)
    monkeypatch.undo()
    assert out.grad_fn.name().startswith("Upsample") != compiling  # the form under test ran
    _assert_interpolates(out, x)


def test_compiled_upsample_matches_eager():
    """Compiled (the broadcast form, traced by Dynamo), the upsample gives the eager values and
    gradients."""
    x = torch.randn(2, 3, 4, 5, requires_grad=True)
    _assert_interpolates(torch.compile(upsample_nearest2x, fullgraph=True)(x), x)

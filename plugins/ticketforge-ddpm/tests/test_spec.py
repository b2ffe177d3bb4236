"""DDPMSpec: the ModelSpec protocol, presets, config round trip, round artifacts."""

import dataclasses
import inspect
import json

import pytest
import torch

from ticketforge.errors import ConfigError
from ticketforge.protocols import ModelSpec, TrainingDefaults
from ticketforge_ddpm import DDPMSpec
from ticketforge_ddpm.presets import PRESETS


@pytest.mark.parametrize("preset", list(PRESETS))
def test_satisfies_model_spec(preset):
    spec = DDPMSpec.from_preset(preset)
    assert isinstance(spec, ModelSpec)
    assert spec.name == "ddpm-unet" and isinstance(spec.defaults, TrainingDefaults)
    assert json.loads(json.dumps(spec.config)) == spec.config  # recordable as JSON without change


@pytest.mark.parametrize("method", ["build", "loss", "module_groups", "sample", "example_inputs"])
def test_method_signatures_accept_the_protocols_arguments(method):
    wanted = inspect.signature(getattr(ModelSpec, method)).parameters
    got = inspect.signature(getattr(DDPMSpec, method)).parameters
    for name, param in wanted.items():
        if param.kind is param.VAR_KEYWORD:
            continue
        assert name in got and got[name].kind == param.kind, f"{method}({name})"
        assert (got[name].default is param.empty) == (param.default is param.empty), f"{method}({name}) default"


def test_defaults():
    assert DDPMSpec.from_preset().config["preset"] == "quickstart"  # what the README's command trains
    c = DDPMSpec.from_preset("cifar10").defaults
    assert (c.lr, c.warmup_steps, c.grad_clip, c.ema_decay, c.batch_size, c.dataset) == (2e-4, 5000, 1.0, 0.9999, 128, "cifar10")
    assert DDPMSpec.from_preset("mnist").defaults.dataset == "mnist"
    assert DDPMSpec.from_preset("tiny").defaults.dataset == "mnist-sample"


def test_unknown_preset_and_option():
    with pytest.raises(ConfigError, match="known presets: cifar10, mnist, quickstart, tiny"):
        DDPMSpec.from_preset("imagenet")
    with pytest.raises(ConfigError, match="unknown ddpm-unet option"):
        DDPMSpec.from_preset("tiny", chanels=8)
    with pytest.raises(ConfigError, match="divisible"):
        DDPMSpec.from_preset("tiny", image_size=33)
    with pytest.raises(ConfigError, match="data_size 28 exceeds"):
        DDPMSpec.from_preset("tiny", image_size=16)
    with pytest.raises(ConfigError, match="use T > 20 or the cosine schedule"):
        DDPMSpec.from_preset("tiny", timesteps=10)


def test_config_rebuilds_the_same_network():
    spec = DDPMSpec.from_preset("tiny", ch=16, ch_mult=(1, 2), prune_output_conv=False)
    assert spec.config["ch_mult"] == [1, 2] and spec.config["prune_output_conv"] is False
    again = DDPMSpec(json.loads(json.dumps(spec.config)))
    assert again.config == spec.config and again.defaults == spec.defaults
    torch.manual_seed(0)
    a = spec.build().state_dict()
    torch.manual_seed(0)
    b = again.build().state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ConfigError, match="unknown"):
        DDPMSpec({**spec.config, "extra": 1})


def test_configs_do_not_share_state():
    a = DDPMSpec.from_preset("tiny")
    a.config["ch_mult"].append(4)
    assert DDPMSpec.from_preset("tiny").config["ch_mult"] == [1, 2]


def test_loss_checks_channels(tiny_spec, tiny_net):
    with pytest.raises(ConfigError, match=r"takes \[B, 1, H, W\]"):
        tiny_spec.loss(tiny_net, torch.rand(2, 3, 32, 32))
    assert tiny_spec.loss(tiny_net, (torch.rand(2, 1, 28, 28), torch.tensor([1, 2]))).ndim == 0


def test_cli_style_sampling(tiny_spec, tiny_net):
    """``ticketforge sample --sampler ddpm --steps N`` passes both: ancestral over a respaced chain."""
    x = tiny_spec.sample(tiny_net, 2, generator=torch.Generator().manual_seed(0), sampler="ddpm", steps=4, eta=0.0)
    assert x.shape == (2, 1, 28, 28)


def test_example_inputs(tiny_spec, tiny_net):
    x, t = tiny_spec.example_inputs(4)
    assert x.shape == (4, 1, 32, 32) and t.tolist() == [0, 333, 666, 999]
    assert tiny_net(x, t).shape == x.shape


def test_round_artifacts(tmp_path, tiny_spec, tiny_net):
    paths = tiny_spec.round_artifacts(tiny_net, tmp_path / "round-1", torch.Generator().manual_seed(0), steps=2, n=4)
    assert [p.name for p in paths] == ["samples.png", "denoising.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)


def _ink(picture, box):
    """Dark pixels (text) in ``box`` of a white caption row."""
    import numpy as np
    return int((np.asarray(picture.convert("L").crop(box)) < 128).sum())


def test_round_pictures_are_enlarged_and_captioned_and_the_strip_names_its_timesteps(tmp_path, tiny_spec, tiny_net):
    from PIL import Image

    from ticketforge_ddpm.images import BAND
    scale = tiny_spec.artifacts.scale
    paths = tiny_spec.round_artifacts(tiny_net, tmp_path, torch.Generator().manual_seed(0), caption="round 2, 36.0% sparse",
                                      steps=2, n=4, seeds=2, frames=3)
    grid, strip = (Image.open(p) for p in paths)
    cell = (28 + 2) * scale  # a 28x28 sample and make_grid's 2-pixel padding, enlarged
    assert scale == 4 and grid.size == (2 * cell + 2 * scale, 2 * cell + 2 * scale + BAND)
    assert _ink(grid, (0, 0, grid.width, BAND)) > 0  # the caption row holds text
    assert strip.size == (3 * cell + 2 * scale, 2 * cell + 2 * scale + 2 * BAND)  # caption and timestep rows
    for column in range(3):  # every frame's column has its label above it
        assert _ink(strip, (2 * scale + column * cell, BAND, 2 * scale + column * cell + 28 * scale, 2 * BAND)) > 0


def test_artifact_samples_are_the_grid_of_round_artifacts(tmp_path):
    import numpy as np
    from PIL import Image

    from ticketforge_ddpm.images import BAND, grid_image
    spec = DDPMSpec.from_preset("quickstart")
    torch.manual_seed(0)
    net = spec.build().eval()
    spec.artifacts = dataclasses.replace(spec.artifacts, n=4, steps=3, scale=1)
    spec.round_artifacts(net, tmp_path, torch.Generator().manual_seed(3))
    again = spec.artifact_samples(net, torch.Generator().manual_seed(3))
    pixels = grid_image(again)[0].mul(255).round().to(torch.uint8).numpy()
    assert np.array_equal(np.asarray(Image.open(tmp_path / "samples.png").convert("L"))[BAND:], pixels)
    assert spec.artifacts.eta == 1.0 and PRESETS["tiny"].artifacts.eta == 0.0  # quickstart: ancestral noise

"""DDPM and DDIM samplers: variances, exactness with an oracle denoiser, network switching."""

import pytest
import torch
from torch import nn

from ticketforge.errors import ConfigError
from ticketforge_ddpm.diffusion import GaussianDiffusion, extract
from ticketforge_ddpm.samplers import ancestral_sigmas, ddim_sigmas, ddim_timesteps, sample, sample_steps
from ticketforge_ddpm.switching import TimestepSwitch, switch_at


@pytest.fixture(scope="module")
def diffusion():
    return GaussianDiffusion.from_name("linear", 1000)


class Recorder(nn.Module):
    """Predicts zero noise and records the timesteps it is called with."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))
        self.calls: list[int] = []

    def forward(self, x, t):
        self.calls.append(int(t[0]))
        return torch.zeros_like(x)


class Oracle(nn.Module):
    """The exact noise prediction for data that is always the image ``x0``."""

    def __init__(self, diffusion, x0) -> None:
        super().__init__()
        self.diffusion = diffusion
        self.register_buffer("x0", x0)
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, x, t):
        return self.diffusion.predict_eps(x, t, self.x0.expand_as(x))


def test_ddim_eta1_all_steps_is_ancestral_variance(diffusion):
    seq = ddim_timesteps(1000, 1000)
    assert seq == list(range(999, -1, -1))
    beta_tilde = diffusion.posterior_variance.sqrt()[seq]  # Ho et al.'s sigma_t^2 = beta tilde
    torch.testing.assert_close(ddim_sigmas(diffusion, seq, 1.0), beta_tilde, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ancestral_sigmas(diffusion, seq, "small"), beta_tilde, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ancestral_sigmas(diffusion, seq, "large"), diffusion.betas.sqrt()[seq])
    assert ddim_sigmas(diffusion, seq, 0.0).abs().max() == 0


class Wobbly(Recorder):
    """A fixed, non-trivial denoiser."""

    def forward(self, x, t):
        return torch.sin(3 * x + t[:, None, None, None] / 7)


@pytest.mark.parametrize("clip_x0", [True, False])
@pytest.mark.parametrize("steps", [30, 6])  # all steps, and the respaced chain
def test_ddim_eta1_is_the_ancestral_sampler(clip_x0, steps):
    diffusion = GaussianDiffusion.from_name("linear", 30)
    runs = [sample(Wobbly(), diffusion, (2, 1, 4, 4), generator=torch.Generator().manual_seed(5), clip_x0=clip_x0,
                   steps=steps, **options) for options in (dict(sampler="ddpm"), dict(sampler="ddim", eta=1.0))]
    torch.testing.assert_close(runs[0], runs[1], atol=1e-5, rtol=0)


def test_ddim_timesteps():
    assert ddim_timesteps(1000, 10) == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
    with pytest.raises(ValueError):
        ddim_timesteps(1000, 0)


@pytest.mark.parametrize("options", [dict(sampler="ddim", steps=10), dict(sampler="ddim", steps=20, eta=1.0),
                                     dict(sampler="ddpm")])
def test_oracle_denoiser_recovers_the_data(options):
    diffusion = GaussianDiffusion.from_name("linear", 100)
    x0 = torch.rand(1, 1, 8, 8) * 2 - 1
    out = sample(Oracle(diffusion, x0), diffusion, (3, 1, 8, 8), generator=torch.Generator().manual_seed(0), **options)
    torch.testing.assert_close(out, ((x0 + 1) / 2).expand(3, -1, -1, -1), atol=1e-4, rtol=0)


def test_steps_yield_noise_levels(diffusion):
    levels = [k for k, _ in sample_steps(Recorder(), diffusion, (1, 1, 4, 4), steps=5)]
    assert levels == [801, 601, 401, 201, 1, 0]
    levels = [k for k, _ in sample_steps(Recorder(), GaussianDiffusion.from_name("cosine", 10), (1, 1, 4, 4), sampler="ddpm")]
    assert levels == list(range(10, -1, -1))


@pytest.mark.parametrize("as_module", [False, True])
def test_network_switch(diffusion, as_module):
    dense, ticket = Recorder(), Recorder()
    if as_module:
        sample(switch_at(500, dense, ticket), diffusion, (1, 1, 4, 4), steps=10)
    else:
        sample(dense, diffusion, (1, 1, 4, 4), steps=10, network_schedule=[(500, ticket)])
    assert dense.calls == [900, 800, 700, 600, 500] and ticket.calls == [400, 300, 200, 100, 0]
    a, b, c = Recorder(), Recorder(), Recorder()
    sample(a, diffusion, (1, 1, 4, 4), steps=10, network_schedule=[(200, c), (700, b)])
    assert (a.calls, b.calls, c.calls) == ([900, 800, 700], [600, 500, 400, 300, 200], [100, 0])


def test_switch_module_routes_each_example():
    class Const(Recorder):
        def __init__(self, value):
            super().__init__()
            self.value = value

        def forward(self, x, t):
            super().forward(x, t)
            return torch.full_like(x, self.value)

    a, b, c = Const(1.0), Const(2.0), Const(3.0)
    mixed = TimestepSwitch(a, [(100, c), (700, b)])
    out = mixed(torch.zeros(4, 1, 2, 2), torch.tensor([999, 50, 700, 699]))
    assert out[:, 0, 0, 0].tolist() == [1.0, 3.0, 1.0, 2.0]


def test_ddpm_switch_reverse_order():
    diffusion = GaussianDiffusion.from_name("linear", 30)
    ticket, dense = Recorder(), Recorder()
    sample(ticket, diffusion, (1, 1, 4, 4), sampler="ddpm", network_schedule=[(5, dense)])
    assert ticket.calls == list(range(29, 4, -1)) and dense.calls == [4, 3, 2, 1, 0]


def test_networks_restored_to_their_modes(diffusion):
    a, b = Recorder().train(), Recorder().eval()
    sample(a, diffusion, (1, 1, 4, 4), steps=2, network_schedule=[(500, b)])
    assert a.training and not b.training


def test_spec_sample_range_crop_and_seed(tiny_spec, tiny_net):
    tiny_net.train()
    a = tiny_spec.sample(tiny_net, 3, generator=torch.Generator().manual_seed(7), steps=3, batch_size=2)
    b = tiny_spec.sample(tiny_net, 3, generator=torch.Generator().manual_seed(7), steps=3)
    assert a.shape == (3, 1, 28, 28) and a.min() >= 0 and a.max() <= 1
    torch.testing.assert_close(a, b)
    assert tiny_net.training
    with pytest.raises(ConfigError, match="steps must be in 1..1000"):
        tiny_spec.sample(tiny_net, 1, steps=1001)
    with pytest.raises(ConfigError, match="unknown sampler"):
        tiny_spec.sample(tiny_net, 1, sampler="euler")


def test_trajectory(tiny_spec, tiny_net):
    levels, frames = tiny_spec.denoising_trajectory(tiny_net, 2, frames=4, steps=6, generator=torch.Generator())
    assert levels == [831, 499, 167, 0]  # 6 DDIM steps: t = 830, 664, 498, 332, 166, 0
    assert frames.shape == (4, 2, 1, 28, 28)


def test_extract_broadcasts():
    values = torch.arange(5, dtype=torch.float64)
    out = extract(values, torch.tensor([1, 4]), torch.zeros(2, 3, 4, 4))
    assert out.shape == (2, 1, 1, 1) and out.dtype == torch.float32 and out.flatten().tolist() == [1, 4]

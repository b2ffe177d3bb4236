"""q(x_t | x_0), the posterior q(x_{t-1} | x_t, x_0) and the loss against closed forms (float64)."""

import math

import pytest
import torch

from ticketforge_ddpm.diffusion import GaussianDiffusion, beta_schedule, from_model_space, to_model_space

T = 1000


@pytest.fixture(scope="module")
def diffusion():
    return GaussianDiffusion.from_name("linear", T)


def abar(t: int) -> float:
    """prod_{s<=t} (1 - beta_s) with beta_s = 1e-4 + s (0.02 - 1e-4) / (T - 1), in plain Python."""
    return math.prod(1 - (1e-4 + s * (0.02 - 1e-4) / (T - 1)) for s in range(t + 1))


def test_linear_betas(diffusion):
    assert diffusion.betas.dtype == torch.float64
    assert diffusion.betas[0].item() == pytest.approx(1e-4) and diffusion.betas[-1].item() == pytest.approx(0.02)


@pytest.mark.parametrize("t", [0, 1, 250, 999])
def test_q_marginal(diffusion, t):
    x0 = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    tt = torch.full((3,), t)
    mean, var = diffusion.q_mean_variance(x0, tt)
    torch.testing.assert_close(mean, math.sqrt(abar(t)) * x0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(var, torch.full_like(var, 1 - abar(t)), rtol=1e-12, atol=1e-12)
    noise = torch.randn_like(x0)
    torch.testing.assert_close(diffusion.q_sample(x0, tt, noise), mean + var.sqrt() * noise)


@pytest.mark.parametrize("t", [1, 10, 500, 999])
def test_posterior_is_gaussian_conditioning(diffusion, t):
    """Bayes on x_{t-1} ~ N(sqrt(abar_{t-1}) x0, 1 - abar_{t-1}), x_t | x_{t-1} ~ N(sqrt(a_t) x_{t-1}, b_t)."""
    x0, xt = torch.randn(2, 1, 3, 3, dtype=torch.float64), torch.randn(2, 1, 3, 3, dtype=torch.float64)
    beta = 1e-4 + t * (0.02 - 1e-4) / (T - 1)
    prior_var = 1 - abar(t - 1)
    var = 1 / (1 / prior_var + (1 - beta) / beta)
    mean = var * (math.sqrt(abar(t - 1)) * x0 / prior_var + math.sqrt(1 - beta) * xt / beta)
    got_mean, got_var = diffusion.q_posterior_mean_variance(x0, xt, torch.full((2,), t))
    torch.testing.assert_close(got_mean, mean, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got_var, torch.full_like(got_var, var), rtol=1e-10, atol=1e-12)


def test_posterior_at_t0_is_x0(diffusion):
    x0, xt = torch.randn(1, 1, 2, 2, dtype=torch.float64), torch.randn(1, 1, 2, 2, dtype=torch.float64)
    mean, var = diffusion.q_posterior_mean_variance(x0, xt, torch.zeros(1, dtype=torch.long))
    torch.testing.assert_close(mean, x0)
    assert var.abs().max() == 0


def test_x0_eps_round_trip(diffusion):
    x0, eps = torch.randn(4, 1, 2, 2, dtype=torch.float64), torch.randn(4, 1, 2, 2, dtype=torch.float64)
    t = torch.tensor([0, 5, 500, 999])
    xt = diffusion.q_sample(x0, t, eps)
    torch.testing.assert_close(diffusion.predict_x0(xt, t, eps), x0)
    torch.testing.assert_close(diffusion.predict_eps(xt, t, x0), eps)


def test_cosine_schedule():
    betas = beta_schedule("cosine", 1000)
    assert betas.min() > 0 and betas.max() <= 0.999
    d = GaussianDiffusion(betas)
    assert (d.alphas_cumprod.diff() < 0).all() and d.alphas_cumprod[-1] < 1e-4
    with pytest.raises(ValueError, match="known: linear, cosine"):
        beta_schedule("quadratic")
    with pytest.raises(ValueError, match="betas up to 2.00"):
        beta_schedule("linear", 10)
    torch.testing.assert_close(beta_schedule("linear", 500)[[0, -1]], torch.tensor([2e-4, 0.04], dtype=torch.float64))


def test_model_space_padding_flip_and_crop():
    images = torch.rand(8, 1, 28, 28)
    x = to_model_space(images, 32)
    assert x.shape == (8, 1, 32, 32) and x.min() >= -1 and x.max() <= 1
    assert (x[..., :2, :] == -1).all() and (x[..., :, -2:] == -1).all()  # background 0 -> -1
    torch.testing.assert_close(from_model_space(x, 28), images)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    f1 = to_model_space(images, 28, hflip=True, generator=g1)
    torch.testing.assert_close(f1, to_model_space(images, 28, hflip=True, generator=g2))
    flipped = [(f1[i] == images[i].flip(-1) * 2 - 1).all().item() for i in range(8)]
    kept = [(f1[i] == images[i] * 2 - 1).all().item() for i in range(8)]
    assert all(a or b for a, b in zip(flipped, kept)) and any(flipped) and any(kept)
    with pytest.raises(ValueError, match="larger"):
        to_model_space(torch.rand(1, 1, 40, 40), 32)


def test_loss_uses_the_generator(tiny_spec, tiny_net):
    batch = torch.rand(4, 1, 28, 28)
    l1 = tiny_spec.loss(tiny_net.eval(), batch, torch.Generator().manual_seed(3))
    l2 = tiny_spec.loss(tiny_net, batch, torch.Generator().manual_seed(3))
    assert l1.ndim == 0 and l1.item() == l2.item()
    l1.backward()
    assert tiny_net.conv_in.weight.grad is not None


def test_schedule_tables_are_copied_to_a_device_once(diffusion):
    """A copy of a CPU table to a GPU waits for the stream: the training loss must not make one per step."""
    copies = []
    real_to = torch.Tensor.to

    def spy(self, *args, **kwargs):
        if self.device.type == "cpu" and self.dtype == torch.float64:
            copies.append(self.shape)
        return real_to(self, *args, **kwargs)

    x0 = torch.zeros(4, 1, 8, 8, device="meta")
    t = torch.zeros(4, dtype=torch.long, device="meta")
    torch.Tensor.to = spy
    try:
        for _ in range(3):
            diffusion.q_sample(x0, t, x0)
            diffusion.predict_x0(x0, t, x0)
    finally:
        torch.Tensor.to = real_to
    assert len(copies) == 2  # sqrt(abar) and sqrt(1 - abar), once each; later calls reuse the device copies

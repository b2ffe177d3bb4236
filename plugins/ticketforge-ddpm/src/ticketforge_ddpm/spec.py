"""``ddpm-unet``: the ticketforge model spec of the DDPM U-Net (network, loss, sampler, groups)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ticketforge import progress
from ticketforge.errors import ConfigError
from ticketforge.protocols import ModuleGroup, TrainingDefaults

from . import images, samplers
from .diffusion import BETA_SCHEDULES, GaussianDiffusion, to_model_space
from .groups import unet_module_groups
from .presets import DEFAULT_PRESET, DIFFUSION_KEYS, PRESETS, UNET_KEYS, ArtifactSettings
from .unet import UNet

PRUNE_KEYS = ("prune_input_conv", "prune_output_conv")
CONFIG_KEYS = ("preset", *UNET_KEYS, *DIFFUSION_KEYS, *PRUNE_KEYS)


class DDPMSpec:
    """The DDPM U-Net with its diffusion process, as a :class:`ticketforge.protocols.ModelSpec`.

    Args:
        config: every key of :data:`CONFIG_KEYS` (``from_preset`` fills them in): the U-Net's
            keyword arguments, the diffusion options (``timesteps``, ``beta_schedule``,
            ``data_size``, ``pad_value``, ``hflip``) and the pruning switches.
        defaults: training defaults; by default those of ``config["preset"]``.

    ``DDPMSpec(spec.config)`` rebuilds an equal spec from a recorded config.
    """

    name = "ddpm-unet"
    default_sampler = "ddim"  # what sample and eval use without --sampler

    def __init__(self, config: dict[str, Any], defaults: TrainingDefaults | None = None) -> None:
        missing = [k for k in CONFIG_KEYS if k not in config]
        unknown = [k for k in config if k not in CONFIG_KEYS]
        if missing or unknown:
            raise ConfigError(f"ddpm-unet config: missing {missing}, unknown {unknown}; keys are {', '.join(CONFIG_KEYS)}")
        _validate(config)
        self.config = copy.deepcopy(dict(config))
        preset = PRESETS.get(config["preset"])
        self.defaults = defaults or (preset.defaults if preset else TrainingDefaults(dataset="mnist-sample"))
        self.artifacts = preset.artifacts if preset else ArtifactSettings()
        try:
            self.diffusion = GaussianDiffusion.from_name(config["beta_schedule"], config["timesteps"])
        except ValueError as exc:
            raise ConfigError(f"ddpm-unet: {exc}") from None

    @classmethod
    def from_preset(cls, preset: str | None = None, *, prune_input_conv: bool = True,
                    prune_output_conv: bool = True, **overrides: Any) -> "DDPMSpec":
        """The spec of a named preset (``cifar10``, ``mnist``, ``quickstart`` or ``tiny``; default ``quickstart``).

        ``overrides`` replace config values (see :data:`~ticketforge_ddpm.presets.CONFIG_OPTIONS`),
        e.g. ``ch=64`` or ``timesteps=500``; None keeps the preset's value; lists such as
        ``ch_mult`` may be given as tuples."""
        name = preset or DEFAULT_PRESET
        if name not in PRESETS:
            raise ConfigError(f"unknown ddpm-unet preset {name!r}; known presets: {', '.join(PRESETS)}")
        bad = [k for k in overrides if k not in UNET_KEYS + DIFFUSION_KEYS]
        if bad:
            raise ConfigError(f"unknown ddpm-unet option(s) {', '.join(bad)}; known: {', '.join(UNET_KEYS + DIFFUSION_KEYS)}")
        p = PRESETS[name]
        overrides = {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items() if v is not None}
        config = {"preset": name, **copy.deepcopy(p.config), **overrides,
                  "prune_input_conv": bool(prune_input_conv), "prune_output_conv": bool(prune_output_conv)}
        return cls(config, p.defaults)

    # -- the network -------------------------------------------------------------------------
    def unet_kwargs(self) -> dict[str, Any]:
        """The U-Net's keyword arguments from the config."""
        return {k: self.config[k] for k in UNET_KEYS}

    def build(self) -> nn.Module:
        """A freshly initialised U-Net (the caller seeds the RNG)."""
        try:
            return UNet(**self.unet_kwargs())
        except ValueError as exc:
            raise ConfigError(f"ddpm-unet: {exc}") from None

    def module_groups(self, network: nn.Module) -> list[ModuleGroup]:
        """The U-Net's blocks in forward order (see :func:`ticketforge_ddpm.groups.unet_module_groups`)."""
        return unet_module_groups(network, prune_input_conv=self.config["prune_input_conv"],
                                  prune_output_conv=self.config["prune_output_conv"])

    @property
    def data_shape(self) -> tuple[int, int, int]:
        """``[C, H, W]`` of the training images this config is made for (``data_size``, else ``image_size``).

        The engine refuses a dataset of another shape before training: a smaller image would be padded
        to ``image_size`` and trained on, and samples cropped to ``data_size``, without any error."""
        size = self.config["data_size"] or self.config["image_size"]
        return self.config["in_channels"], size, size

    def example_inputs(self, batch_size: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        """``(x, t)`` for one forward pass: noise images and timesteps spread over [0, T)."""
        size, c = self.config["image_size"], self.config["in_channels"]
        x = torch.randn(batch_size, c, size, size, device=device)
        t = torch.linspace(0, self.config["timesteps"] - 1, batch_size, device=device).long()
        return x, t

    # -- training ----------------------------------------------------------------------------
    def loss(self, network: nn.Module, batch: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Epsilon-prediction MSE on ``batch`` (images in [0, 1], padded to the network's size and
        flipped at random when the config says so); ``generator`` draws t, noise and flips."""
        if isinstance(batch, (tuple, list)):  # (images, labels) straight from a DataLoader
            batch = batch[0]
        c = self.config["in_channels"]
        if batch.dim() != 4 or batch.shape[1] != c:
            raise ConfigError(f"ddpm-unet preset {self.config['preset']!r} takes [B, {c}, H, W] images, got "
                              f"{list(batch.shape)}: choose a preset or in_channels that fits the dataset")
        try:
            x0 = to_model_space(batch, self.config["image_size"], pad_value=self.config["pad_value"],
                                hflip=self.config["hflip"], generator=generator)
        except ValueError as exc:
            raise ConfigError(f"ddpm-unet: {exc}; raise image_size") from None
        return self.diffusion.training_loss(network, x0, generator)

    # -- sampling ----------------------------------------------------------------------------
    def _shape(self, n: int) -> tuple[int, int, int, int]:
        size = self.config["image_size"]
        return n, self.config["in_channels"], size, size

    def sample(self, network: nn.Module, n: int, *, generator: torch.Generator | None = None,
               sampler: str = "ddim", steps: int | None = None, eta: float = 0.0,
               batch_size: int | None = None, network_schedule: samplers.NetworkSchedule = (),
               clip_x0: bool = True, variance: str = "small") -> Tensor:
        """``n`` images in [0, 1] (cropped to ``data_size``), ``[n, C, h, w]``, on the network's device.

        Args:
            sampler: ``ddim`` (default; ``steps`` default 50) or ``ddpm`` (ancestral; ``steps``
                default T, fewer steps sample the respaced chain of Nichol & Dhariwal).
            eta: DDIM stochasticity (0: deterministic).
            batch_size: generate in chunks of this size (default: all at once).
            network_schedule: ``[(s, other)]`` uses ``other`` for model timesteps ``t < s``
                (see :mod:`ticketforge_ddpm.switching`; ``network`` may also be a
                :func:`~ticketforge_ddpm.switching.switch_at` module).
            clip_x0, variance: see :func:`ticketforge_ddpm.samplers.sample_steps`.
        """
        options = dict(sampler=sampler, steps=steps, eta=eta, generator=generator,
                       network_schedule=network_schedule, clip_x0=clip_x0, variance=variance)
        chunk = batch_size or n
        starts = range(0, n, chunk)
        total = len(starts) * samplers.step_count(sampler, steps, self.diffusion.timesteps)
        try:
            with progress.task(f"denoising {n} image{'' if n == 1 else 's'}", total, "step") as bar:
                out = [samplers.sample(network, self.diffusion, self._shape(min(chunk, n - i)),
                                       data_size=self.config["data_size"], on_step=bar.advance, **options)
                       for i in starts]
        except ValueError as exc:
            raise ConfigError(f"ddpm-unet sampling: {exc}") from None
        return torch.cat(out)

    def denoising_trajectory(self, network: nn.Module, n: int, *, frames: int = 8,
                             generator: torch.Generator | None = None, **options: Any) -> tuple[list[int], Tensor]:
        """x_T ... x_0 of ``n`` samples at ``frames`` steps: ``(noise levels, [frames, n, C, h, w])``.
        ``options`` as for :meth:`sample` (except ``batch_size``)."""
        return samplers.denoising_trajectory(network, self.diffusion, self._shape(n), frames=frames,
                                             data_size=self.config["data_size"], generator=generator, **options)

    def artifact_samples(self, network: nn.Module, generator: torch.Generator | None = None, *,
                         n: int | None = None) -> Tensor:
        """The samples of ``samples.png``: ``n`` (default the preset's) DDIM samples drawn as
        :meth:`round_artifacts` draws them, first from ``generator``."""
        a = self.artifacts
        return self.sample(network, a.n if n is None else n, generator=generator, steps=a.steps, eta=a.eta)

    def round_artifacts(self, network: nn.Module, directory: Path, generator: torch.Generator | None = None, *,
                        caption: str | None = None, n: int | None = None, seeds: int = 4, frames: int = 8,
                        steps: int | None = None) -> list[Path]:
        """Write ``samples.png`` (a grid of ``n`` DDIM samples) and ``denoising.png`` (x_T..x_0 for
        ``seeds`` samples, one row each, each column headed by its noise level) into ``directory``,
        both enlarged and under ``caption`` (the engine's says which round and how sparse); returns
        their paths. ``n``, ``steps``, DDIM's eta and the enlargement default to the preset's
        :class:`~ticketforge_ddpm.presets.ArtifactSettings`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        a = self.artifacts
        steps = a.steps if steps is None else steps
        grid = self.sample(network, a.n if n is None else n, generator=generator, steps=steps, eta=a.eta)
        levels, strip = self.denoising_trajectory(network, seeds, frames=frames, generator=generator, steps=steps,
                                                  eta=a.eta)
        sampler = f"DDIM {steps} steps, eta {a.eta:g}"
        head = f"{caption}: " if caption else ""
        return [images.save_grid(grid, directory / "samples.png", scale=a.scale,
                                 caption=f"{head}{grid.shape[0]} samples, {sampler}"),
                images.save_strip(strip, directory / "denoising.png", scale=a.scale,
                                  caption=f"{head}x_t from noise (left) to sample (right), {sampler}",
                                  labels=[f"t={k}" for k in levels])]

    def __repr__(self) -> str:
        return f"DDPMSpec(preset={self.config['preset']!r}, ch={self.config['ch']}, ch_mult={self.config['ch_mult']})"


def _validate(config: dict[str, Any]) -> None:
    """Refuse impossible values before any work starts."""
    size, levels = config["image_size"], len(config["ch_mult"])
    if size % 2 ** (levels - 1):
        raise ConfigError(f"ddpm-unet: image_size {size} must be divisible by 2**{levels - 1} (len(ch_mult) = {levels})")
    if config["data_size"] is not None and config["data_size"] > size:
        raise ConfigError(f"ddpm-unet: data_size {config['data_size']} exceeds image_size {size}")
    if config["beta_schedule"] not in BETA_SCHEDULES:
        raise ConfigError(f"unknown beta_schedule {config['beta_schedule']!r}; known: {', '.join(BETA_SCHEDULES)}")
    if config["timesteps"] < 2:
        raise ConfigError(f"ddpm-unet: timesteps must be at least 2, got {config['timesteps']}")

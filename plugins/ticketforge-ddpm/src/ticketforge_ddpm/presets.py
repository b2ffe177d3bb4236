"""Named model presets: the U-Net's keyword arguments, the diffusion options and training defaults.

==========  ======================  ============  ==========================================
preset      U-Net                   parameters    data
==========  ======================  ============  ==========================================
cifar10     ch 128, (1,2,2,2), 2    35.75M        32x32x3, random horizontal flips
mnist       ch 64, (1,2,2), 2       6.47M         28x28x1 padded to 32x32
quickstart  ch 16, (1,2,2), 1       0.28M         28x28x1 as it is (the default: a CPU run)
tiny        ch 16, (1,2), 1         0.18M         28x28x1 padded to 32x32 (tests)
==========  ======================  ============  ==========================================

All use T = 1000 and linear betas 1e-4..0.02 (Ho et al. 2020), and attention at 16x16 (quickstart:
at 7x7, its lowest level).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ticketforge.protocols import TrainingDefaults

CONFIG_OPTIONS: dict[str, tuple[type, str]] = {
    "image_size": (int, "network input height = width; smaller images are padded to it"),
    "in_channels": (int, "image channels (1 for MNIST, 3 for CIFAR)"),
    "ch": (int, "base channel count of the U-Net"),
    "ch_mult": (list, "channel multiplier per resolution level, e.g. [1, 2, 2, 2]"),
    "num_res_blocks": (int, "ResBlocks per level (the up path has one more)"),
    "attn_resolutions": (list, "resolutions with self-attention, e.g. [16]"),
    "dropout": (float, "dropout rate in the ResBlocks"),
    "timesteps": (int, "diffusion steps T"),
    "beta_schedule": (str, "linear or cosine"),
    "data_size": (int, "the dataset's image size; samples are cropped back to it"),
    "pad_value": (float, "padding (background) value in [0, 1]"),
    "hflip": (bool, "random horizontal flips in the loss"),
}
"""Every config key a preset sets, with its type and meaning (each may be overridden)."""
UNET_KEYS = ("image_size", "in_channels", "ch", "ch_mult", "num_res_blocks", "attn_resolutions", "dropout")
DIFFUSION_KEYS = ("timesteps", "beta_schedule", "data_size", "pad_value", "hflip")


@dataclass(frozen=True)
class ArtifactSettings:
    """How a round's pictures are drawn (``spec.round_artifacts``): not part of a run's identity.

    Attributes:
        n: samples in ``samples.png``.
        steps: DDIM steps of those samples and of the denoising strip.
        eta: DDIM stochasticity; 1 (ancestral noise) cleans up the grey, speckled backgrounds that a
            briefly trained network leaves with eta 0.
        scale: nearest-neighbour enlargement of both pictures.
    """

    n: int = 64
    steps: int = 50
    eta: float = 0.0
    scale: int = 4


@dataclass(frozen=True)
class Preset:
    """A named configuration: ``config`` (U-Net kwargs + diffusion options) and training defaults."""

    name: str
    config: dict[str, Any]
    defaults: TrainingDefaults
    summary: str
    artifacts: ArtifactSettings = ArtifactSettings()


def _config(*, image_size: int, in_channels: int, ch: int, ch_mult: list[int], num_res_blocks: int,
            attn_resolutions: list[int], dropout: float, data_size: int | None = None,
            hflip: bool = False) -> dict[str, Any]:
    return dict(image_size=image_size, in_channels=in_channels, ch=ch, ch_mult=ch_mult,
                num_res_blocks=num_res_blocks, attn_resolutions=attn_resolutions, dropout=dropout,
                timesteps=1000, beta_schedule="linear", data_size=data_size, pad_value=0.0, hflip=hflip)


PRESETS: dict[str, Preset] = {
    p.name: p for p in (
        Preset(
            "cifar10",
            _config(image_size=32, in_channels=3, ch=128, ch_mult=[1, 2, 2, 2], num_res_blocks=2,
                    attn_resolutions=[16], dropout=0.1, hflip=True),
            TrainingDefaults(batch_size=128, lr=2e-4, warmup_steps=5000, grad_clip=1.0, ema_decay=0.9999,
                             steps_per_round=800_000, rounds=25, dataset="cifar10"),
            "Ho et al.'s CIFAR-10 U-Net: 35.7M parameters, 6.1 GMACs per image",
        ),
        Preset(
            "mnist",
            _config(image_size=32, in_channels=1, ch=64, ch_mult=[1, 2, 2], num_res_blocks=2,
                    attn_resolutions=[16], dropout=0.1, data_size=28),
            TrainingDefaults(batch_size=128, lr=2e-4, warmup_steps=500, grad_clip=1.0, ema_decay=0.999,
                             steps_per_round=20_000, rounds=14, dataset="mnist"),
            "a 6.5M-parameter U-Net for MNIST digits (28x28 padded to 32x32)",
        ),
        Preset(
            # Sized for a CPU: the whole default command (3 trainings, their pictures) in minutes on one
            # core, and more images per second than tiny (no padding, no 16x16 attention; see
            # docs/performance.md "The quickstart preset").
            "quickstart",
            _config(image_size=28, in_channels=1, ch=16, ch_mult=[1, 2, 2], num_res_blocks=1,
                    attn_resolutions=[7], dropout=0.0),
            TrainingDefaults(batch_size=32, lr=2e-3, warmup_steps=20, grad_clip=1.0, ema_decay=0.999,
                             steps_per_round=350, rounds=2, dataset="mnist-sample"),
            "a 0.28M-parameter U-Net on 28x28 digits for the default run on a CPU",
            ArtifactSettings(eta=1.0),
        ),
        Preset(
            "tiny",
            _config(image_size=32, in_channels=1, ch=16, ch_mult=[1, 2], num_res_blocks=1,
                    attn_resolutions=[16], dropout=0.0, data_size=28),
            TrainingDefaults(batch_size=32, lr=1e-3, warmup_steps=20, grad_clip=1.0, ema_decay=0.99,
                             steps_per_round=100, rounds=3, dataset="mnist-sample"),
            "a 0.18M-parameter U-Net for tests (a round takes seconds on a CPU)",
        ),
    )
}
DEFAULT_PRESET = "quickstart"

"""ticketforge-ddpm: the DDPM U-Net (``ddpm-unet``), its diffusion loss and samplers, and image
datasets (``mnist``, ``mnist-sample``, ``cifar10``, ``cifar100``, ``imagefolder``) for ticketforge."""

from .diffusion import GaussianDiffusion, beta_schedule
from .presets import PRESETS
from .spec import DDPMSpec
from .switching import TimestepSwitch, switch_at
from .unet import UNet

__all__ = ["DDPMSpec", "GaussianDiffusion", "PRESETS", "UNet", "TimestepSwitch", "beta_schedule", "switch_at"]
__version__ = "0.1.0"

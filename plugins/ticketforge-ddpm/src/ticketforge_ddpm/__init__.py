"""ticketforge-ddpm: the DDPM U-Net (``ddpm-unet``), its diffusion loss and samplers, and image
datasets (``mnist``, ``mnist-sample``, ``cifar10``, ``cifar100``, ``imagefolder``) for ticketforge.

Names are imported on first use (PEP 562): the entry points (``ticketforge_ddpm.plugin``) import this
package, and registering the plugin must not wait for torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ticketforge.lazy import lazy_attributes

if TYPE_CHECKING:
    from .diffusion import GaussianDiffusion, beta_schedule
    from .presets import PRESETS
    from .spec import DDPMSpec
    from .switching import TimestepSwitch, switch_at
    from .unet import UNet

_LAZY = {"DDPMSpec": ".spec", "GaussianDiffusion": ".diffusion", "PRESETS": ".presets", "UNet": ".unet",
         "TimestepSwitch": ".switching", "beta_schedule": ".diffusion", "switch_at": ".switching"}

__all__ = ["DDPMSpec", "GaussianDiffusion", "PRESETS", "UNet", "TimestepSwitch", "beta_schedule", "switch_at"]
__version__ = "0.1.0"


__getattr__ = lazy_attributes(__name__, _LAZY)

"""pluggy registrations: the ``ddpm-unet`` model and the image datasets.

Registering imports no torch: the factories are :class:`~ticketforge.records.LazyFactory` names of
``spec.py`` and ``datasets.py``, imported when a component is built.
"""

from __future__ import annotations

from ticketforge.hookspecs import hookimpl
from ticketforge.records import ComponentRecord, LazyFactory, Option

from .presets import CONFIG_OPTIONS, DEFAULT_PRESET, PRESETS

DATASETS: dict[str, tuple[str, str]] = {  # name: (factory in datasets.py, one-line summary)
    "mnist": ("mnist", "MNIST digits, 28x28 grayscale, from the IDX files (gzipped or not)"),
    "mnist-sample": ("mnist_sample", "the first 9,000 MNIST training digits, embedded (no files needed)"),
    "cifar10": ("cifar10", "CIFAR-10, 32x32 RGB: torchvision's files or an image-folder copy"),
    "cifar100": ("cifar100", "CIFAR-100, 32x32 RGB: torchvision's files or an image-folder copy"),
    "imagefolder": ("imagefolder", "images in <class>/<image> files, from a folder or a .tar.gz"),
}


@hookimpl
def ticketforge_models() -> list[ComponentRecord]:
    return [ComponentRecord(
        "ddpm-unet", LazyFactory(f"{__package__}.spec:DDPMSpec.from_preset"),
        "the DDPM U-Net of Ho et al. 2020 with DDPM/DDIM samplers; presets " + ", ".join(PRESETS),
        options=(
            Option("preset", str, DEFAULT_PRESET, "one of " + ", ".join(PRESETS)),
            Option("prune_input_conv", bool, True, "prune the first conv (its own group conv_in)"),
            Option("prune_output_conv", bool, True, "prune the last conv (its own group conv_out)"),
            *(Option(name, type_, None, f"{help_} [default: the preset's]")
              for name, (type_, help_) in CONFIG_OPTIONS.items()),
        ),
    )]


IMAGEFOLDER_OPTIONS = (
    Option("root", str, None, "a folder or .tar.gz of <class>/<image> files"),
    Option("download", bool, False, "unused (nothing to download)"),
    Option("train", bool, True, "the train/ split of a folder that has train/ and test/"),
    Option("mode", str, "RGB", "PIL mode the images are converted to (RGB, L)"),
    Option("size", int, None, "resize and center-crop to size x size"),
)


@hookimpl
def ticketforge_datasets() -> list[ComponentRecord]:
    return [ComponentRecord(name, LazyFactory(f"{__package__}.datasets:{factory}"), summary,
                            options=IMAGEFOLDER_OPTIONS if name == "imagefolder" else ())
            for name, (factory, summary) in DATASETS.items()]

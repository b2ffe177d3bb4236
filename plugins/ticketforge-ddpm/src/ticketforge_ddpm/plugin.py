"""pluggy registrations: the ``ddpm-unet`` model and the image datasets."""

from __future__ import annotations

from ticketforge.hookspecs import hookimpl
from ticketforge.records import DatasetRecord, ModelRecord, Option

from .datasets import DATASETS
from .presets import CONFIG_OPTIONS, DEFAULT_PRESET, PRESETS
from .spec import DDPMSpec


@hookimpl
def ticketforge_models() -> list[ModelRecord]:
    return [ModelRecord(
        "ddpm-unet", DDPMSpec.from_preset,
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
def ticketforge_datasets() -> list[DatasetRecord]:
    return [DatasetRecord(name, factory, summary, options=IMAGEFOLDER_OPTIONS if name == "imagefolder" else ())
            for name, (factory, summary) in DATASETS.items()]

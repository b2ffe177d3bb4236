"""The FID Inception network of pytorch-fid, loaded from a local weights file (never downloaded).

pytorch-fid (an optional extra: ``pip install 'ticketforge-ddpm[fid]'``) defines the TF-compatible
InceptionV3 that FID is defined on, but its constructor downloads the weights. We build the same
network with its own blocks and load ``pt_inception-2015-12-05-6726825d.pth`` from disk instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import torch
from torch import Tensor, nn

from ticketforge.errors import UsageError

WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{WEIGHTS_NAME}"
ENV_VAR = "TICKETFORGE_INCEPTION_WEIGHTS"
DIMS = (64, 192, 768, 2048)
"""Feature sizes pytorch-fid offers; 2048 (pool3) is the one FID is defined on."""


def weights_path(option: str | Path | None) -> Path:
    """The weights file from the option or ``$TICKETFORGE_INCEPTION_WEIGHTS``; a usage error otherwise."""
    path = option or os.environ.get(ENV_VAR)
    if not path:
        raise UsageError(f"FID needs the Inception weights {WEIGHTS_NAME} as a local file: download it from "
                         f"{WEIGHTS_URL} and pass the option inception_weights=PATH or set {ENV_VAR} "
                         f"(offline alternative: --evaluator fd-lenet or fd-resnet)")
    if not Path(path).is_file():
        raise UsageError(f"Inception weights file {path} does not exist")
    return Path(path)


def _pytorch_fid():
    try:
        from pytorch_fid import inception
    except ImportError:
        raise UsageError("FID needs the optional package pytorch-fid: pip install 'ticketforge-ddpm[fid]'") from None
    return inception


def fid_inception_v3(state_dict: dict[str, Tensor] | None) -> nn.Module:
    """pytorch-fid's ``fid_inception_v3`` with ``state_dict`` loaded (random weights when None)."""
    pfi = _pytorch_fid()
    net = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    for name, block in [("Mixed_5b", pfi.FIDInceptionA(192, pool_features=32)),
                        ("Mixed_5c", pfi.FIDInceptionA(256, pool_features=64)),
                        ("Mixed_5d", pfi.FIDInceptionA(288, pool_features=64)),
                        ("Mixed_6b", pfi.FIDInceptionC(768, channels_7x7=128)),
                        ("Mixed_6c", pfi.FIDInceptionC(768, channels_7x7=160)),
                        ("Mixed_6d", pfi.FIDInceptionC(768, channels_7x7=160)),
                        ("Mixed_6e", pfi.FIDInceptionC(768, channels_7x7=192)),
                        ("Mixed_7b", pfi.FIDInceptionE_1(1280)),
                        ("Mixed_7c", pfi.FIDInceptionE_2(2048))]:
        setattr(net, name, block)
    if state_dict is not None:
        net.load_state_dict(state_dict)
    return net


def load_inception(weights: Path | None, dims: int = 2048) -> nn.Module:
    """pytorch-fid's ``InceptionV3`` returning the ``dims`` features, in eval mode.

    ``weights=None`` gives random weights: for testing the pipeline only, never for a score.
    """
    if dims not in DIMS:
        raise UsageError(f"Inception feature size must be one of {DIMS}, not {dims}")
    pfi = _pytorch_fid()
    state = None if weights is None else torch.load(weights, map_location="cpu", weights_only=True)
    body = fid_inception_v3(state)
    # InceptionV3.__init__ calls fid_inception_v3(), which downloads: hand it ours instead.
    with mock.patch.object(pfi, "fid_inception_v3", lambda: body):
        model = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[dims]], resize_input=True, normalize_input=True)
    return model.eval()


@torch.no_grad()
def inception_features(model: nn.Module, images: Tensor) -> Tensor:
    """Features ``[n, dims]`` of uint8 (or [0, 1] float) images; grayscale is repeated to RGB.

    As pytorch-fid: bilinear resize to 299x299 and scaling to [-1, 1] happen inside the model, and
    spatial feature maps are average-pooled to 1x1.
    """
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    out = model(x)[0]
    if out.shape[2:] != (1, 1):
        out = torch.nn.functional.adaptive_avg_pool2d(out, (1, 1))
    return out.flatten(1)


__all__ = ["DIMS", "ENV_VAR", "WEIGHTS_NAME", "WEIGHTS_URL", "fid_inception_v3", "inception_features",
           "load_inception", "weights_path"]

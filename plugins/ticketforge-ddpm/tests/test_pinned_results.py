"""Pinned results: fixed CPU runs of the tiny DDPM U-Net give these masks and losses bit for bit, and
these weights and EMA weights to within float32 rounding.

A refactor of the engine, the settings or the training step must leave them unchanged; a change that
is meant to change results re-pins them (``python plugins/ticketforge-ddpm/tests/test_pinned_results.py``
prints the new values) and says why in its commit. The figures depend on torch's CPU kernels, so they
are pinned for one torch version and one instruction set; elsewhere the test is skipped, not failed.
Within that instruction set MKL still picks its kernels by CPU model (AMX or not), which moves the
weights' last bits but not the masks or any logged float32 loss: so weights are pinned by two float64
sums (of |w| and w^2) to 1e-8 relative: the kernel paths move them by about 1e-10 (MKL_CBWR=AVX2 or
COMPATIBLE against the default), a skipped update or a wrong EMA decay by far more.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from ticketforge import Engine, RunConfig
from ticketforge.engine.branch import branch
from ticketforge.store import RunStore

PINNED_TORCH = "2.14.1"


def _cpu_kind() -> str:
    return str(torch.backends.cpu.get_cpu_capability())


PINNED_CPU = "AVX512"

CONFIGS: dict[str, dict[str, Any]] = {
    # The preset's defaults (Adam, warm-up, EMA, clipping), the incremental schedule, tau rewind, kept points.
    "preset": dict(schedule="incremental", rounds=2, steps_per_round=6, keep_rewind_points=[0.0, 0.5]),
    # Every training setting given, the global schedule, rewind to init.
    "given": dict(schedule="global", p=35.0, rounds=1, steps_per_round=5, rewind="init", batch_size=8, lr=1e-3,
                  warmup_steps=2, grad_clip=0.5, ema_decay=0.9, weight_decay=0.01, seed=3),
}


def _sums(store: RunStore, name: str) -> list[float]:
    tensors = [t.double() for t in store.read_tensors(name).values()]
    return [sum(float(t.abs().sum()) for t in tensors), sum(float(t.square().sum()) for t in tensors)]


def _losses(folder: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (folder / "train_log.jsonl").read_text().splitlines()
            if '"loss"' in line]


def observe(name: str, root: Path) -> dict[str, Any]:
    """What a fixed run writes, reduced to digests and exact floats."""
    config = RunConfig(model="ddpm-unet", preset="tiny", device="cpu", out=str(root / name), log_every=1,
                       checkpoint_every=4, artifacts=False, **CONFIGS[name])
    records = Engine(config).run(progress="none")
    store = RunStore(root / name)
    seen: dict[str, Any] = {"masks": [r["mask_sha256"][:16] for r in records],
                            "loss": [r["metrics"]["loss"] for r in records],
                            "log": _losses(root / name)}
    for r in records:
        for file in ("weights", "ema"):
            seen[f"r{r['round']}.{file}"] = _sums(store, f"rounds/{r['round']:04d}/{file}.safetensors")
    if name == "preset":
        ticket = branch(root / name, 1, masks="ticket", start="tau", rewind_fraction=0.0, steps=4, progress="none")
        random = branch(root / name, 2, masks="random", start="reinit", steps=4, progress="none")
        seen["branches"] = [[b["mask_sha256"][:16], b["metrics"]["loss"]] for b in (ticket, random)]
    return seen


PINNED: dict[str, dict[str, Any]] = {'given': {'masks': ['9283349271e3e9d1', '947deb8519b4bfd8'],
           'loss': [0.8623160123825073, 0.8953497409820557],
           'log': [1.036065697669983,
                   1.0207452774047852,
                   0.9553507566452026,
                   0.9256704449653625,
                   0.8623160123825073,
                   1.008002519607544,
                   0.9798420667648315,
                   0.9720441699028015,
                   0.9101390838623047,
                   0.8953497409820557],
           'r0.weights': [9687.189608416922, 1828.212708862725],
           'r0.ema': [9678.895907457065, 1828.2843229139785],
           'r1.weights': [9606.04164716843, 1827.7700519662214],
           'r1.ema': [9606.64573111199, 1827.9556845861734]},
 'preset': {'masks': ['9283349271e3e9d1', '49df9d0c7d08b942', 'd52c840668b06b93'],
            'loss': [0.9751304388046265, 0.9738404750823975, 0.9906097054481506],
            'log': [0.989719033241272,
                    1.0060515403747559,
                    0.9891083836555481,
                    0.98581862449646,
                    0.982062578201294,
                    0.9751304388046265,
                    1.0176265239715576,
                    1.0042357444763184,
                    0.9943721890449524,
                    1.0039888620376587,
                    0.9880924224853516,
                    0.9738404750823975,
                    0.9811768531799316,
                    1.0027774572372437,
                    0.9789332747459412,
                    0.9938005208969116,
                    0.9924361705780029,
                    0.9906097054481506],
            'r0.weights': [9650.989147532653, 1826.5625183082816],
            'r0.ema': [9644.074039735022, 1826.4957513375532],
            'r1.weights': [9558.181195210165, 1825.0907923634204],
            'r1.ema': [9555.24829525008, 1825.0154443499107],
            'r2.weights': [9173.514157821088, 1812.3991079141404],
            'r2.ema': [9173.126309432455, 1812.3978363572473],
            'branches': [['49df9d0c7d08b942', 1.005221962928772], ['f87ab7d700f3819d', 0.9946835041046143]]}}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_fixed_cpu_runs_are_bit_identical_to_the_pinned_ones(name, tmp_path):
    if torch.__version__.split("+")[0] != PINNED_TORCH or _cpu_kind() != PINNED_CPU:
        pytest.skip(f"pinned on torch {PINNED_TORCH}, {PINNED_CPU}; this is {torch.__version__}, {_cpu_kind()}")
    seen, pinned = observe(name, tmp_path), PINNED[name]
    assert seen.keys() == pinned.keys()
    for key in pinned:
        if key.endswith(("weights", "ema")):
            assert seen[key] == pytest.approx(pinned[key], rel=1e-8), key
        else:
            assert seen[key] == pinned[key], key


if __name__ == "__main__":  # print the values to pin
    import tempfile
    torch.set_num_threads(1)
    print(torch.__version__, _cpu_kind(), file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps({name: observe(name, Path(tmp)) for name in sorted(CONFIGS)}, indent=1))

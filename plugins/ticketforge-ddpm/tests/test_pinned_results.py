"""Pinned results: fixed CPU runs of the tiny DDPM U-Net give these masks, weights and losses, bit for bit.

A refactor of the engine, the settings or the training step must leave them unchanged; a change that
is meant to change results re-pins them (``python plugins/ticketforge-ddpm/tests/test_pinned_results.py``
prints the new values) and says why in its commit. The figures depend on torch's CPU kernels, so they
are pinned for one torch version and one instruction set; elsewhere the test is skipped, not failed.
"""

from __future__ import annotations

import hashlib
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


def _sha(store: RunStore, name: str) -> str:
    tensors = store.read_tensors(name)
    digest = hashlib.sha256()
    for key in sorted(tensors):
        digest.update(key.encode())
        digest.update(tensors[key].contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


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
            seen[f"r{r['round']}.{file}"] = _sha(store, f"rounds/{r['round']:04d}/{file}.safetensors")
    if name == "preset":
        ticket = branch(root / name, 1, masks="ticket", start="tau", rewind_fraction=0.0, steps=4, progress="none")
        random = branch(root / name, 2, masks="random", start="reinit", steps=4, progress="none")
        seen["branches"] = [[b["mask_sha256"][:16], b["metrics"]["loss"]] for b in (ticket, random)]
    return seen


PINNED: dict[str, dict[str, Any]] = {
    'given': {
        'masks': ['9283349271e3e9d1', '947deb8519b4bfd8'],
        'loss': [0.8623160123825073, 0.8953497409820557],
        'log': [
            1.036065697669983, 1.0207452774047852, 0.9553507566452026, 0.9256704449653625, 0.8623160123825073,
            1.008002519607544, 0.9798420667648315, 0.9720441699028015, 0.9101390838623047, 0.8953497409820557,
        ],
        'r0.weights': '18c25bb09bb00c9c',
        'r0.ema': '35deeca2e9c381fa',
        'r1.weights': 'e359d0e7dd4568cf',
        'r1.ema': 'bd6d2620fcdc044e',
    },
    'preset': {
        'masks': ['9283349271e3e9d1', '49df9d0c7d08b942', 'd52c840668b06b93'],
        'loss': [0.9751304388046265, 0.9738404750823975, 0.9906097054481506],
        'log': [
            0.989719033241272, 1.0060515403747559, 0.9891083836555481, 0.98581862449646, 0.982062578201294,
            0.9751304388046265, 1.0176265239715576, 1.0042357444763184, 0.9943721890449524, 1.0039888620376587,
            0.9880924224853516, 0.9738404750823975, 0.9811768531799316, 1.0027774572372437, 0.9789332747459412,
            0.9938005208969116, 0.9924361705780029, 0.9906097054481506,
        ],
        'r0.weights': '8a8137101ac0697e',
        'r0.ema': 'c728a4c3a59f2df9',
        'r1.weights': '50a34190fd6773a0',
        'r1.ema': '926403a211befcb5',
        'r2.weights': '301c46b4162ddd68',
        'r2.ema': 'aa3a211d224192a9',
        'branches': [['49df9d0c7d08b942', 1.005221962928772], ['f87ab7d700f3819d', 0.9946835041046143]],
    },
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_fixed_cpu_runs_are_bit_identical_to_the_pinned_ones(name, tmp_path):
    if torch.__version__.split("+")[0] != PINNED_TORCH or _cpu_kind() != PINNED_CPU:
        pytest.skip(f"pinned on torch {PINNED_TORCH}, {PINNED_CPU}; this is {torch.__version__}, {_cpu_kind()}")
    assert observe(name, tmp_path) == PINNED[name]


if __name__ == "__main__":  # print the values to pin
    import tempfile
    torch.set_num_threads(1)
    print(torch.__version__, _cpu_kind(), file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps({name: observe(name, Path(tmp)) for name in sorted(CONFIGS)}, indent=1))

#!/usr/bin/env bash
# Issue 7's measurement: throughput of a dense round on 1 GPU against 2 (DDP under torchrun), from
# the engine's own train_log.jsonl. Weak scaling keeps 128 images per GPU (global batch 128 on 1 GPU,
# 256 on 2); strong scaling keeps the global batch at 128 (64 per GPU).
# Usage: bash benchmarks/ddp_scaling.sh OUTDIR [ticketforge run flags: --preset, --dataset, --compile ...]
set -u
out=$1; shift
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
common=(--rounds 0 --steps-per-round 600 --log-every 100 --checkpoint-every 100000 --no-artifacts --quiet --fresh "$@")
CUDA_VISIBLE_DEVICES=0 python3 -m ticketforge run "${common[@]}" --batch-size 128 --out "$out/1gpu-b128"
python3 -m torch.distributed.run --standalone --nproc-per-node 2 -m ticketforge run "${common[@]}" --batch-size 256 --out "$out/2gpu-b256"
python3 -m torch.distributed.run --standalone --nproc-per-node 2 -m ticketforge run "${common[@]}" --batch-size 128 --out "$out/2gpu-b128"
python3 - "$out" <<'PY'
import json, statistics, sys
from pathlib import Path
rates = {}
for name in ("1gpu-b128", "2gpu-b256", "2gpu-b128"):
    log = Path(sys.argv[1], name, "train_log.jsonl")
    if not log.exists():
        print(f"{name}: no log (the run failed)"); continue
    windows = [json.loads(line) for line in log.read_text().splitlines()]
    rates[name] = statistics.median(w["steps_per_s"] for w in windows[2:])  # skip warm-up/compile windows
    batch = 256 if name.endswith("256") else 128
    print(f"{name}: {rates[name]:.2f} steps/s, {rates[name] * batch:.0f} images/s")
one = rates.get("1gpu-b128")
if one and "2gpu-b256" in rates:
    print(f"weak scaling (128 per GPU): {rates['2gpu-b256'] * 256 / (one * 128):.2f}x images/s, "
          f"efficiency {rates['2gpu-b256'] * 256 / (2 * one * 128):.0%}")
if one and "2gpu-b128" in rates:
    print(f"strong scaling (global 128): {rates['2gpu-b128'] / one:.2f}x steps/s, "
          f"efficiency {rates['2gpu-b128'] / (2 * one):.0%}")
PY

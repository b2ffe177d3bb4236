"""Training speed on a CPU per ``--threads`` count, and whether the results depend on it.

For each preset and thread count, one process runs the product's own command::

    ticketforge run --model ddpm-unet --preset P --rounds R --steps-per-round S --device cpu \\
        --no-artifacts --quiet --threads T --out OUT/P-tT

and the table gives each round's steps per second (the engine's own ``steps_per_s``), the load
average when it started, and whether the masks, losses and trained weights equal those of the first
thread count (bit for bit). ``--busy N`` keeps N extra processes spinning meanwhile, for a machine
whose other cores are taken by other work. One JSON object goes to ``OUT/cpu_threads.json``.

    python benchmarks/cpu_threads.py OUT --presets quickstart,tiny --threads 1,2 --steps 60 --rounds 1
    python benchmarks/cpu_threads.py OUT --presets quickstart --threads 1,2 --busy 2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def _spin() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def run_once(out: Path, preset: str, threads: int, steps: int, rounds: int) -> dict[str, Any]:
    """One training run in its own process; its per-round speed and what it computed."""
    folder = out / f"{preset}-t{threads}"
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # --threads alone decides
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ticketforge", "run", "--model", "ddpm-unet", "--preset", preset,
                    "--rounds", str(rounds), "--steps-per-round", str(steps), "--log-every", str(steps),
                    "--device", "cpu", "--no-artifacts", "--quiet", "--threads", str(threads), "--out", str(folder),
                    "--fresh"], env=env, check=True, capture_output=True)
    seconds = time.perf_counter() - t0
    records = [json.loads(p.read_text()) for p in sorted((folder / "rounds").glob("*/record.json"))]
    weights = [hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((folder / "rounds").glob("*/weights.safetensors"))]
    return {"preset": preset, "threads": threads, "load_at_start": round(load, 2), "seconds": round(seconds, 1),
            "steps_per_s": [round(r["metrics"]["steps_per_s"], 3) for r in records],
            "recorded_threads": [r["metrics"].get("threads") for r in records],
            "losses": [r["metrics"]["loss"] for r in records], "masks": [r["mask_sha256"] for r in records],
            "weights": weights}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--presets", default="quickstart,tiny")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--busy", type=int, default=0, help="extra spinning processes while measuring")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip() or None
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "") if Path("/proc/cpuinfo").exists() else platform.processor()
    doc: dict[str, Any] = {"args": vars(args), "commit": commit, "cpu": cpu, "cores": os.cpu_count(), "rows": []}
    spinners = [_spin() for _ in range(args.busy)]
    try:
        for preset in args.presets.split(","):
            first = None
            for threads in (int(t) for t in args.threads.split(",")):
                row = run_once(out, preset, threads, args.steps, args.rounds)
                first = first or row
                row["same_as_first"] = {k: row[k] == first[k] for k in ("masks", "losses", "weights")}
                doc["rows"].append(row)
                print(f"{preset:10s} threads {threads}: {row['steps_per_s']} steps/s (load {row['load_at_start']}); "
                      f"same masks/losses/weights as threads {first['threads']}: "
                      f"{'/'.join(str(v) for v in row['same_as_first'].values())}", flush=True)
    finally:
        for p in spinners:
            p.kill()
    (out / "cpu_threads.json").write_text(json.dumps(doc, indent=1))
    return doc


if __name__ == "__main__":
    main()

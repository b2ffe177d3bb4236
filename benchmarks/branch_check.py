"""Lottery branches on the training device: do they agree with the rounds, and what do they cost?

One process, the product's own API: a short run (``--rounds`` prunings of ``--steps`` steps, rewind
points kept), then the branches of its last round (``ticket`` from theta_tau, which must repeat the
round; ``random`` masks; ``reinit``; ``init``; the kept point at 0.2; dense), each timed, then every
round and branch scored in one process (``evaluate_items``: one featurizer, one compiled denoiser).
Writes ``branch_check.json`` (with the commit it ran at). A ``ticket``+``tau`` branch repeats its
round bit for bit on a CPU; on a GPU nothing guarantees that (cuDNN may pick non-deterministic
kernels), so the JSON gives the gap relative to how far training moved the weights, and both losses.

    python benchmarks/branch_check.py OUT --preset mnist --dataset mnist --data-root .data/mnist \
        --steps 600 --rounds 2 --compile --precision bf16 --samples 10000
    python benchmarks/branch_check.py OUT --preset tiny --steps 20 --rounds 1 --samples 64   # CPU smoke
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

from ticketforge import Engine, RunConfig, branch, list_branches
from ticketforge.evaluation import EvalItem, evaluate_items
from ticketforge.store import RunStore
from ticketforge.store.run_store import round_dir

BRANCHES = [("ticket", "tau", None), ("random", "tau", None), ("ticket", "reinit", None),
            ("ticket", "init", None), ("ticket", "tau", 0.2), ("none", "tau", None)]


def weight_gap(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], start: dict[str, torch.Tensor]) -> dict[str, float]:
    """How far weights ``a`` lie from ``b``, against how far ``a`` moved from ``start``."""
    keys = [k for k in a if a[k].is_floating_point()]
    diff = torch.sqrt(sum(((a[k].double() - b[k].double()) ** 2).sum() for k in keys))
    moved = torch.sqrt(sum(((a[k].double() - start[k].double()) ** 2).sum() for k in keys))
    max_abs = max(float((a[k] - b[k]).abs().max()) for k in keys)
    return {"norm_gap": float(diff), "norm_moved": float(moved), "relative_gap": float(diff / moved), "max_abs": max_abs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--dataset", default=None)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--sample-steps", type=int, default=50)
    ap.add_argument("--evaluator", default="fd-lenet")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip() or None
    doc: dict[str, Any] = {"args": vars(args), "commit": commit, "torch": torch.__version__,
                           "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}

    def save() -> None:
        (out / "branch_check.json").write_text(json.dumps(doc, indent=1, default=str))

    config = RunConfig(preset=args.preset, dataset=args.dataset, data_root=args.data_root, rounds=args.rounds,
                       steps_per_round=args.steps, batch_size=args.batch_size, compile=args.compile,
                       precision=args.precision, warmup_steps=min(100, args.steps // 10), seed=0,
                       keep_rewind_points=[0.0, 0.05, 0.2], out=str(out / "run"), artifacts=False,
                       log_every=max(1, args.steps // 6), checkpoint_every=args.steps)
    t0 = time.perf_counter()
    records = Engine(config).run()
    doc["run"] = {"seconds": time.perf_counter() - t0, "seed": 0,
                  "batch_size": RunStore(out / "run").read_config()["batch_size"],
                  "rounds": [{"round": r["round"], "sparsity": r["sparsity"], "loss": r["metrics"]["loss"],
                              "seconds": r["metrics"]["seconds"], "steps_per_s": r["metrics"]["steps_per_s"]}
                             for r in records]}
    save()
    run, k = out / "run", records[-1]["round"]
    doc["branches"] = []
    for masks, start, fraction in BRANCHES:
        t0 = time.perf_counter()
        record = branch(run, k, masks=masks, start=start, rewind_fraction=fraction)
        doc["branches"].append({"masks": masks, "start": start, "rewind_fraction": fraction,
                                "name": record["branch"]["name"], "sparsity": record["sparsity"],
                                "loss": record["metrics"]["loss"], "seconds": time.perf_counter() - t0})
        save()
    store = RunStore(run)
    same = next(b for b in list_branches(run) if b.name == doc["branches"][0]["name"])
    doc["ticket_tau_vs_round"] = {
        "round_loss": records[-1]["metrics"]["loss"], "branch_loss": doc["branches"][0]["loss"],
        "masks_equal": same.record["mask_sha256"] == records[-1]["mask_sha256"],
        **weight_gap(RunStore(same.path).read_tensors(f"{round_dir(0)}/weights.safetensors"),
                     store.read_tensors(f"{round_dir(k)}/weights.safetensors"),
                     store.read_tensors("rewind.safetensors"))}
    save()
    items = [EvalItem(str(run), r["round"]) for r in records] + \
            [EvalItem(str(b.path), 0, b.name) for b in list_branches(run) if b.finished]
    kwargs = dict(n_samples=args.samples, sampler="ddim", steps=args.sample_steps, options={}, seed=0,
                  precision=args.precision, compile=args.compile)
    t0 = time.perf_counter()
    first = evaluate_items(items[:1], args.evaluator, **kwargs)  # featurizer, reference statistics, compile
    t1 = time.perf_counter()
    rest = evaluate_items(items[1:], args.evaluator, **kwargs)
    t2 = time.perf_counter()
    doc["eval"] = {"first_item_seconds": t1 - t0, "later_items": len(rest),
                   "seconds_per_later_item": (t2 - t1) / max(1, len(rest)),
                   "scores": [{"round": r["round"], "branch": r["branch"], "sparsity": r["sparsity"],
                               **{key: v for key, v in r["scores"].items() if isinstance(v, float)}}
                              for r in first + rest]}
    save()
    print(json.dumps(doc, indent=1, default=str))


if __name__ == "__main__":
    main()

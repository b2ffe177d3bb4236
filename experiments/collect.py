"""Summarise runs into one JSON file: config essentials, then sparsity, loss and scores per round.

Usage: python experiments/collect.py RUN [RUN ...] --out summary.json
"""

import argparse
import json

from ticketforge.inspection import inspect_run

parser = argparse.ArgumentParser()
parser.add_argument("runs", nargs="+")
parser.add_argument("--out", required=True)
args = parser.parse_args()
summary = {}
for run in args.runs:
    try:
        doc = inspect_run(run)
    except Exception as exc:  # an unfinished run is reported, not fatal
        summary[run] = {"error": str(exc)}
        continue
    cfg = doc["config"]
    summary[run] = {
        "config": {k: cfg[k] for k in ("preset", "dataset", "schedule", "p", "q", "baseline", "rewind", "seed",
                                       "steps_per_round", "batch_size", "lr", "precision", "world_size")
                   if k in cfg},
        "rounds": [{"round": r["round"], "sparsity": r["sparsity"], "mask_sha256": r["mask_sha256"],
                    "groups": [g["sparsity"] for g in r["groups"]], "metrics": r["metrics"]} for r in doc["rounds"]],
    }
with open(args.out, "w") as f:
    json.dump(summary, f, indent=1)

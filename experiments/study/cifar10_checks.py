"""The checks that docs/results.md's CIFAR-10 section makes on a finished part, from its JSON alone (no
GPU): ``python experiments/study/cifar10_checks.py docs/results/cifar10/cifar10.json [--runs
docs/results/cifar10/runs/seed0] [--fd-png FILE]``.

- Each control against the ticket at the last round, in the evaluator's distance and in KID. The KID
  margin is also given in units of the two scores' subset spread (their std over subsets, added in
  quadrature): that spread is the sampling noise of one network's score, not the spread between seeds.
- The two dense networks (round 0 from theta_0, the dense branch from theta_tau): the only pair of
  trainings in the part that should score alike, so their gap is a floor under the training noise.
- With ``--runs DIR`` (the part's run folders: ``seed0/`` and its branches): the trainings' steady rate,
  the median of every logged interval's steps/s, and a checkpoint's cost beyond it; then what a faithful
  reproduction costs at that rate (cifar10.py's ``faithful``). The JSON's own estimate uses the
  ``measured`` rate, whose intervals include the checkpoints.

``--fd-png`` draws the score plot again from the JSON (cifar10.py's ``plot_fd``).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cifar10 import faithful, plot_fd  # noqa: E402
from common import checks_of_finished  # noqa: E402


def margin(ticket: dict[str, Any], other: dict[str, Any], metric: str) -> dict[str, Any]:
    """``other`` minus ``ticket`` in the distance and in KID (relative to the ticket; KID also in subset stds)."""
    d, k = other[metric] - ticket[metric], other["kid"] - ticket["kid"]
    std = math.hypot(ticket["kid_std"], other["kid_std"])
    return {"vs": other["id"], "base": ticket["id"], "metric": d, "metric_relative": d / ticket[metric], "kid": k,
            "kid_relative": k / ticket["kid"], "kid_in_subset_stds": k / std if std > 0 else None}


def checks(result: dict[str, Any]) -> dict[str, Any]:
    metric = result["evaluator"].replace("-", "_")
    rows = {r["id"]: r for r in result["rows"] if r[metric] is not None}
    last = result["plan"]["last_round"]
    ticket = rows.get(f"r{last}")
    if ticket is None:
        sys.exit(f"the last round r{last} has no score in this JSON: nothing to compare the controls with")
    controls = [margin(ticket, r, metric) for r in rows.values() if r["kind"] not in ("dense", "ticket", "none-tau")]
    dense = [r for r in rows.values() if r["kind"] in ("dense", "none-tau")]
    pair = margin(dense[0], dense[1], metric) if len(dense) == 2 else None
    return {"metric": metric, "ticket": ticket["id"], "controls": controls, "dense_pair": pair}


def train_rates(runs: Path, checkpoint_every: int) -> dict[str, Any]:
    """The median steps/s of every logged interval of every training under ``runs``, and the median extra
    seconds of the intervals that hold a checkpoint (it is saved after steps that are multiples of
    ``checkpoint_every``, so in the interval after them)."""
    logs = sorted(runs.rglob("train_log.jsonl"))
    entries = [json.loads(line) for f in logs for line in f.read_text().splitlines() if line.strip()]
    if not entries:
        sys.exit(f"{runs}: no train_log.jsonl under it: give the part's run folders (OUT/seed0 or runs/seed0)")
    steps = [b["step"] - a["step"] for a, b in zip(entries, entries[1:]) if b["step"] > a["step"]]
    interval = statistics.median(steps) if steps else entries[0]["step"]
    steady = statistics.median(e["steps_per_s"] for e in entries)
    held = [e for e in entries if e["step"] > interval and (e["step"] - interval) % checkpoint_every == 0]
    extra = [interval / e["steps_per_s"] - interval / steady for e in held]
    return {"logs": len(logs), "intervals": len(entries), "steady_steps_per_s": steady,
            "checkpoint_seconds": statistics.median(extra) if extra else None}


def show(out: dict[str, Any]) -> None:
    name = out["metric"].replace("_", "-")
    print(f"each control against the ticket {out['ticket']}, and the two dense networks:")
    for m in [*out["controls"], *([out["dense_pair"]] if out["dense_pair"] else [])]:
        stds = "" if m["kid_in_subset_stds"] is None else f", {m['kid_in_subset_stds']:+.1f} subset stds"
        head = "dense pair: " if m is out["dense_pair"] else ""
        print(f"  {head}{m['vs']} minus {m['base']}: {name} {m['metric']:+.3f} ({m['metric_relative']:+.1%}); "
              f"KID {m['kid']:+.5f} ({m['kid_relative']:+.1%}{stds})")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    def runs_option(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--runs", type=Path, help="the part's run folders (OUT/seed0): the trainings' rates")

    args, result, out = checks_of_finished(argv, __doc__, "cifar10.json", "fd-png",
                                           "draw the score plot again into this file", checks, runs_option)
    show(out)
    if args.runs:
        rates = train_rates(args.runs, result["run_config"]["checkpoint_every"])
        cost = faithful(result["study"], result["plan"], rates["steady_steps_per_s"],
                        result["measured"]["score_gpu_seconds"])
        out.update(rates=rates, faithful_at_steady=cost)
        ckpt = rates["checkpoint_seconds"]
        print(f"steady training rate: {rates['steady_steps_per_s']:.1f} steps/s, the median of {rates['intervals']} "
              f"logged intervals in {rates['logs']} trainings" + ("" if ckpt is None else f"; a checkpoint {ckpt:.1f} s more"))
        for name, c in (("the paper's protocol", cost["paper"]), ("deciding 90-99%", cost["decide_90_99"])):
            if "gpu_hours" in c:
                print(f"{name} at that rate: {c['trainings']} trainings, {c['gpu_hours']:.1f} GPU-hours, "
                      f"{c['h200_sessions_of_25_min']} sessions of 25 minutes")
    if args.fd_png:
        plot_fd(result["rows"], out["metric"], result["study"]["samples"], args.fd_png)
        print(f"drew {args.fd_png}")
    return out


if __name__ == "__main__":
    main()

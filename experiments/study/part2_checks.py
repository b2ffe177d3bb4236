"""The checks that docs/results.md's Part 2 makes on a finished part, from its JSON alone (no GPU):
``python experiments/study/part2_checks.py docs/results/part2/part2.json [--against
docs/results/part2/first-run/part2.json] [--fd-png FILE]``.

- Each cell against part 1's incremental curve at its sparsity, the margin also in units of part 1's
  seed spread there (the JSON's ``comparisons``; under one spread decides nothing).
- With ``--against`` another run of the part (same settings, same seed): each round that both scored,
  its change between the runs relative to the other run, and whether its verdict changed; then the
  largest change. Two runs of one seed differ only by the GPU's nondeterminism (bf16, compiled, atomics
  in the kernels), so that change is a floor under the noise that part 1's two-seed spread measures.
  Both runs must have scored under one featurizer (its sha256): fd-lenet values of two featurizers do
  not compare.

- With ``--runs DIR`` (the part's run folders, each with its ``manifest.json``): whether the trajectories
  started from one theta_0 and one theta_tau (the manifest's sha256 of ``init.safetensors`` and
  ``rewind.safetensors``). The kept rewind points are left out: runs written before
  ticketforge sorted the metadata (ticketforge/store/canonical.py) gave their files two metadata keys in
  safetensors' random order, so two equal points could differ in sha256.

``--fd-png`` draws the fd-lenet plot against sparsity again from the JSON (part2.py's ``plot_fd``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import checks_of_finished, read_finished  # noqa: E402
from part2 import plot_fd  # noqa: E402


def margins(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each comparison's margin over incremental, and that margin in part 1's seed spreads."""
    return [{**{k: c[k] for k in ("schedule", "cell", "sparsity", "fd_lenet", "margin", "verdict")},
             "in_spreads": None if c["margin"] is None or not c["seed_spread_at_this_fd"]
             else c["margin"] / c["seed_spread_at_this_fd"]} for c in result["comparisons"]]


def featurizer(result: dict[str, Any], name: str) -> str:
    """The one featurizer sha256 that scored every row of ``result`` (named ``name`` in the errors)."""
    shas = {r["featurizer_sha256"] for r in result["rows"] if r["fd_lenet"] is not None}
    if len(shas) != 1:
        sys.exit(f"{name}: its rows were scored under {len(shas)} featurizers, not one: its fd-lenet values "
                 "do not compare with each other")
    return shas.pop()


def between(result: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """Each round scored in both runs: ``result``'s fd-lenet against ``other``'s (relative to ``other``),
    and each comparison's verdict in both; the largest relative change; what only one run scored."""
    sha = featurizer(result, "this run")
    if sha != featurizer(other, "the other run"):
        sys.exit("the two runs were scored under different featurizers (sha256): their fd-lenet values do "
                 "not compare; score both with one")

    def scored(res: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
        return {(r["schedule"], r["round"]): r for r in res["rows"] if r["fd_lenet"] is not None}

    def verdicts(res: dict[str, Any]) -> dict[tuple[str, int], str | None]:
        return {(c["schedule"], c["round"]): c["verdict"] for c in res["comparisons"]}

    here, there = scored(result), scored(other)
    v_here, v_there = verdicts(result), verdicts(other)
    cells = []
    for key in [k for k in there if k in here]:
        a, b = there[key]["fd_lenet"], here[key]["fd_lenet"]
        cells.append({"schedule": key[0], "round": key[1], "cell": here[key]["cell"], "other": a, "this": b,
                      "change": b - a, "relative": (b - a) / a, "verdict_other": v_there.get(key),
                      "verdict_this": v_here.get(key), "verdict_changed": v_there.get(key) != v_here.get(key)})
    largest = max(cells, key=lambda c: abs(c["relative"]), default=None)
    return {"featurizer_sha256": sha, "cells": cells, "largest": largest,
            "part1_seed_spread_rel": (result["part1"] or {}).get("seed_spread", {}).get("rel"),
            "only_this": sorted(f"{s}-r{k}" for s, k in here.keys() - there.keys()),
            "only_other": sorted(f"{s}-r{k}" for s, k in there.keys() - here.keys())}


def starts(runs: Path) -> dict[str, Any]:
    """Per file of the runs' start (theta_0 and theta_tau), each run's sha256 (its first 12 digits) and
    whether all runs under ``runs`` agree on it."""
    manifests = {m.parent.name: json.loads(m.read_text())["files"] for m in sorted(runs.glob("*/manifest.json"))}
    if not manifests:
        sys.exit(f"{runs}: no run folder with a manifest.json under it: give the part's runs/ folder")
    names = ["init.safetensors", "rewind.safetensors"]
    return {n: {"sha256": {run: (files.get(n) or "missing")[:12] for run, files in manifests.items()},
                "same": len({files.get(n) for files in manifests.values()}) == 1} for n in names}


def checks(result: dict[str, Any]) -> dict[str, Any]:
    return {"margins": margins(result), "dense_vs_part1": result["dense_vs_part1"],
            "cuts": [c["job"] for c in result["cuts"]]}


def show(out: dict[str, Any]) -> None:
    print("each cell against part 1's incremental at its sparsity (margin: this minus incremental):")
    for m in out["margins"]:
        spreads = "" if m["in_spreads"] is None else f" ({m['in_spreads']:+.1f} seed spreads)"
        print(f"  {m['schedule']} {m['cell']} at {m['sparsity']:.2%}: fd-lenet {m['fd_lenet']:.2f}, margin "
              f"{m['margin']:+.2f}{spreads}: {m['verdict'] or 'not decided'}")
    d = out["dense_vs_part1"]
    print(f"dense round: {d['part2']:.2f} here, {d['part1']:.2f} in part 1; cut: {', '.join(out['cuts']) or 'nothing'}")
    if "against" in out:
        b = out["against"]
        print(f"against the other run (featurizer {b['featurizer_sha256'][:12]}): this minus the other")
        for c in b["cells"]:
            flip = f"; verdict {c['verdict_other']} -> {c['verdict_this']}" if c["verdict_changed"] else ""
            print(f"  {c['schedule']}-r{c['round']} ({c['cell']}): {c['other']:.2f} -> {c['this']:.2f}, "
                  f"{c['change']:+.2f} ({c['relative']:+.1%}){flip}")
        if b["largest"]:
            big = b["largest"]
            spread = "" if b["part1_seed_spread_rel"] is None else f"; part 1's two seeds: {b['part1_seed_spread_rel']:.1%}"
            print(f"largest change: {big['schedule']}-r{big['round']}, {big['relative']:+.1%}{spread}")
        print(f"scored only here: {', '.join(b['only_this']) or 'nothing'}; only there: {', '.join(b['only_other']) or 'nothing'}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    def against_option(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--against", type=Path, help="another finished run's part2.json, at the same settings and seed")
        ap.add_argument("--runs", type=Path, help="the part's run folders (OUT or runs/): did they start alike?")

    args, result, out = checks_of_finished(argv, __doc__, "part2.json", "fd-png",
                                           "draw the fd-lenet plot against sparsity again into this file",
                                           checks, against_option)
    if args.against:
        _, out["against"] = read_finished(args.against, "part2.json", lambda other: between(result, other))
    show(out)
    if args.runs:
        out["starts"] = starts(args.runs)
        for name, s in out["starts"].items():
            print(f"{name}: {'the same in every run' if s['same'] else 'differs'} "
                  f"({', '.join(f'{run} {sha}' for run, sha in s['sha256'].items())})")
    if args.fd_png:
        plot_fd(result["rows"], result["part1"], "sparsity", args.fd_png, result["study"]["samples"])
        print(f"drew {args.fd_png}")
    return out


if __name__ == "__main__":
    main()

"""The checks that docs/results.md's Part 3 makes on a finished part, from its JSON alone (no GPU):
``python experiments/study/part3_checks.py docs/results/part3/part3.json [--rank-png FILE]``.

- The rank table again, with each ticket test's p adjusted (Holm) for all the tickets' tests.
- The mask Jaccard without the modules that both tickets pruned to nothing (``mask_jaccard`` gives two
  empty masks 1.0), with its trend along the network.
- The range of the weights' CKA per pair and round.

``--rank-png`` draws the rank plot again from the JSON (part3.py's ``plot_rank``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import checks_of_finished  # noqa: E402
from part3 import plot_rank, rank_table  # noqa: E402


def cells_of(result: dict[str, Any]) -> dict[str, dict[int, dict[str, Any]]]:
    """part3.json's ``cka`` ({pair: {"rK": cell}}) as rank_table takes it ({pair: {K: cell}})."""
    return {pair: {int(k[1:]): cell for k, cell in by.items()} for pair, by in result["cka"].items()}


def jaccard_without_empty(cell: dict[str, Any], alpha: float) -> dict[str, Any]:
    """Mean Jaccard (and two random masks' mean) and its trend, leaving out modules empty in both tickets."""
    from ticketforge.similarity.trend import position_trend

    rows = sorted(cell["modules"], key=lambda r: r["position"])
    empty = [r["module"] for r in rows if r["density_a"] == 0 and r["density_b"] == 0]
    kept = [r for r in rows if r["module"] not in empty]
    trend = position_trend([r["jaccard"] for r in kept], alpha)
    return {"empty_in_both": empty, "n": len(kept), "mean": sum(r["jaccard"] for r in kept) / len(kept),
            "random_mean": sum(r["jaccard_random"] for r in kept) / len(kept),
            "rho": trend["rho"], "p": trend["p"]}


def checks(result: dict[str, Any]) -> dict[str, Any]:
    alpha, last = result["study"]["alpha"], result["plan"]["last_round"]
    cells = cells_of(result)
    table = rank_table(cells, last, result["study"]["cka-timesteps"], alpha)
    weights = {pair: {f"r{k}": [min(v), max(v)] for k, cell in by.items()
                      if (v := [m["weights_cka"] for m in cell["modules"] if m["weights_cka"] is not None])}
               for pair, by in cells.items()}
    return {"rank_table": table,
            "jaccard_without_empty": {pair: jaccard_without_empty(by[last], alpha) for pair, by in cells.items()},
            "weights_cka_range": weights}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args, _, out = checks_of_finished(argv, __doc__, "part3.json", "rank-png", "draw the rank plot again into this file",
                                      checks)
    print("pair | mode | rho | p | p (Holm, all the tickets' tests)")
    for r in out["rank_table"]:
        if r["p"] is not None:
            print(f"{r['pair']} | {r['mode']} | {r['rho']:+.3f} | {r['p']:.3g} | {r['p_holm']:.3g}")
    for pair, j in out["jaccard_without_empty"].items():
        print(f"{pair}: Jaccard without the {len(j['empty_in_both'])} modules empty in both ({', '.join(j['empty_in_both'])}): "
              f"mean {j['mean']:.3f} (random masks {j['random_mean']:.3f}), rho {j['rho']:+.3f}, p {j['p']:.2g}")
    for pair, by in out["weights_cka_range"].items():
        print(f"{pair}: weights' CKA " + ", ".join(f"{k} {lo:+.3f} to {hi:+.3f}" for k, (lo, hi) in by.items()))
    if args.rank_png:
        plot_rank(out["rank_table"], args.rank_png)
        print(f"wrote {args.rank_png}")
    return out


if __name__ == "__main__":
    main()

"""How much of the layers that close a DDPM residual branch a schedule keeps, round by round, from its
counts alone (no training): ``python experiments/study/closing_layers.py experiments/study/schedules.toml
--set 'schedule="erk"' --rounds 9``.

DDPM initialises these layers (``conv2`` of each ResBlock, ``proj_out`` of each attention block,
``conv_out``) near zero, so a schedule that ranks a block's magnitudes together prunes them first
(docs/results.md, Part 1). The counts printed here are exact for a schedule whose per-tensor counts do
not depend on the scores (``erk``, ``uniform`` or ``incremental`` with ``within=tensor``); for one that
pools tensors (``within=group``, ``global``) they come from random scores, and the script says so.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import CLOSING_LAYERS, plan_rounds, read_study  # noqa: E402


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    from ticketforge import RunConfig

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", type=Path, help="a study TOML (its top level is the run's settings)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="override a run setting, as the parts' --set")
    ap.add_argument("--rounds", type=int, default=9, help="prunings to plan")
    args = ap.parse_args(argv)
    data, _ = read_study(args.config, args.sets, [], None)
    cfg = RunConfig.from_dict(data, source=str(args.config))
    plan = plan_rounds(cfg, args.rounds)
    closing = [i for i, (name, _) in enumerate(plan.targets) if name.endswith(CLOSING_LAYERS)]
    other = [i for i in range(len(plan.targets)) if i not in closing]
    pooled = cfg.schedule == "global" or (cfg.schedule in ("uniform", "incremental")
                                          and cfg.schedule_options.get("within", "group") == "group")
    print(f"schedule {cfg.schedule}{' (counts from random scores: the tensors are ranked together)' if pooled else ''}; "
          f"{len(closing)} closing layers, {len(other)} others")
    rows = []
    for k, kept in enumerate(plan.kept):
        share = [kept[i] / plan.kept[0][i] for i in closing]
        row = {"round": k, "sparsity": plan.sparsity[k], "closing_kept": sum(kept[i] for i in closing)
               / sum(plan.kept[0][i] for i in closing), "closing_min": min(share),
               "other_kept": sum(kept[i] for i in other) / sum(plan.kept[0][i] for i in other)}
        rows.append(row)
        print(f"round {k:2d}  sparsity {100 * row['sparsity']:6.2f}%  closing layers keep {100 * row['closing_kept']:6.2f}% "
              f"(fewest {100 * row['closing_min']:6.2f}%)  the others {100 * row['other_kept']:6.2f}%")
    return rows


if __name__ == "__main__":
    main()

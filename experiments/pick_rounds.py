"""Print the finished rounds of a run whose sparsity is nearest to each target (one per line, unique)."""

import sys

from ticketforge.inspection import inspect_run

run, targets = sys.argv[1], [float(t) for t in sys.argv[2:]]
rounds = inspect_run(run)["rounds"]
picked = []
for target in targets:
    best = min(rounds, key=lambda r: abs(r["sparsity"] - target))
    if best["round"] not in picked:
        picked.append(best["round"])
print("\n".join(map(str, picked)))

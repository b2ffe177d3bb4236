"""How far the captured training step drifts from the eager one, next to how far two eager runs drift.

Runs the GPU test's setting (``tests/test_step_graph.py::_train``: the tiny DDPM U-Net, 12 steps a
round, warm-up, clipping, EMA) for 1 and 2 rounds: two eager runs and one captured run each, and prints
the largest and the mean absolute weight difference of each pair, the relative gap the test bounds,
and the mean distance the weights moved. Needs a CUDA GPU.

    python benchmarks/step_graph_drift.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from test_step_graph import _initial_params, _relative_gap, _train  # noqa: E402


def differences(a: list[torch.Tensor], b: list[torch.Tensor]) -> tuple[float, float]:
    """Largest and mean absolute difference over all weights."""
    flat = torch.cat([(x - y).flatten() for x, y in zip(a, b)]).abs()
    return flat.max().item(), flat.mean().item()


def main() -> None:
    if not torch.cuda.is_available():
        sys.exit("step_graph_drift.py needs a CUDA GPU (the step graph is CUDA only)")
    init = _initial_params()
    for rounds in (1, 2):
        eager, _, _, _ = _train(capture=False, rounds=rounds)
        again, _, _, _ = _train(capture=False, rounds=rounds)
        graph, _, _, records = _train(capture=True, rounds=rounds)
        moved = differences(eager, init)[1]
        print(f"{rounds} round(s) of 12 steps, captured {[r.get('cuda_graph') for r in records]}, "
              f"mean weight movement {moved:.3e}")
        for name, other in (("eager vs eager", again), ("eager vs captured", graph)):
            largest, mean = differences(eager, other)
            print(f"  {name:18s} max {largest:.3e}  mean {mean:.3e}  relative gap {_relative_gap(other, eager, init):.2e}")


if __name__ == "__main__":
    main()

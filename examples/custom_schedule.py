"""A pruning schedule written in a few lines and run through the Python API.

``GentleEdges`` prunes the first and the last module group in forward order (for the DDPM U-Net:
the time embedding and the output conv) at a fraction of the others' ratio, the way Frankle and
Carbin pruned the output layer at half the rate of the rest: edge layers are small and every weight
of them counts. Subclass ``ticketforge.RatioSchedule``, return one
ratio per group, and the engine does the rest (validation, pooling per group, masks, rewinding)::

    python examples/custom_schedule.py                      # ddpm-unet, preset tiny
    python examples/custom_schedule.py --rounds 5 --p 30 --edge-factor 0.25

No plugin or entry point is needed for a schedule you only use from Python: hand the object to
``Engine``. Its settings name the run folder with the rest of the config, and the folder and its
rounds are the same as for a named schedule (``ticketforge inspect <run folder> --groups`` shows the
per-group sparsities).
"""

from __future__ import annotations

import argparse
from typing import Any

import ticketforge
from ticketforge import Engine, RunConfig


class GentleEdges(ticketforge.RatioSchedule):
    """Group j prunes ``p`` of its remaining weights, the first and last group ``edge_factor * p``."""

    def __init__(self, p: float = 0.2, edge_factor: float = 0.5):
        self.p, self.edge_factor = p, edge_factor

    def ratios(self, num_groups: int) -> list[float]:
        ratios = [self.p] * num_groups
        ratios[0] = ratios[-1] = self.p * self.edge_factor
        return ratios


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ddpm-unet", help="model plugin name [ddpm-unet]")
    parser.add_argument("--preset", default="tiny", help="model preset [tiny]")
    parser.add_argument("--p", type=float, default=20.0, help="percent pruned per round in the middle groups [20]")
    parser.add_argument("--edge-factor", type=float, default=0.5, help="first/last group prune p times this [0.5]")
    parser.add_argument("--rounds", type=int, default=3, help="number of prunings [3]")
    parser.add_argument("--steps-per-round", type=int, default=None, help="training steps per round [the preset's]")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda [auto]")
    parser.add_argument("--out", default=None, help="run folder [runs/<model>-<schedule>-<hash>]")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, registry: Any = None) -> list[dict[str, Any]]:
    """Run the example; ``registry`` replaces the installed plugins (tests pass one with a toy model)."""
    args = parse_args(argv)
    schedule = GentleEdges(args.p / 100.0, args.edge_factor)
    # The object's constructor settings (p, edge_factor: its public attributes) are part of the run's
    # identity, so GentleEdges(0.3, 0.5) and GentleEdges(0.2, 0.5) get different run folders by themselves.
    config = RunConfig(model=args.model, preset=args.preset, rounds=args.rounds,
                       steps_per_round=args.steps_per_round, device=args.device, out=args.out)
    engine = Engine(config, schedule=schedule, registry=registry)
    rounds = engine.run()

    last = rounds[-1]
    print(f"run folder: {engine.run_dir}")
    print(f"round {last['round']}: {100 * last['sparsity']:.1f}% of prunable weights pruned")
    for group, ratio in zip(last["groups"], schedule.ratios(len(last["groups"]))):
        expected = 1 - (1 - ratio) ** last["round"]
        print(f"  {group['name']:<20} {100 * group['sparsity']:5.1f}% pruned "
              f"(ratio {100 * ratio:.0f}%/round, {100 * expected:.1f}% expected)")
    return rounds


if __name__ == "__main__":
    main()

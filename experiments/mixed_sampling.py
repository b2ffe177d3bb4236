"""Mixed-sparsity sampling (the paper's open question): the dense network for some denoising steps
and a ticket for the others, scored against the theoretical MACs of the whole sampling run.

For each switch point ``s`` (a 0-based model timestep) two orders are scored: ``dense-first`` (the
dense network for the noisy steps ``t >= s``, the ticket after) and ``ticket-first`` (the reverse);
the all-dense and all-ticket runs are the end points. MACs per image are
``n_noisy * MACs(first) + n_clean * MACs(second)`` over the DDIM steps actually visited, with the
ticket's MACs counted as if every pruned weight were skipped (``ticketforge flops``'s sparse MACs).

    python experiments/mixed_sampling.py runs/mnist/incremental --ticket-round -1 \
        --switch 800,600,400,200 --samples 10000 --steps 100 --evaluator fd-lenet \
        --evaluator-option batch_size=2000 --device cuda --precision bf16 --compile --json mixed.json --plot mixed.png

Every row records the sample count, sampler, steps and seed; the scores are not stored in the run.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch

from ticketforge.api import load_round
from ticketforge.engine.sampling import sampling_network
from ticketforge.metrics.flops import count_macs, with_densities
from ticketforge.registry import get_registry
from ticketforge.store import RunStore
from ticketforge_ddpm.samplers import ddim_timesteps, switch_at


def macs_per_step(dense: torch.nn.Module, ticket: torch.nn.Module, spec: Any) -> tuple[float, float]:
    """Theoretical MACs of one denoising step of one image: dense network, ticket (pruned weights skipped)."""
    inputs = spec.example_inputs(1, "cpu")
    count = count_macs(dense.cpu(), inputs)
    return float(count.dense), float(with_densities(count, ticket.cpu()).sparse)


def key_values(items: list[str]) -> dict[str, Any]:
    """``["batch_size=500"]`` -> ``{"batch_size": 500}``: values read as JSON where they can be, as
    ``ticketforge eval --evaluator-option`` reads them."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: --evaluator-option takes KEY=VALUE, not {item!r}")
        try:
            out[key.replace("-", "_")] = json.loads(value)
        except ValueError:
            out[key.replace("-", "_")] = value
    return out


def plan(switches: list[int], timesteps: list[int]) -> list[tuple[str, int | None]]:
    """(order, switch) pairs: the two end points, then both orders at each switch point."""
    rows: list[tuple[str, int | None]] = [("dense", None), ("ticket", None)]
    for s in switches:
        if not 0 < s <= max(timesteps):
            raise SystemExit(f"error: switch point {s} is outside the sampled timesteps 1..{max(timesteps)}")
        rows += [("dense-first", s), ("ticket-first", s)]
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--ticket-round", type=int, default=-1, help="round of the ticket (-1: the last)")
    parser.add_argument("--dense-round", type=int, default=0)
    parser.add_argument("--switch", default="750,500,250", help="comma-separated model timesteps")
    parser.add_argument("--samples", type=int, default=10000)
    parser.add_argument("--sampler", default="ddim")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--evaluator", default="fd-lenet")
    parser.add_argument("--evaluator-option", "--option", dest="option", action="append", default=[],
                        help="evaluator option KEY=VALUE, as for `ticketforge eval` (--option: the earlier name)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="auto", help="of the denoisers: auto, fp32, tf32 or bf16")
    parser.add_argument("--compile", action="store_true", help="torch.compile both denoisers (CUDA graphs on a GPU)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--plot", default=None, help="PNG of score against MACs (needs matplotlib)")
    args = parser.parse_args(argv)

    registry = get_registry()
    evaluator = registry.create("evaluators", args.evaluator, **key_values(args.option))
    config = RunStore(args.run).read_config()
    dataset = registry.create("datasets", config["dataset"], root=config.get("data_root"),
                              download=bool(config.get("download")), train=True)
    dense = load_round(args.run, args.dense_round, registry=registry)
    ticket = load_round(args.run, args.ticket_round, registry=registry)
    dense_macs, ticket_macs = macs_per_step(dense.network, ticket.network, dense.spec)
    timesteps = ddim_timesteps(dense.spec.diffusion.timesteps, args.steps)
    device = torch.device(args.device)
    networks, precision = {}, args.precision
    for name, loaded in (("dense", dense), ("ticket", ticket)):
        networks[name], precision = sampling_network(loaded.network.to(device), args.precision, args.compile, device)
    rows = []
    for order, s in plan([int(x) for x in args.switch.split(",") if x], timesteps):
        if s is None:
            network, macs = networks[order], len(timesteps) * (dense_macs if order == "dense" else ticket_macs)
        else:
            first, second = ("dense", "ticket") if order == "dense-first" else ("ticket", "dense")
            network = switch_at(s, networks[first], networks[second])
            noisy = sum(1 for t in timesteps if t >= s)
            per = {"dense": dense_macs, "ticket": ticket_macs}
            macs = noisy * per[first] + (len(timesteps) - noisy) * per[second]
        gen = torch.Generator(device=device).manual_seed(args.seed)
        scores = evaluator.evaluate(dense.spec, network, dataset=dataset, n_samples=args.samples, generator=gen,
                                    device=device, sampler=args.sampler, steps=args.steps)
        row = {"order": order, "switch": s, "macs_per_image": macs,
               "macs_fraction_of_dense": macs / (len(timesteps) * dense_macs),
               "ticket_round": ticket.round, "ticket_sparsity": ticket.record.get("sparsity"),
               "samples": args.samples, "sampler": args.sampler, "steps": args.steps, "seed": args.seed,
               "precision": precision, "compile": args.compile,
               "evaluator": args.evaluator, "scores": scores}
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.json:  # rewritten after every row: a run cut off by a time limit keeps what it finished
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=1)
    if args.plot:
        plot(rows, args.plot)
    return rows


def plot(rows: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = next(k for k, v in rows[0]["scores"].items() if isinstance(v, float))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for order, marker in (("dense-first", "o"), ("ticket-first", "s")):
        pts = sorted((r["macs_fraction_of_dense"], r["scores"][key], r["switch"]) for r in rows if r["order"] == order)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, label=order)
        for x, y, s in pts:
            ax.annotate(str(s), (x, y), fontsize=7, textcoords="offset points", xytext=(3, 3))
    for order in ("dense", "ticket"):
        r = next(r for r in rows if r["order"] == order)
        ax.scatter([r["macs_fraction_of_dense"]], [r["scores"][key]], marker="*", s=90, label=f"all {order}")
    ax.set_xlabel("theoretical MACs of sampling / all-dense")
    ax.set_ylabel(f"{rows[0]['evaluator']} {key} (lower is better)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=150)


if __name__ == "__main__":
    main(sys.argv[1:])

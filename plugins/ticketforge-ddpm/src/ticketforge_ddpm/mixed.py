"""Mixed-sparsity sampling: a dense network for some denoising steps and its ticket for the others.

A schedule is an order and a switch point ``s`` (a 0-based model timestep): ``dense-first`` samples the
noisy steps ``t >= s`` with the dense network and the rest with the ticket, ``ticket-first`` the
reverse; ``dense`` and ``ticket`` (``s`` None) are the two pure networks. Its theoretical MACs per image
are the sum over the sampler's steps of the MACs of the network that takes each step (the ticket's
counted with its pruned weights skipped: ``ticketforge flops``'s sparse MACs).

:class:`MixedScoring` scores schedules with a :class:`ticketforge.evaluation.Scoring`'s evaluator, data
and settings, each of the two networks wrapped (and compiled) once for all the schedules.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

from .switching import switch_at

__all__ = ["ORDERS", "MixedScoring", "first_steps", "mixed_summary", "schedule_macs", "schedule_network",
           "schedules", "steps_of", "switch_points"]

ORDERS = ("dense", "ticket", "dense-first", "ticket-first")


def first_steps(switch: int, timesteps: Sequence[int]) -> int:
    """How many of the sampler's ``timesteps`` the first network takes: those at or above ``switch``."""
    return sum(1 for t in timesteps if t >= switch)


def switch_points(timesteps: Sequence[int], first: Sequence[int]) -> list[int]:
    """The switch timesteps at which the first network takes ``first[i]`` of the sampler's steps
    (``timesteps`` noisiest first, as :func:`~ticketforge_ddpm.samplers.ddim_timesteps` gives them)."""
    ordered = sorted(timesteps, reverse=True)
    bad = [k for k in first if not 0 < k < len(ordered)]
    if bad:
        raise ValueError(f"a switch must leave each network at least one of the {len(ordered)} steps, not {bad[0]}")
    return [ordered[k - 1] for k in first]


def schedules(switches: Sequence[int], timesteps: Sequence[int]) -> list[tuple[str, int | None]]:
    """(order, switch) of every schedule: the two pure networks, then both orders at each switch point.
    A switch point must leave each network at least one of the sampler's steps."""
    rows: list[tuple[str, int | None]] = [("dense", None), ("ticket", None)]
    for s in switches:
        if not 0 < first_steps(s, timesteps) < len(timesteps):
            raise ValueError(f"switch point {s} leaves one network none of the sampled timesteps "
                             f"({max(timesteps)}..{min(timesteps)})")
        rows += [("dense-first", s), ("ticket-first", s)]
    return rows


def steps_of(order: str, switch: int | None, timesteps: Sequence[int]) -> tuple[int, int]:
    """(steps the dense network takes, steps the ticket takes) of one schedule."""
    n = len(timesteps)
    if order == "dense":
        return n, 0
    if order == "ticket":
        return 0, n
    if switch is None or order not in ORDERS:
        raise ValueError(f"unknown schedule {order!r} at {switch!r}: give one of {ORDERS} and a switch for the mixed ones")
    k = first_steps(switch, timesteps)
    return (k, n - k) if order == "dense-first" else (n - k, k)


def schedule_macs(order: str, switch: int | None, timesteps: Sequence[int], dense_macs: float,
                  ticket_macs: float) -> float:
    """Theoretical MACs of sampling one image with the schedule: each step's network's MACs of one
    forward pass (``dense_macs``, ``ticket_macs``), summed over the steps."""
    dense_steps, ticket_steps = steps_of(order, switch, timesteps)
    return dense_steps * dense_macs + ticket_steps * ticket_macs


def schedule_network(order: str, switch: int | None, dense: nn.Module, ticket: nn.Module) -> nn.Module:
    """The denoiser that samples the schedule."""
    if order == "dense":
        return dense
    if order == "ticket":
        return ticket
    steps_of(order, switch, [0])  # checks the order
    assert switch is not None
    return switch_at(switch, dense, ticket) if order == "dense-first" else switch_at(switch, ticket, dense)


class MixedScoring:
    """Scores schedules of a dense network and a ticket with ``scoring``'s evaluator, data, sample count,
    sampler, seed (every schedule draws the same noise), EMA choice, precision and compilation.

    ``scoring``'s own denoiser wraps the dense network; a second one the ticket. Each is loaded from its
    run (and compiled) on first use and again only when another round is asked for."""

    def __init__(self, scoring: Any) -> None:
        from ticketforge.evaluation import SamplerCache

        self.scoring = scoring
        first = scoring.denoiser
        self.caches = {"dense": first, "ticket": SamplerCache(first.precision, first.compile, first.device)}
        self.loaded: dict[str, tuple[tuple[str, int], nn.Module, Any, str]] = {}

    def network(self, role: str, path: str, round_: int) -> tuple[nn.Module, Any, str]:
        """The sampling network of ``role`` (``dense`` or ``ticket``) holding round ``round_`` of ``path``."""
        from ticketforge.api import load_round

        held = self.loaded.get(role)
        if held is None or held[0] != (str(path), round_):
            loaded = load_round(path, round_, ema=self.scoring.ema, device="cpu")
            network, resolved = self.caches[role].load(loaded.network)
            held = self.loaded[role] = ((str(path), round_), network, loaded.spec, resolved)
        return held[1], held[2], held[3]

    def score(self, order: str, switch: int | None, dense: tuple[str, int], ticket: tuple[str, int]) -> dict[str, Any]:
        """The evaluator's scores of one schedule (``dense``, ``ticket``: (run folder, round)), with the seed,
        EMA, precision and compilation they were made with. Nothing is stored in the runs."""
        scoring = self.scoring
        roles = {"dense": ("dense",), "ticket": ("ticket",)}.get(order, ("dense", "ticket"))
        nets: dict[str, nn.Module] = {}
        spec, resolved = None, ""
        for role, (path, k) in (("dense", dense), ("ticket", ticket)):
            if role in roles:
                nets[role], spec, resolved = self.network(role, path, k)
        network = schedule_network(order, switch, nets.get("dense", nn.Identity()), nets.get("ticket", nn.Identity()))
        dataset = scoring.data_of(dense[0])  # the dense run's data (its ticket trains on the same)
        dev = scoring.ctx.device
        gen = torch.Generator(device=dev).manual_seed(scoring.seed)
        scores = scoring.evaluator.evaluate(spec, network, dataset=dataset, n_samples=scoring.n_samples,
                                            generator=gen, device=dev, sampler=scoring.sampler, steps=scoring.steps)
        return {**scores, "seed": scoring.seed, "ema": scoring.ema, "precision": resolved, "compile": scoring.compile}


# -- reading the results ----------------------------------------------------------------------------
def _curve(rows: list[dict[str, Any]], order: str, key: str) -> list[tuple[float, float]]:
    """(MACs, log score) of ``order``'s schedules and the two pure networks (its end points), by MACs."""
    pts = [(r["macs"], math.log(r[key])) for r in rows if r["order"] in (order, "dense", "ticket") and r.get(key)]
    return sorted(pts)


def _at(curve: list[tuple[float, float]], x: float) -> float | None:
    """The curve's log score at ``x`` MACs, linear between its points; None outside them."""
    if len(curve) < 2 or not curve[0][0] <= x <= curve[-1][0]:
        return None
    for (x0, y0), (x1, y1) in zip(curve, curve[1:]):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return None


def mixed_summary(rows: list[dict[str, Any]], key: str = "fd_lenet") -> dict[str, Any]:
    """Which order samples better for its MACs, and what beats which pure network.

    ``rows``: one per schedule, with ``order``, ``switch``, ``macs`` and the score ``key`` (lower is
    better). Each mixed row is compared with the other order's curve (its schedules and the two pure
    end points, log score linear in MACs) at its own MACs: ``better_order`` is the order whose schedules
    lie below the other's curve more often (``"neither"`` on a tie). A mixed schedule always costs more
    than the pure ticket and less than the pure dense network, so none can dominate the pure ticket in
    both MACs and score: ``beat_ticket`` lists those with a better score than the pure ticket (at their
    extra MACs), ``dominate_dense`` those at least as good as the pure dense network (at fewer MACs),
    ``below_chord`` those better than the straight line (log score in MACs) between the two pure
    networks, and ``pareto`` the schedules no other beats in both."""
    pure = {r["order"]: r for r in rows if r["order"] in ("dense", "ticket") and r.get(key)}
    mixed = [r for r in rows if r["order"] in ("dense-first", "ticket-first") and r.get(key)]
    out: dict[str, Any] = {"key": key, "better_order": None, "wins": {}, "mean_log_gap": {}, "rows": [],
                           "beat_ticket": [], "dominate_dense": [], "below_chord": [], "pareto": []}
    for r in rows:
        if not r.get(key):
            continue
        dominated = any(o is not r and o.get(key) and o["macs"] <= r["macs"] and o[key] <= r[key]
                        and (o["macs"] < r["macs"] or o[key] < r[key]) for o in rows)
        if not dominated:
            out["pareto"].append(_name(r))
    if len(pure) < 2:
        return out
    chord = sorted((pure[o]["macs"], math.log(pure[o][key])) for o in ("dense", "ticket"))
    for order, other in (("dense-first", "ticket-first"), ("ticket-first", "dense-first")):
        theirs = _curve(rows, other, key)
        gaps = []
        for r in (r for r in mixed if r["order"] == order):
            at = _at(theirs, r["macs"])
            gap = None if at is None else math.log(r[key]) - at
            line = _at(chord, r["macs"])
            entry = {"schedule": _name(r), "macs": r["macs"], key: r[key], "log_gap_to_other_order": gap,
                     "below_chord": line is not None and math.log(r[key]) < line,
                     "beats_ticket": r[key] < pure["ticket"][key],
                     "dominates_dense": r[key] <= pure["dense"][key] and r["macs"] < pure["dense"]["macs"]}
            out["rows"].append(entry)
            for flag, bucket in (("beats_ticket", "beat_ticket"), ("dominates_dense", "dominate_dense"),
                                 ("below_chord", "below_chord")):
                if entry[flag]:
                    out[bucket].append(entry["schedule"])
            if gap is not None:
                gaps.append(gap)
        out["wins"][order] = sum(g < 0 for g in gaps)
        out["mean_log_gap"][order] = sum(gaps) / len(gaps) if gaps else None
    a, b = out["wins"].get("dense-first", 0), out["wins"].get("ticket-first", 0)
    out["better_order"] = "dense-first" if a > b else "ticket-first" if b > a else "neither"
    return out


def _name(row: dict[str, Any]) -> str:
    return row["order"] if row.get("switch") is None else f"{row['order']}@{row['switch']}"

"""MNIST study, part 3 (issue 19): are two tickets more alike upstream (CKA), and does mixed-sparsity
sampling pay?

    python experiments/study/part3.py experiments/study/similarity.toml --out /tmp/study3
    python experiments/study/part3.py experiments/study/similarity.toml --out /tmp/study3 --plan  # no GPU

On one H200 started bare (wheels of this commit in .whl/, the MNIST IDX files in .data/mnist), the part
is started and polled with ``experiments/study/device.sh``; README-part3.md has the calls.

``--plan`` prints the projected plan at the TOML's rates; README-part3.md has it at slower rates too,
and what the H200 runs took.

Trains the three trajectories of ``[study] tickets`` (part 1's run with its seeds replaced: seed 0;
seed 1 from seed 0's theta_0, ``--init-seed 0``; seed 1) side by side, one training process each (under
CUDA MPS where the machine has it), to the target sparsity (round 5, 84.6%). One scoring process does
the rest as soon as what it needs is done:

* CKA of the first ticket against each other one (``cka:A-vs-B@rK``), at its last round and at round 0
  (the dense networks: the reference level): per pruned module in forward order, debiased linear CKA of
  the masked weights (``ticketforge compare``'s, Kornblith's formula with the square root; the paper's
  formula without it is kept per module as ``cka_paper_no_sqrt`` and not reported), the mask Jaccard
  overlap (and what two random masks of the same densities give), and linear and RBF CKA of the
  modules' outputs on ``cka-samples`` real images diffused to each of ``cka-timesteps`` (the same images
  and noise for both networks; debiased, the biased estimator kept too). Spearman's rho of each profile
  against module position (scipy) says whether upstream modules are more alike: ``rank_table``, and
  per mode the ``claim``.
* Mixed-sparsity sampling with the first trajectory's dense round 0 and its ticket (``mixed:...``):
  DDIM switching network at each of ``switches`` in both orders (``dense-first``: the dense network for
  the noisy steps t >= s, the ticket after; ``ticket-first``: the reverse) and the two pure networks,
  each scored by one evaluator on ``samples`` samples drawn from one seed (fd-lenet and KID), with the
  theoretical MACs of its sampling (``ticketforge flops``'s sparse MACs of each network, times the steps
  each takes). ``mixed_summary``: which order is better for its MACs, and what beats which pure network.

The plan is timed against ``budget-minutes`` from the measured rates once the first round has run; the
mixed cells in ``cut-order`` are cut while it does not fit (never the sample count), and the JSON says
which. Resumable: the runs resume from their checkpoints; each CKA and mixed cell is kept in
``OUT/results/part3/`` with its settings and not made again. Writes ``OUT/results/part3.json``,
``part3_table.md`` (the tables for docs/results.md), ``part3_cka_<A>-vs-<B>.png`` (per pair: weights,
activations at each timestep, Jaccard, against the dense reference), ``part3_rank.png`` (rho per mode
and pair) and ``part3_mixed.png`` (fd-lenet and KID against sampling MACs). ``--set`` and
``--study-set`` as in part1.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))  # common.py, the scheduler parts 1 and 2 share

from common import (  # noqa: E402
    TRAINING,
    Job,
    Scheduler,
    blocked,
    check_cut_order,
    cut_to_fit,
    last_round,
    plan_rounds,
    rate_scale,
    read_run,
    read_study,  # noqa: F401 (the tests read the TOML with it, as part 2's do)
    run_facts,
    scorer_free_at,
    serve_in_order,
    start_mps,
    stop_mps,
    study_parser,
)

STUDY_KEYS = {"tickets", "cka-samples", "cka-timesteps", "cka-seed", "alpha", "switches", "evaluator", "samples",
              "sample-steps", "sample-seed", "train-workers", "budget-minutes", "train-rates", "compile-seconds",
              "round-seconds", "score-seconds", "busy-score-seconds", "first-score-seconds",
              "switch-compile-seconds", "cka-seconds", "flops-seconds", "report-seconds", "cut-order",
              "evaluator-options"}
SCORER = ("cka", "mixed", "flops")  # the scoring worker's jobs of this part


# -- the plan -------------------------------------------------------------------------------------
def sampler_timesteps(run_cfg: Any, steps: int) -> list[int]:
    """The model timesteps DDIM ``steps`` visits with the run's model, noisiest first."""
    from ticketforge.registry import get_registry
    from ticketforge_ddpm.samplers import ddim_timesteps

    spec = get_registry().create("models", run_cfg.model, **{**run_cfg.model_options, "preset": run_cfg.preset})
    return ddim_timesteps(spec.diffusion.timesteps, steps)


def make_plan(run_cfg: Any, study: dict[str, Any], out: Path) -> tuple[list[Job], dict[str, Any]]:
    """Every job of the part, in the order the scoring worker prefers them, and what the plan chose.

    Each scoring job waits for the rounds it reads (``needs_rounds``), not for its run: the dense score
    comes first (it trains the evaluator's featurizer while the trajectories train), then the dense CKA
    reference, then the cells of the last round."""
    from ticketforge_ddpm.mixed import schedules

    spr = run_cfg.steps_per_round
    plan = plan_rounds(run_cfg, 40)
    last = last_round(plan.sparsity, run_cfg.target_sparsity, plan.cap)
    names = [t["name"] for t in study["tickets"]]
    if len(set(names)) != len(names) or len(names) < 2:
        sys.exit(f"[study] tickets: give two or more, each its own name (not {names})")
    folders = {n: str(out / n) for n in names}
    jobs = []
    for t in study["tickets"]:
        cfg = dataclasses.replace(run_cfg, seed=t.get("seed", run_cfg.seed), init_seed=t.get("init-seed"),
                                  out=folders[t["name"]])
        jobs.append(Job(f"run:{t['name']}", "run", {"config": dataclasses.asdict(cfg)}, steps=(last + 1) * spr))
    first = names[0]
    pairs = [(first, other) for other in names[1:]]
    timesteps = sampler_timesteps(run_cfg, study["sample-steps"])
    mixed = schedules(study["switches"], timesteps)
    results = out / "results" / "part3"
    score_settings = {"evaluator": study["evaluator"], "evaluator-options": dict(study.get("evaluator-options", {})),
                      "samples": study["samples"], "sample-steps": study["sample-steps"],
                      "sample-seed": study["sample-seed"], "precision": run_cfg.precision, "compile": run_cfg.compile}
    cka_settings = {"samples": study["cka-samples"], "timesteps": list(study["cka-timesteps"]), "seed": study["cka-seed"]}

    def flops(k: int) -> Job:
        return Job(f"flops:{first}-r{k}", "flops", {"path": folders[first], "round": k},
                   needs_rounds=[(folders[first], k)])

    def cka(pair: tuple[str, str], k: int) -> Job:
        a, b = pair
        return Job(f"cka:{a}-vs-{b}@r{k}", "cka", {"a": folders[a], "b": folders[b], "round": k, "pair": f"{a}-vs-{b}",
                                               "file": str(results / "cka" / f"{a}-vs-{b}@r{k}.json"), **cka_settings},
                   needs_rounds=[(folders[a], k), (folders[b], k)])

    def score(order: str, switch: int | None) -> Job:
        name = order if switch is None else f"{order}@{switch}"
        needs = [(folders[first], 0)] if order == "dense" else [(folders[first], 0), (folders[first], last)]
        return Job(f"mixed:{name}", "mixed", {"order": order, "switch": switch, "dense": [folders[first], 0],
                                             "ticket": [folders[first], last], "file": str(results / "mixed" / f"{name}.json"),
                                             **score_settings}, needs_rounds=needs)

    jobs += [flops(0), score("dense", None), *(cka(p, 0) for p in pairs), flops(last), *(cka(p, last) for p in pairs)]
    jobs += [score(order, s) for order, s in mixed if order != "dense"]
    chosen = {"planned_sparsity": plan.sparsity[:last + 1], "last_round": last, "tickets": study["tickets"],
              "pairs": [f"{a}-vs-{b}" for a, b in pairs], "sampler_timesteps": timesteps,
              "schedules": [{"order": o, "switch": s} for o, s in mixed], "folders": folders}
    return jobs, chosen


# -- the projection ---------------------------------------------------------------------------------
def projection(jobs: dict[str, Job], order: list[str], rates: list[float], study: dict[str, Any], n_train: int,
               now: float = 0.0, compiled: bool = False, scorer_free_at: float = 0.0,
               warm: frozenset[str] = frozenset()) -> dict[str, float]:
    """When each job not yet done or cut will end (seconds from the part's start), ``"end"`` the part's.

    The runs train side by side, each at ``rates[n - 1]`` steps/s with ``n`` of them (``n_train`` at most;
    more wait for a free process); a round costs ``round-seconds`` on top, the first run's
    ``compile-seconds`` unless ``compiled``. A scoring job is ready when the rounds it reads are; the
    scoring process takes the ready ones in ``order``: a mixed cell costs ``first-score-seconds`` until
    one has run (``warm`` holds ``"score"`` once it has), then ``busy-score-seconds`` while anything
    trains and ``score-seconds`` after, and ``switch-compile-seconds`` more for the first that uses the
    ticket (``"ticket"`` in ``warm``); a CKA cell ``cka-seconds``, a count ``flops-seconds``.
    ``report-seconds`` close the part."""
    runs = [j for jid in order if (j := jobs[jid]).kind == "run" and j.state in ("todo", "running") and not blocked(j, jobs)]
    n = min(len(runs), n_train) or 1
    rate = rates[min(n, len(rates)) - 1]
    ends: dict[str, float] = {}
    round_end: dict[tuple[str, int], float] = {}
    slots = [now] * n
    for job in runs:
        spr = job.args["config"]["steps_per_round"]
        rounds = job.steps // spr
        done_steps = job.progress if job.state == "running" else 0
        done_rounds = job.rounds_done if job.state == "running" else 0
        start = min(slots)
        extra = 0.0 if compiled or done_steps else study["compile-seconds"]
        for k in range(done_rounds, rounds):
            round_end[(job.args["config"]["out"], k)] = \
                start + extra + ((k + 1) * spr - done_steps) / rate + (k + 1 - done_rounds) * study["round-seconds"]
        ends[job.id] = round_end.get((job.args["config"]["out"], rounds - 1), start)
        slots[slots.index(start)] = ends[job.id]
    train_end = max([now, *(ends[j.id] for j in runs)])

    def ready_at(jid: str) -> float:
        job = jobs[jid]
        return max([now, *(round_end.get(need, now) for need in job.needs_rounds),
                    *(ends.get(need, now) for need in job.needs_jobs)])

    pending = [jid for jid in order if jobs[jid].kind not in TRAINING and jobs[jid].state == "todo"
               and not blocked(jobs[jid], jobs)]
    hot = set(warm)

    def cost(jid: str, t: float) -> float:
        job = jobs[jid]
        if job.kind != "mixed":
            return study["cka-seconds"] if job.kind == "cka" else study["flops-seconds"]
        seconds = study["first-score-seconds"] if "score" not in hot else \
            study["busy-score-seconds"] if t < train_end else study["score-seconds"]
        if job.args["order"] != "dense" and "ticket" not in hot:
            seconds += study["switch-compile-seconds"]
            hot.add("ticket")
        hot.add("score")
        return seconds

    served = serve_in_order(pending, max(scorer_free_at, now), ready_at, cost)
    ends.update(served)
    t = max(served.values(), default=max(scorer_free_at, now))
    ends["end"] = max(train_end, t) + study["report-seconds"]
    return ends


def dry_run(jobs: list[Job], study: dict[str, Any]) -> dict[str, Any]:
    """The projection at the TOML's rates, and the cuts in ``cut-order`` that make it fit the budget."""
    return cut_to_fit(jobs, study, lambda by_id, order: projection(by_id, order, study["train-rates"], study,
                                                                   study["train-workers"]))


class Part3Scheduler(Scheduler):
    """Part 3's projection (:func:`projection` at the measured rate)."""

    def projected_end(self) -> float | None:
        scale = rate_scale(self)
        if scale is None:
            return None
        study = self.study
        free_at = scorer_free_at(self, lambda job: study["busy-score-seconds"] if job.kind == "mixed" else
                                 study["cka-seconds"] if job.kind == "cka" else study["flops-seconds"])
        warm = frozenset(w for w, done in (
            ("score", any(j.kind == "mixed" and j.state in ("done", "running") for j in self.jobs.values())),
            ("ticket", any(j.kind == "mixed" and j.args["order"] != "dense" and j.state in ("done", "running")
                           for j in self.jobs.values()))) if done)
        ends = projection(self.jobs, self.order, [scale * r for r in study["train-rates"]], study,
                          len(self.workers) - 1, now=time.time() - self.t0, compiled=True, scorer_free_at=free_at,
                          warm=warm)
        return ends["end"]


# -- the scoring worker's jobs ----------------------------------------------------------------------
def kept(file: Path, settings: dict[str, Any], make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The document ``file`` holds if it was made with ``settings``; else ``make()``'s, written there
    (whole or not at all) with its settings and the seconds it took. ``reused`` says which."""
    if file.exists():
        doc = json.loads(file.read_text())
        if doc.get("settings") == settings:
            return {**doc, "reused": True}
    t0 = time.perf_counter()
    doc = {"settings": settings, **make()}
    doc["seconds"] = time.perf_counter() - t0
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(file)
    return {**doc, "reused": False}


def _defined(value: Callable[[], float]) -> float | None:
    """A CKA value as a float, None where it is undefined (a constant representation, too few samples)."""
    try:
        out = float(value())
    except ValueError:
        return None
    return None if math.isnan(out) else out


def pair_cka(args: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    """Per module in forward order: the weights' CKA (debiased linear; biased and the paper's formula
    kept too), the masks' Jaccard and the activations' linear and RBF CKA at each timestep."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    with full_precision():  # the scoring process samples in TF32/bf16; the activations here are FP32
        return _pair_cka(args, state, device)


@contextlib.contextmanager
def full_precision() -> Iterator[None]:
    """FP32 matmuls and convolutions (no TF32) inside, the process's settings restored after."""
    import torch

    saved = (torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.allow_tf32,
             torch.backends.cudnn.allow_tf32)
    torch.set_float32_matmul_precision("highest")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(saved[0])
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[1], saved[2]


def _pair_cka(args: dict[str, Any], state: dict[str, Any], device: str) -> dict[str, Any]:
    from ticketforge.api import load_round
    from ticketforge.comparison import compare_rounds
    from ticketforge.registry import get_registry
    from ticketforge.similarity.cka import activation_grams, cka_of_grams, weight_cka
    from ticketforge_ddpm.probes import noisy_inputs

    a = load_round(args["a"], args["round"], ema=True, device=device)
    b = load_round(args["b"], args["round"], ema=True, device=device)
    doc = compare_rounds(a, b, mode="weights", kernel="linear", debiased=True)
    mods_a, mods_b = dict(a.network.named_modules()), dict(b.network.named_modules())
    names = [row["module"] for row in doc["modules"]]
    for i, row in enumerate(doc["modules"]):
        ma, mb = mods_a[row["module"]], mods_b[row["module"]]
        row.update(position=i, weights_cka=row.pop("cka"),
                   weights_cka_biased=_defined(lambda: weight_cka(ma, mb, debiased=False)),  # noqa: B023
                   cka_paper_no_sqrt=_defined(lambda: weight_cka(ma, mb, variant="paper-no-sqrt")),  # noqa: B023
                   activations={})
    key = (a.config["dataset"], a.config.get("data_root"))
    if state.get("dataset_of") != key:
        state["dataset"] = get_registry().create("datasets", key[0], root=key[1], download=bool(a.config.get("download")),
                                                 train=True)
        state["dataset_of"] = key
    for t in args["timesteps"]:
        inputs = noisy_inputs(a.spec, state["dataset"], args["samples"], t, seed=args["seed"], device=device)
        ga, gb = activation_grams(a.network, inputs, names), activation_grams(b.network, inputs, names)
        for row in doc["modules"]:
            gram_a, gram_b = ga[row["module"]], gb[row["module"]]
            row["activations"][str(t)] = {
                f"{kernel}{tag}": _defined(lambda: cka_of_grams(gram_a, gram_b, kernel, debiased=debiased))  # noqa: B023
                for kernel in ("linear", "rbf") for tag, debiased in (("", True), ("_biased", False))}
    doc.update(sparsity_a=a.record.get("sparsity"), sparsity_b=b.record.get("sparsity"), ema=True)
    return doc


def cka_job(args: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    """One CKA cell (a pair at a round), kept in its file."""
    settings = {k: args[k] for k in ("a", "b", "round", "samples", "timesteps", "seed")}
    return kept(Path(args["file"]), settings, lambda: pair_cka(args, state))


def mixed_job(args: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    """One mixed-sampling cell, scored by this process's one evaluator and its two denoisers."""
    settings = {k: args[k] for k in ("order", "switch", "dense", "ticket", "evaluator", "evaluator-options", "samples",
                                     "sample-steps", "sample-seed", "precision", "compile")}

    def make() -> dict[str, Any]:
        if "mixed" not in state:
            from ticketforge.evaluation import Scoring
            from ticketforge_ddpm.mixed import MixedScoring
            state["mixed"] = MixedScoring(Scoring(
                args["evaluator"], n_samples=args["samples"], sampler="ddim", steps=args["sample-steps"],
                options=dict(args["evaluator-options"]), seed=args["sample-seed"], precision=args["precision"],
                compile=args["compile"]))
        return {"scores": state["mixed"].score(args["order"], args["switch"], tuple(args["dense"]), tuple(args["ticket"]))}

    return kept(Path(args["file"]), settings, make)


HANDLERS = {"cka": cka_job, "mixed": mixed_job}


# -- what comes out ---------------------------------------------------------------------------------
def modes(timesteps: list[int]) -> list[str]:
    """The per-module profiles tested: weights, activations (linear, RBF) at each timestep, Jaccard."""
    return ["weights", *(f"{kernel}@t{t}" for t in timesteps for kernel in ("linear", "rbf")), "jaccard"]


def profile(doc: dict[str, Any], mode: str) -> list[float | None]:
    """A CKA cell's values of one mode, per module in forward order."""
    rows = sorted(doc["modules"], key=lambda r: r["position"])
    if mode in ("weights", "jaccard"):
        return [r["weights_cka" if mode == "weights" else "jaccard"] for r in rows]
    kernel, _, t = mode.partition("@t")
    return [r["activations"][t][kernel] for r in rows]


def rank_table(cells: dict[str, dict[int, dict[str, Any]]], last: int, timesteps: list[int], alpha: float
               ) -> list[dict[str, Any]]:
    """Per pair and mode: Spearman's rho and p of the ticket's profile against module position, the same
    of the dense networks' (round 0; not for Jaccard: their masks are all ones), and the mean levels.
    ``p_holm``: the ticket's p adjusted (Holm) for all the tickets' tests in the table; ``trend`` is
    each test's own, at ``alpha``."""
    from ticketforge.similarity.trend import position_trend

    def mean(values: list[float | None]) -> float | None:
        vals = [v for v in values if v is not None]
        return sum(vals) / len(vals) if vals else None

    table = []
    for pair, by_round in cells.items():
        for mode in modes(timesteps):
            ticket = profile(by_round[last], mode) if last in by_round else None
            dense = profile(by_round[0], mode) if 0 in by_round and mode != "jaccard" else None
            row: dict[str, Any] = {"pair": pair, "mode": mode, "round": last}
            for tag, values in (("", ticket), ("dense_", dense)):
                trend = position_trend(values, alpha) if values is not None else None
                row.update({f"{tag}rho": trend and trend["rho"], f"{tag}p": trend and trend["p"],
                            f"{tag}n": trend and trend["n"], f"{tag}trend": trend and trend["trend"],
                            f"{tag}mean": mean(values) if values is not None else None})
            if ticket is not None and mode == "jaccard":
                rows = sorted(by_round[last]["modules"], key=lambda r: r["position"])
                row["random_mean"] = mean([r["jaccard_random"] for r in rows])
            table.append(row)
    tested = [r for r in table if r["p"] is not None]
    for row, adjusted in zip(tested, holm([r["p"] for r in tested])):
        row["p_holm"] = adjusted
    return table


def holm(ps: list[float]) -> list[float]:
    """Holm's step-down adjustment of ``ps`` for testing them all at once (in their order): the k-th
    smallest is multiplied by (m - k), then made no smaller than the one before it, capped at 1."""
    order = sorted(range(len(ps)), key=ps.__getitem__)
    out, running = [0.0] * len(ps), 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (len(ps) - k) * ps[i]))
        out[i] = running
    return out


def claim(table: list[dict[str, Any]], pairs: list[str]) -> dict[str, Any]:
    """The paper's claim (upstream modules more alike: CKA falls with module position) per mode: ``held``
    where the ticket's profile falls significantly for every pair, ``held for some pairs``, ``reversed``
    where it rises significantly for one and falls for none, ``not held`` otherwise; and whether the dense
    networks' profiles fall too (then the fall is not the tickets' own)."""
    out = {}
    for mode in dict.fromkeys(r["mode"] for r in table):
        rows = [r for r in table if r["mode"] == mode and r["trend"] is not None]
        falls = [r["pair"] for r in rows if r["trend"] == "falls"]
        rises = [r["pair"] for r in rows if r["trend"] == "rises"]
        status = "not decided" if len(rows) < len(pairs) else "held" if len(falls) == len(pairs) else \
            "held for some pairs" if falls else "reversed" if rises else "not held"
        out[mode] = {"status": status, "falls": falls, "rises": rises,
                     "dense_falls": [r["pair"] for r in rows if r["dense_trend"] == "falls"]}
    return out


def mixed_rows(jobs: dict[str, Job], chosen: dict[str, Any], study: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per scored schedule: its steps on each network, its sampling MACs and its scores."""
    from ticketforge_ddpm.mixed import schedule_macs, steps_of

    first = chosen["tickets"][0]["name"]
    last, timesteps = chosen["last_round"], chosen["sampler_timesteps"]
    counts = {k: jobs[f"flops:{first}-r{k}"] for k in (0, last)}
    if any(c.state != "done" for c in counts.values()):
        return []
    dense_macs, ticket_macs = counts[0].result["sparse_macs"], counts[last].result["sparse_macs"]
    metric = study["evaluator"].replace("-", "_")
    rows = []
    for job in jobs.values():
        if job.kind != "mixed" or job.state != "done":
            continue
        order, switch = job.args["order"], job.args["switch"]
        scores = job.result["scores"]
        macs = schedule_macs(order, switch, timesteps, dense_macs, ticket_macs)
        dense_steps, ticket_steps = steps_of(order, switch, timesteps)
        rows.append({"schedule": job.id.removeprefix("mixed:"), "order": order, "switch": switch,
                     "dense_steps": dense_steps, "ticket_steps": ticket_steps, "macs": macs,
                     "macs_fraction_of_dense": macs / (len(timesteps) * dense_macs),
                     metric: scores.get(metric), "kid": scores.get(metric.replace("fd_", "kid_")),
                     "kid_std": scores.get(metric.replace("fd_", "kid_") + "_std"), "n_samples": scores.get("n_samples"),
                     "seed": scores.get("seed"), "precision": scores.get("precision"),
                     "featurizer_sha256": scores.get("featurizer_sha256"),
                     "score_seconds": job.result.get("seconds"), "score_reused": job.result.get("reused")})
    return sorted(rows, key=lambda r: r["macs"])


def collect(jobs: dict[str, Job], chosen: dict[str, Any], study: dict[str, Any]) -> dict[str, Any]:
    from ticketforge_ddpm.mixed import mixed_summary

    last, timesteps = chosen["last_round"], study["cka-timesteps"]
    cells: dict[str, dict[int, dict[str, Any]]] = {p: {} for p in chosen["pairs"]}
    for job in jobs.values():
        if job.kind == "cka" and job.state == "done":
            cells[job.args["pair"]][job.args["round"]] = job.result
    table = rank_table(cells, last, timesteps, study["alpha"])
    rows = mixed_rows(jobs, chosen, study)
    metric = study["evaluator"].replace("-", "_")
    return {"cka": {p: {f"r{k}": doc for k, doc in sorted(by.items())} for p, by in cells.items()},
            "rank_table": table, "claim": claim(table, chosen["pairs"]),
            "cka_formula": "Kornblith et al.'s, with the square root (ticketforge.similarity.cka); the paper's "
                           "formula without it is kept per module as cka_paper_no_sqrt and not reported",
            "mixed": rows, "mixed_summary": mixed_summary(rows, metric) if rows else None,
            "macs": {f"r{k}": jobs[f"flops:{chosen['tickets'][0]['name']}-r{k}"].result for k in (0, last)}}


# -- the plots --------------------------------------------------------------------------------------
def _plt() -> Any:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_cka(pair: str, by_round: dict[str, dict[str, Any]], last: int, timesteps: list[int],
             table: list[dict[str, Any]], file: Path) -> None:
    """Per module in forward order: weights' CKA, activations' CKA at each timestep, Jaccard; the ticket
    against the dense reference (round 0), rho and p of each in its legend."""
    plt = _plt()
    ticket, dense = by_round.get(f"r{last}"), by_round.get("r0")
    panels = ["weights", *(f"t{t}" for t in timesteps), "jaccard"]
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 2.3 * len(panels)), sharex=True)
    stats = {r["mode"]: r for r in table if r["pair"] == pair}
    ref = ticket or dense
    if ref is None:
        plt.close(fig)
        return
    n = len(ref["modules"])

    def label(what: str, mode: str, dense_ref: bool) -> str:
        r = stats.get(mode, {})
        rho, p = r.get("dense_rho" if dense_ref else "rho"), r.get("dense_p" if dense_ref else "p")
        return f"{what} (rho {rho:+.2f}, p {p:.2g})" if rho is not None else what

    for ax, panel in zip(axes, panels):
        kinds = [("weights", "weights")] if panel == "weights" else [("jaccard", "jaccard")] if panel == "jaccard" \
            else [(f"linear@{panel}", "linear"), (f"rbf@{panel}", "RBF")]
        for mode, name in kinds:
            for doc, tag, style in ((ticket, f"tickets r{last}", "-"), (dense, "dense r0", "--")):
                if doc is None or (panel == "jaccard" and doc is dense):
                    continue
                ys = profile(doc, mode)
                ax.plot(range(n), [math.nan if y is None else y for y in ys], style, marker=".", ms=3, lw=1.2,
                        label=label(f"{name}, {tag}", mode, doc is dense))
        if panel == "jaccard" and ticket is not None:
            rows = sorted(ticket["modules"], key=lambda r: r["position"])
            ax.plot(range(n), [r["jaccard_random"] for r in rows], ":", color="gray", label="two random masks")
        ax.set_ylabel(panel if panel in ("weights", "jaccard") else f"activations {panel.replace('t', 't=')}", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="lower left", ncol=2)
    groups = [r["group"] for r in sorted(ref["modules"], key=lambda r: r["position"])]
    starts = [i for i, g in enumerate(groups) if i == 0 or g != groups[i - 1]]
    axes[-1].set_xticks(starts)
    axes[-1].set_xticklabels([groups[i] for i in starts], rotation=60, ha="right", fontsize=6)
    axes[-1].set_xlabel("pruned module, forward order (ticks: the first of each module group)")
    fig.suptitle(f"{pair}: debiased CKA (Kornblith, with the square root) and mask Jaccard per module", fontsize=10)
    fig.tight_layout()
    fig.savefig(file, dpi=120)
    plt.close(fig)


def plot_rank(table: list[dict[str, Any]], file: Path) -> None:
    """Spearman's rho of each mode's profile, per pair, tickets and dense; filled where p < alpha."""
    plt = _plt()
    from matplotlib.patches import Patch
    mode_names = list(dict.fromkeys(r["mode"] for r in table))
    pairs = list(dict.fromkeys(r["pair"] for r in table))
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / (2 * len(pairs))
    handles: list[Any] = []
    for i, pair in enumerate(pairs):
        for j, (tag, name) in enumerate((("", "tickets"), ("dense_", "dense r0"))):
            rows = {r["mode"]: r for r in table if r["pair"] == pair}
            xs = [m + (2 * i + j) * width - 0.4 + width / 2 for m in range(len(mode_names))]
            ys = [rows[m][f"{tag}rho"] if rows[m][f"{tag}rho"] is not None else math.nan for m in mode_names]
            sig = [rows[m][f"{tag}p"] is not None and rows[m][f"{tag}p"] < rows[m].get("alpha", 0.05) for m in mode_names]
            color = f"C{2 * i + j}"
            # The legend takes the first bar's look, hatched and hollow or not: give it a filled patch.
            handles.append(Patch(facecolor=color, label=f"{pair}, {name}"))
            bars = ax.bar(xs, ys, width, color=color, edgecolor=color)
            for bar, s in zip(bars, sig):
                if not s:
                    bar.set_hatch("//")
                    bar.set_facecolor("none")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(range(len(mode_names)))
    ax.set_xticklabels(mode_names, rotation=30, fontsize=8)
    ax.set_ylabel("Spearman's rho with module position\n(< 0: upstream more alike; hatched: not significant)", fontsize=8)
    ax.legend(handles=handles, fontsize=7)
    fig.tight_layout()
    fig.savefig(file, dpi=120)
    plt.close(fig)


def plot_mixed(rows: list[dict[str, Any]], metric: str, n_samples: int, file: Path) -> None:
    """fd-lenet and KID against sampling MACs: each order's schedules between the two pure networks."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    pure = {r["order"]: r for r in rows if r["order"] in ("dense", "ticket")}
    for ax, key, name in ((axes[0], metric, metric.replace("_", "-")), (axes[1], "kid", "KID")):
        for order, marker in (("dense-first", "o"), ("ticket-first", "s")):
            pts = sorted([r for r in rows if r["order"] == order] + list(pure.values()), key=lambda r: r["macs"])
            pts = [r for r in pts if r.get(key) is not None]
            ax.plot([r["macs"] / 1e9 for r in pts], [r[key] for r in pts], marker=marker, ms=5, label=order)
            for r in pts:
                if r["switch"] is not None:
                    ax.annotate(str(r["switch"]), (r["macs"] / 1e9, r[key]), fontsize=6, textcoords="offset points",
                                xytext=(3, 3))
        for order, color in (("dense", "k"), ("ticket", "tab:red")):
            if order in pure and pure[order].get(key) is not None:
                ax.scatter([pure[order]["macs"] / 1e9], [pure[order][key]], marker="*", s=140, color=color, zorder=5,
                           label=f"all {order}")
        ax.set_xlabel("theoretical sampling MACs per image (G; sparse, fvcore)")
        ax.set_ylabel(f"{name} ({n_samples} samples; lower is better)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_title("switch timestep annotated; t >= switch: the first network", fontsize=8)
    fig.tight_layout()
    fig.savefig(file, dpi=130)
    plt.close(fig)


def table_md(result: dict[str, Any], study: dict[str, Any]) -> str:
    """The rank-correlation table, the claim per mode and the mixed-sampling table, in Markdown."""
    def num(v: Any, fmt: str) -> str:
        return "" if v is None else format(v, fmt)

    lines = [f"Spearman's rho of per-module CKA (Jaccard) against module position, tickets at round "
             f"{result['plan']['last_round']} and the dense networks at round 0 (alpha {study['alpha']}; rho < 0: "
             "upstream more alike). CKA is Kornblith's, with the square root, debiased; not the paper's formula.", "",
             "| pair | mode | rho | p | n | trend | mean | dense rho | dense p | dense trend | dense mean |",
             "|---|---|---:|---:|---:|---|---:|---:|---:|---|---:|"]
    for r in result["rank_table"]:
        lines.append(f"| {r['pair']} | {r['mode']} | {num(r['rho'], '+.3f')} | {num(r['p'], '.2g')} | {num(r['n'], 'd')} "
                     f"| {r['trend'] or ''} | {num(r['mean'], '.3f')} | {num(r['dense_rho'], '+.3f')} "
                     f"| {num(r['dense_p'], '.2g')} | {r['dense_trend'] or ''} | {num(r['dense_mean'], '.3f')} |")
    lines += ["", "| mode | the claim | falls for | rises for | dense falls for |", "|---|---|---|---|---|"]
    for mode, c in result["claim"].items():
        lines.append(f"| {mode} | {c['status']} | {', '.join(c['falls'])} | {', '.join(c['rises'])} "
                     f"| {', '.join(c['dense_falls'])} |")
    metric = study["evaluator"].replace("-", "_")
    if result["mixed"]:
        lines += ["", f"| schedule | dense steps | ticket steps | sampling MACs (G) | of dense | {metric} | KID |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for r in result["mixed"]:
            kid = "" if r["kid"] is None else f"{r['kid']:.4g} ± {r['kid_std']:.2g}" if r["kid_std"] is not None \
                else f"{r['kid']:.4g}"
            lines.append(f"| {r['schedule']} | {r['dense_steps']} | {r['ticket_steps']} | {r['macs'] / 1e9:.2f} "
                         f"| {r['macs_fraction_of_dense']:.3f} | {num(r[metric], '.2f')} | {kid} |")
        summary = result["mixed_summary"]
        lines += ["", f"Better order for its MACs: {summary['better_order']} (schedules below the other order's curve: "
                      f"{summary['wins']}); better than the pure ticket: {', '.join(summary['beat_ticket']) or 'none'}; "
                      f"at least as good as the pure dense network: {', '.join(summary['dominate_dense']) or 'none'}; "
                      f"below the line between the pure networks: {', '.join(summary['below_chord']) or 'none'}; "
                      f"Pareto front: {', '.join(summary['pareto'])}."]
    return "\n".join(lines) + "\n"


# -- the command ----------------------------------------------------------------------------------
def print_plan(jobs: list[Job], chosen: dict[str, Any], proj: dict[str, Any]) -> None:
    print(f"trajectories: rounds 0-{chosen['last_round']} ({100 * chosen['planned_sparsity'][-1]:.2f}%), "
          f"{', '.join(t['name'] for t in chosen['tickets'])}; CKA pairs {', '.join(chosen['pairs'])}; "
          f"{len(chosen['schedules'])} sampling schedules")
    ends, uncut = proj["ends"], proj["uncut_ends"]
    for job in jobs:
        needs = ", ".join([f"{Path(p).name} r{k}" for p, k in job.needs_rounds] + job.needs_jobs)
        when = f"ends at {ends[job.id] / 60:5.1f} min" if job.id in ends else \
            f"CUT (uncut it would end at {uncut[job.id] / 60:.1f} min)"
        span = f" {job.steps} steps" if job.kind == "run" else ""
        print(f"  {job.id:34s} {job.kind:5s} {when}{span}" + (f" after {needs}" if needs else ""))
    print(f"projected end, uncut: {proj['uncut_end_s'] / 60:.1f} min; with the cuts below: "
          f"{proj['end_s'] / 60:.1f} min of the {proj['budget_s'] / 60:.0f} min budget"
          + ("" if proj["fits"] else " (STILL OVER: the script cuts more as it runs)"))
    for c in proj["cuts"]:
        print(f"  cut {c['job']}: the plan would end at {c['projected_end_s'] / 60:.1f} min")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = study_parser(__doc__).parse_args(argv)
    run_cfg, study, out = read_run(args, STUDY_KEYS)
    jobs, chosen = make_plan(run_cfg, study, out)
    check_cut_order(args, study, jobs, [j for j in jobs if j.kind == "mixed"], "sampling schedule")
    proj = dry_run(jobs, study)
    if args.plan:
        print_plan(jobs, chosen, proj)
        return {"plan": chosen, "projection": proj}
    (out / "results").mkdir(parents=True, exist_ok=True)
    mps = not args.no_mps and start_mps(out)
    log = open(out / "results" / "part3.log", "a")
    sched = Part3Scheduler(jobs, {**study, "log-dir": str(out / "results")}, study["train-workers"], log,
                           first_round_of=jobs[0].id, handlers=HANDLERS)
    sched.say(f"plan: {sum(j.kind == 'run' for j in jobs)} trajectories to round {chosen['last_round']}, "
              f"{sum(j.kind == 'cka' for j in jobs)} CKA cells, {sum(j.kind == 'mixed' for j in jobs)} sampling "
              f"schedules; projected {proj['uncut_end_s'] / 60:.1f} min uncut at the TOML's rates; MPS {'on' if mps else 'off'}")
    try:
        sched.run(run_cfg.precision, run_cfg.compile)
    finally:
        sched.close()
        if mps:
            stop_mps()
    result = collect(sched.jobs, chosen, study)
    result.update(run_facts(args, study, run_cfg, sched, mps))
    result.update({"plan": chosen, "sparsity": {n: _sparsities(Path(f)) for n, f in chosen["folders"].items()},
                   "projection_at_start": {k: proj[k] for k in ("uncut_end_s", "end_s", "cuts", "budget_s")}})
    results = out / "results"
    (results / "part3.json").write_text(json.dumps(result, indent=1, default=str))
    (results / "part3_table.md").write_text(table_md(result, study))
    for pair, by_round in result["cka"].items():
        if by_round:
            plot_cka(pair, by_round, chosen["last_round"], study["cka-timesteps"], result["rank_table"],
                     results / f"part3_cka_{pair}.png")
    if any(r["rho"] is not None for r in result["rank_table"]):
        plot_rank(result["rank_table"], results / "part3_rank.png")
    if result["mixed"]:
        plot_mixed(result["mixed"], study["evaluator"].replace("-", "_"), study["samples"], results / "part3_mixed.png")
    sched.say(f"wrote {results} ({time.time() - sched.t0:.0f} s)")
    return result


def _sparsities(run: Path) -> dict[str, float]:
    """Each finished round's sparsity, from the run's records."""
    from ticketforge.store import RunStore

    store = RunStore(run)
    return {f"r{k}": store.round_record(k)["sparsity"] for k in (store.finished_rounds() if store.exists() else [])}


if __name__ == "__main__":
    main()

"""A markdown report of one or more runs, with PNG plots.

Writes ``DIR/report.md`` (a per-round table: sparsity, parameters, theoretical MACs, stored scores),
``DIR/report.json`` (the same data), ``score-<evaluator>.png`` (score vs sparsity, one line per run),
``cka.png`` (weight CKA per module) and a copy of each round's ``samples.png`` where the run has one.
A run with branches (``ticketforge branch``) also gets a table of them and, per run,
``<i>-<run>-branches-<metric>.png``: the ticket's rounds against its branches at each sparsity, for the
final training loss and each stored score.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .comparison import compare_rounds
from .errors import UsageError
from .metrics.flops import human_macs
from .plots import plot_branches, plot_cka, plot_scores, require_matplotlib
from .scores import stored_scores
from .store.atomic import atomic_write_bytes


def summarize_run(run: str, *, flops: bool = True, device: str = "cpu") -> dict[str, Any]:
    """Config and per-round rows of a run; MACs are counted with one trace, then re-read densities."""
    from .api import load_round
    from .metrics.flops import count_macs, flops_report
    from .store import RunStore
    from .store.run_store import round_dir

    store = RunStore(run)
    config = store.read_config()
    rows, count = [], None
    for k in store.finished_rounds():
        record = store.round_record(k)
        metrics = record.get("metrics", {})
        row: dict[str, Any] = {"round": k, "sparsity": record["sparsity"],
                               "nonzero_params": metrics.get("nonzero_params"),
                               "total_params": metrics.get("total_params"), "loss": metrics.get("loss"),
                               "scores": stored_scores(metrics)}
        if flops:
            loaded = load_round(run, k, ema=False, device=device)
            if count is None:
                count = count_macs(loaded.network, loaded.spec.example_inputs(1, device))
            doc = flops_report(loaded.network, (), count=count)
            row.update(dense_macs=doc["dense_macs"], sparse_macs=doc["sparse_macs"], other_macs=doc["other_macs"])
        samples = store.path / round_dir(k) / "samples.png"
        row["samples"] = str(samples) if samples.is_file() else None
        rows.append(row)
    return {"run": str(run), "config": config, "rounds": rows, "branches": summarize_branches(run, rows, count,
                                                                                              device=device)}


def summarize_branches(run: str, rounds: list[dict[str, Any]], count: Any = None, *,
                       device: str = "cpu") -> list[dict[str, Any]]:
    """One row per branch of ``run``: what it is, its sparsity, final loss and stored scores (MACs with ``count``)."""
    from .api import load_round
    from .branches import list_branches
    from .metrics.flops import flops_report

    sparsity_of_round = {r["round"]: r["sparsity"] for r in rounds}
    rows = []
    for b in list_branches(run):
        metrics = b.record.get("metrics", {}) if b.record else {}
        row: dict[str, Any] = {
            "name": b.name, "kind": b.kind, "of_round": b.of_round, "masks": b.branch.get("masks"),
            "start": b.branch.get("start"), "rewind_fraction": b.branch.get("rewind_fraction"),
            "steps": b.steps, "finished": b.finished, "status": b.status,
            "round_sparsity": sparsity_of_round.get(b.of_round) if b.of_round is not None else None,
            "sparsity": b.record["sparsity"] if b.record else None, "loss": metrics.get("loss"),
            "nonzero_params": metrics.get("nonzero_params"), "scores": stored_scores(metrics)}
        if count is not None and b.finished:
            loaded = load_round(b.path, 0, ema=False, device=device)
            doc = flops_report(loaded.network, (), count=count)
            row.update(dense_macs=doc["dense_macs"], sparse_macs=doc["sparse_macs"])
        rows.append(row)
    return rows


def _fmt(value: float | None, spec: str) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def markdown_table(summary: dict[str, Any], evaluators: list[str]) -> list[str]:
    has_macs = any("dense_macs" in r for r in summary["rounds"])
    head = ["round", "sparsity", "kept weights"] + (["dense MACs", "sparse MACs", "reduction"] if has_macs else [])
    head += [f"{name}" for name in evaluators]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in summary["rounds"]:
        cells = [str(r["round"]), f"{100 * r['sparsity']:.2f}%", _fmt(r["nonzero_params"], ",")]
        if has_macs:
            factor = r["dense_macs"] / r["sparse_macs"] if r.get("sparse_macs") else None
            cells += [human_macs(r["dense_macs"]), human_macs(r["sparse_macs"]), _fmt(factor, ".2f") + "x"]
        for name in evaluators:
            s = r["scores"].get(name)
            cells.append(f"{s['key']} {s['value']:.3f} (n={s['n_samples']}, {s['sampler']} {s['steps']})" if s else "")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def branch_table(summary: dict[str, Any], evaluators: list[str]) -> list[str]:
    """Markdown rows: each branch next to the round it branches from (final loss and stored scores of both)."""
    by_round = {r["round"]: r for r in summary["rounds"]}
    head = ["round", "round sparsity", "branch", "masks", "start", "steps", "sparsity", "final loss", "round's loss"]
    for name in evaluators:
        head += [name, f"round's {name}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for b in summary["branches"]:
        parent = by_round.get(b["of_round"], {})
        start = str(b["start"]) + (f" @ {b['rewind_fraction']:g}" if b["rewind_fraction"] is not None else "")
        cells = [str(b["of_round"]), _fmt(100 * b["round_sparsity"], ".2f") + "%" if b["round_sparsity"] is not None
                 else "", f"`{b['name']}`", str(b["masks"]), start, _fmt(b["steps"], "d")]
        if not b["finished"]:
            cells += [b["status"], "", _fmt(parent.get("loss"), ".4f")] + ["", ""] * len(evaluators)
        else:
            cells += [f"{100 * b['sparsity']:.2f}%", _fmt(b["loss"], ".4f"), _fmt(parent.get("loss"), ".4f")]
            for name in evaluators:
                mine, theirs = b["scores"].get(name), parent.get("scores", {}).get(name)
                cells += [f"{mine['key']} {mine['value']:.3f} (n={mine['n_samples']})" if mine else "",
                          f"{theirs['value']:.3f}" if theirs else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def branch_series(summary: dict[str, Any], metric: str) -> dict[str, list[tuple[float, float]]]:
    """(sparsity %, value) per line of the branch plot: ``ticket (rounds)``, then one per branch kind.

    ``metric`` is ``loss`` (final training loss) or an evaluator name (its headline score). A branch
    sits at the sparsity of the round it branches from, so a dense (``none``) control is drawn next
    to the ticket it is a same-budget reference for.
    """
    def value(row: dict[str, Any]) -> float | None:
        if metric == "loss":
            return row.get("loss")
        score = row.get("scores", {}).get(metric)
        return score["value"] if score else None

    series: dict[str, list[tuple[float, float]]] = {}
    ticket = [(100 * r["sparsity"], v) for r in summary["rounds"] if (v := value(r)) is not None]
    if ticket:
        series["ticket (rounds)"] = sorted(ticket)
    for b in summary["branches"]:
        v = value(b) if b["finished"] else None
        if v is not None and b["round_sparsity"] is not None:
            series.setdefault(b["kind"], []).append((100 * b["round_sparsity"], v))
    return {k: sorted(v) for k, v in series.items()}


def cka_series(summaries: list[dict[str, Any]], device: str) -> dict[str, list[dict[str, Any]]]:
    """Weight CKA per module: last round vs round 0 for one run; else run 1's last vs each other's."""
    from .api import load_round
    first = summaries[0]
    if len(summaries) == 1:
        rounds = [r["round"] for r in first["rounds"]]
        if len(rounds) < 2:
            return {}
        a, b = load_round(first["run"], rounds[-1], device=device), load_round(first["run"], rounds[0], device=device)
        return {f"round {a.round} vs {b.round}": compare_rounds(a, b)["modules"]}
    a = load_round(first["run"], None, device=device)
    series = {}
    for other in summaries[1:]:
        b = load_round(other["run"], None, device=device)
        try:
            series[f"{Path(first['run']).name} vs {Path(other['run']).name}"] = compare_rounds(a, b)["modules"]
        except UsageError:  # another model: nothing to compare module by module
            continue
    return series


def write_report(runs: list[str], out: str | Path, *, flops: bool = True, cka: bool = True,
                 device: str = "cpu") -> Path:
    """Write the report of ``runs`` into the folder ``out`` (made if missing); returns the markdown file."""
    import json
    require_matplotlib()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summaries = [summarize_run(run, flops=flops, device=device) for run in runs]
    evaluators = sorted({name for s in summaries for r in [*s["rounds"], *s["branches"]] for name in r["scores"]})
    md = ["# ticketforge report", ""]
    for i, s in enumerate(summaries):
        cfg, name = s["config"], Path(s["run"]).name
        preset = f" ({cfg['preset']})" if cfg.get("preset") else ""
        md += [f"## {name}", "", f"`{s['run']}`: {cfg.get('model')}{preset} on {cfg.get('dataset')}, "
               f"schedule {cfg.get('schedule')} (p={cfg.get('p')}, q={cfg.get('q')}), scorer {cfg.get('scorer')}, "
               f"rewind {cfg.get('rewind')}, baseline {cfg.get('baseline')}, seed {cfg.get('seed')}", ""]
        md += markdown_table(s, evaluators) + [""]
        if s["branches"]:
            md += [f"### Branches of {name}", "", "Each branch retrains the masks of its round (ticket), random "
                   "positions with the same per-tensor counts (random) or no masks (none) from the start shown, "
                   "for the steps shown; 'round's' columns are the ticket's own values.", ""]
            md += branch_table(s, evaluators) + [""]
            plots = {}
            for metric in ["loss", *evaluators]:
                series = branch_series(s, metric)
                if not any(label != "ticket (rounds)" for label in series):
                    continue
                ylabel = "final training loss" if metric == "loss" else next(
                    r["scores"][metric]["key"] for r in [*s["rounds"], *s["branches"]] if metric in r["scores"])
                target = f"{i}-{name}-branches-{metric}.png"
                plot_branches(series, ylabel, out / target, f"{name}: ticket vs branches ({ylabel})")
                plots[target] = series
                md += [f"![{ylabel}: ticket vs branches]({target})", ""]
            if len(plots) > 1:
                md += ["A branch's score compares with its round's only at equal featurizer, sample count, sampler "
                       "and steps (the table gives n); score them together with `ticketforge eval RUN --all "
                       "--branches`.", ""]
            s["branch_plots"] = plots
        for r in s["rounds"]:
            if r["samples"]:
                target = f"{i}-{name}-round-{r['round']:04d}-samples.png"
                atomic_write_bytes(out / target, Path(r["samples"]).read_bytes())
                md += [f"Round {r['round']} ({100 * r['sparsity']:.2f}% sparse): ![samples]({target})", ""]
    if flops:
        md += ["MACs are theoretical, per image, counted by fvcore (1 MAC = 1 multiply-add). Sparse MACs skip "
               "pruned Conv/Linear weights only; attention, norms and upsampling stay dense. Unstructured sparsity "
               "gives no wall-clock speed-up on GPUs.", ""]
    for name in evaluators:
        plot_scores(summaries, name, out / f"score-{name}.png")
        shas = sorted({r["scores"][name].get("featurizer_sha256") or "" for s in summaries for r in s["rounds"]
                       if name in r["scores"]})
        md += [f"![{name} vs sparsity](score-{name}.png)", "",
               f"{name}: featurizer sha256 {', '.join(x[:16] for x in shas if x) or 'not recorded'}. Scores compare "
               f"only at equal featurizer, sample count, sampler and steps.", ""]
    if cka:
        cka_rows = cka_series(summaries, device)
        if cka_rows:
            plot_cka(cka_rows, out / "cka.png", title="weight CKA per module (debiased, linear)")
            md += ["## CKA per module", "", "![CKA per module](cka.png)", "",
                   "Debiased linear CKA of each module's weight rows, upstream to downstream; "
                   "dotted: mask Jaccard.", ""]
    atomic_write_bytes(out / "report.json", json.dumps(summaries, indent=2, default=str).encode())
    path = out / "report.md"
    atomic_write_bytes(path, "\n".join(md).encode())
    return path

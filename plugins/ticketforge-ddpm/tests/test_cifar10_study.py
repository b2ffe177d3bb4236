"""experiments/study/cifar10.py (issue 20): the plan it makes on the cifar10 preset, its projection and
cut order, its live projection from measured rates, the cost of a faithful reproduction, and one whole
tiny part on a synthetic JPEG image folder in its own processes."""

from __future__ import annotations

import json
import subprocess
import tarfile
import time

import numpy as np
import pytest
from PIL import Image
from test_experiments import STUDY, load_script, study_command

from ticketforge import RunConfig

TOML = STUDY / "cifar10.toml"


def _cifar10():
    return load_script(STUDY / "cifar10.py")


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    """``cifar10.py cifar10.toml --plan``: the job graph and projections of the real part (no training)."""
    c10 = _cifar10()
    out = tmp_path_factory.mktemp("plan")
    return c10, c10.main([str(TOML), "--out", str(out), "--plan"]), out


def _study(c10):
    data, study = c10.read_study(TOML, [], [], c10.STUDY_KEYS)
    return RunConfig.from_dict(data), study


def test_cifar10_runs_the_issues_settings():
    c10 = _cifar10()
    cfg, study = _study(c10)
    assert (cfg.preset, cfg.dataset, cfg.schedule, cfg.p, cfg.q, cfg.seed) == ("cifar10", "cifar10", "incremental",
                                                                               20.0, 1.0, 0)
    assert (cfg.batch_size, cfg.precision, cfg.compile, cfg.rewind, cfg.tau_frac) == (128, "bf16", True, "tau", 0.05)
    assert cfg.rounds >= 3 and cfg.warmup_steps < cfg.steps_per_round
    assert cfg.data_root.endswith(".data/cifar10-jpeg")
    assert (study["evaluator"], study["samples"], study["sample-steps"]) == ("fd-resnet", 10000, 50)
    assert study["budget-minutes"] == 22 and study["train-rates"][0] == 45.5


def test_cifar10_plan_fits_the_budget_at_the_tomls_rates(plan):
    """Rounds 0-3 (three prunings, 72.6%) and three branches of the same steps end with margin inside the
    22 minutes at the TOML's rates, nothing cut; each slower rate ends later."""
    _, doc, _ = plan
    chosen, proj = doc["plan"], doc["projection"]
    assert chosen["last_round"] == 3 and chosen["planned_sparsity"][3] == pytest.approx(0.7262, abs=5e-4)
    assert proj["fits"] and proj["cuts"] == [] and proj["uncut_end_s"] <= proj["budget_s"] - 120
    assert proj["budget_s"] == 22 * 60
    ends = [p["uncut_end_s"] for p in [proj, *doc["slower"]]]
    assert ends == sorted(ends) and ends[0] < ends[-1]
    assert all(p["fits"] for p in doc["slower"])  # the cut order brings every one of them inside the budget
    # the dense and the last round are scored while the run trains on; the part ends after the last branch
    e = proj["ends"]
    assert e["score:r0"] < e["run"] and e["run"] < e["ticket-reinit@r3"] < e["score:ticket-reinit@r3"] < e["end"]


def test_cifar10_job_graph_has_the_ticket_its_controls_and_their_scores(plan, tmp_path):
    c10 = plan[0]
    cfg, study = _study(c10)
    jobs, chosen = c10.make_plan(cfg, study, tmp_path)
    by_id = {j.id: j for j in jobs}
    run = str(tmp_path / "seed0")
    assert by_id["run"].steps == 4 * cfg.steps_per_round and by_id["run"].args["config"]["out"] == run
    controls = {"ticket-reinit@r3": ("ticket", "reinit", 3), "random-tau@r3": ("random", "tau", 3),
                "none-tau@r0": ("none", "tau", 0)}
    for jid, (masks, start, k) in controls.items():
        job = by_id[jid]
        assert (job.kind, job.args["masks"], job.args["start"], job.args["round"]) == ("branch", masks, start, k)
        assert job.steps == cfg.steps_per_round and job.needs_rounds == [(run, k)]  # the same steps as a round
        assert by_id[f"score:{jid}"].needs_jobs == [jid] and by_id[f"flops:{jid}"].needs_jobs == [jid]
    for k in range(4):
        score = by_id[f"score:r{k}"]
        assert score.args == {"path": run, "round": k, "store": False} and score.needs_rounds == [(run, k)]
        assert by_id[f"flops:r{k}"].needs_rounds == [(run, k)]
    assert [j.id for j in jobs if j.kind == "branch"] == list(controls)  # what is cut first trains last
    assert [j.kind for j in jobs].index("flops") > max(i for i, j in enumerate(jobs) if j.kind == "score")
    assert chosen["branches"]["none-tau@r0"] == {"control": "none-tau", "of_round": 0}


def test_cifar10_cut_order_cuts_cells_never_a_sample_count(plan):
    """At slower training the dry run cuts jobs of ``cut-order`` in its order (a branch with its score and
    count); the sample count, the run, the dense and last-round scores and the reinit control stay."""
    c10 = plan[0]
    cfg, study = _study(c10)
    jobs, _ = c10.make_plan(cfg, study, c10.Path("/tmp/x"))
    before = {j.id: dict(j.args) for j in jobs}
    proj = c10.dry_run(jobs, study, 0.5)
    cut = [c["job"] for c in proj["cuts"]]
    assert cut and cut == study["cut-order"][:len(cut)]
    gone = {j for c in proj["cuts"] for j in (c["job"], *c["with"])}
    assert "none-tau@r0" in cut and {"score:none-tau@r0", "flops:none-tau@r0"} <= gone
    assert not gone & {"run", "score:r0", "score:r3", "ticket-reinit@r3", "score:ticket-reinit@r3"}
    assert set(study["cut-order"]) <= {j.id for j in jobs if j.kind in ("branch", "score")}
    assert study["samples"] == 10000 and {j.id: j.args for j in jobs} == before  # the plan's jobs untouched
    assert proj["fits"] and proj["end_s"] < proj["uncut_end_s"]


def test_cifar10_timeline_shares_the_gpu():
    """A training of 1000 steps at 100 steps/s beside a 5-second score: both at half speed until the score
    ends (at 10 s, 500 steps made), then the training alone (15 s). A MAC count takes no GPU."""
    c10 = _cifar10()
    Job = c10.Job
    study = {"train-rates": [100.0, 50.0], "start-seconds": 0.0, "data-seconds": 0.0, "compile-seconds": 0.0,
             "round-seconds": 0.0, "branch-seconds": 0.0, "score-seconds": 5.0, "scorer-data-seconds": 0.0,
             "featurizer-seconds": 0.0, "sampler-compile-seconds": 0.0, "flops-seconds": 3.0,
             "figures-seconds": 1.0, "report-seconds": 2.0}
    cfg = {"steps_per_round": 1000, "out": "run"}
    jobs = {j.id: j for j in [Job("run", "run", {"config": cfg}, steps=1000),
                              Job("score", "score", {}), Job("count", "flops", {})]}
    ends = c10.timeline(jobs, list(jobs), study, 1, warm=True)
    assert ends["score"] == pytest.approx(10.0) and ends["run"] == pytest.approx(15.0)
    assert ends["count"] == pytest.approx(13.0) and ends["end"] == pytest.approx(18.0)
    assert c10.timeline(jobs, list(jobs), study, 1, warm=True, train_scale=0.5)["run"] == pytest.approx(25.0)
    # a score that waits for round 0 starts when that round ends; the first score trains the featurizer
    jobs["score"].needs_rounds = [("run", 0)]
    study = {**study, "featurizer-seconds": 4.0}
    ends = c10.timeline(jobs, list(jobs), study, 1)
    assert ends["run"] == pytest.approx(10.0) and ends["score"] == pytest.approx(19.0)  # 10 + 4 + 5 alone
    assert c10.training_rate({"train-rates": [45.5]}, 2, 1) == pytest.approx(45.5 / 3)  # the aggregate stays


def _sampled(c10, study, jobs, rate_of, start=100):
    """A scheduler (no worker processes) whose one training ran ``rate_of(beside)`` steps/s for 100 s from
    step ``start`` of round 1, with a score beside it in the first half."""
    sched = object.__new__(c10.CifarScheduler)
    now = time.time()
    sched.jobs, sched.order, sched.study, sched.t0 = {j.id: j for j in jobs}, [j.id for j in jobs], study, now - 400
    sched.first_round_s, sched.scale, sched.compiled = 150.0, None, {0}
    run = sched.jobs["run"]
    run.state, run.rounds_done, run.started = "running", 1, now - 300
    sched.samples, steps = [], run.args["config"]["steps_per_round"] + start
    for i in range(51):
        t = now - 100 + 2 * i
        sched.samples.append((t, {0: ("run", int(steps))}, 1, int(i < 25)))
        steps += 2 * rate_of(i < 25)
    run.progress = int(steps)
    sched.workers = [{"kind": "train", "job": "run", "rate": []}, {"kind": "score", "job": None, "rate": []}]
    return sched


def test_cifar10_live_projection_tells_a_shared_gpu_from_a_slow_one(plan, tmp_path):
    """A training at half the TOML's rate while a score runs beside it is on time (scale 1); at half the
    rate with the GPU to itself it is slow (scale 0.5), and the projection is the timeline at that scale."""
    c10 = plan[0]
    cfg, study = _study(c10)
    jobs, _ = c10.make_plan(cfg, study, tmp_path)
    rate = study["train-rates"][0]
    shared = _sampled(c10, study, jobs, lambda beside: rate / 2 if beside else rate)
    assert shared.train_scale() == pytest.approx(1.0, abs=0.02)
    into_round_2 = _sampled(c10, study, [c10.dataclasses.replace(j) for j in jobs],
                            lambda beside: rate / 2 if beside else rate, start=cfg.steps_per_round - 2000)
    assert into_round_2.train_scale() == pytest.approx(1.0, abs=0.02)  # the round's end is left out, not a stall
    slow = _sampled(c10, study, [c10.dataclasses.replace(j) for j in jobs], lambda beside: rate / 4 if beside else rate / 2)
    assert slow.train_scale() == pytest.approx(0.5, abs=0.02)
    ends = {s: sched.projection() for s, sched in (("shared", shared), ("slow", slow))}
    assert ends["slow"] > ends["shared"] + 4 * cfg.steps_per_round / rate  # over 5 rounds of steps left, twice as long
    measured = shared.measured()
    assert measured["train_steps_per_s_alone"] == pytest.approx(rate, rel=0.05)
    assert measured["train_steps_per_s_beside_a_score"] == pytest.approx(rate / 2, rel=0.05)
    stalled = _sampled(c10, study, [c10.dataclasses.replace(j) for j in jobs], lambda beside: 0.0)
    assert stalled.train_scale() == c10.MIN_SCALE and stalled.projection() > 2 * 3600  # no step: far over
    fresh = _sampled(c10, study, [c10.dataclasses.replace(j) for j in jobs], lambda beside: rate)
    fresh.first_round_s = None
    assert fresh.projection() is None  # nothing is cut before the first round has run


def test_cifar10_faithful_reproduction_costs_and_the_extrapolated_sparsity(plan):
    """The per-group extrapolation repeats the schedule's planned rounds; at 45.5 steps/s a round of 800k
    steps takes 4.88 GPU-hours: 26 for the paper's 25 prunings, 2 x (13 rounds to 99% + 2 controls at
    each of 90/95/99%) to decide its claim."""
    c10, doc, _ = plan
    chosen, est = doc["plan"], doc["faithful"]
    assert chosen["extrapolated_sparsity"][:4] == pytest.approx(chosen["planned_sparsity"], abs=2e-4)
    per_round = 800_000 / 45.5 / 3600
    assert est["paper"]["trainings"] == 26 and est["paper"]["training_gpu_hours"] == pytest.approx(26 * per_round)
    decide = est["decide_90_99"]
    assert decide["last_round"] == 12 and decide["last_sparsity"] >= 0.99
    assert [c["round"] for c in decide["cells"]] == [6, 7, 12] and decide["trainings"] == 2 * (13 + 2 * 3)
    assert decide["gpu_hours"] == pytest.approx(38 * per_round + 38 * _study(c10)[1]["score-seconds"] / 3600)


def test_extrapolated_sparsity_matches_the_schedule_on_the_tiny_preset():
    c10 = _cifar10()
    cfg = RunConfig(preset="tiny", schedule="incremental", p=30.0, q=2.0, rounds=6, steps_per_round=2)
    plan = c10.plan_rounds(cfg, 6)
    assert c10.extrapolate(plan, 6) == pytest.approx(plan.sparsity, abs=2e-3)


def write_jpeg_split(root, split, classes=("airplane", "cat", "ship"), per_class=12):
    """``root/split.tar.gz`` of ``split/<class>/NNNN.jpg`` 32x32 RGB files at JPEG quality 75, the layout
    of ../shared/data/cifar10-jpeg."""
    rng = np.random.default_rng(len(split))
    folder = root / "src" / split
    for c, name in enumerate(classes):
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = (rng.random((32, 32, 3)) * 60 + 60 * c).astype(np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{i:04d}.jpg", quality=75)
    with tarfile.open(root / f"{split}.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname=split)


def test_cifar10_runs_a_tiny_part_end_to_end(tmp_path):
    """The tiny preset (RGB, 32x32) on a synthetic JPEG copy of CIFAR-10: one training process and one
    scoring process run every job; the JSON has a row per scored network with its scores (stored in the
    records), MACs and weights kept; the controls keep the ticket's counts; the table and figures are
    written; the images are decoded once into the data cache."""
    from ticketforge.store import RunStore

    data = tmp_path / "data"
    for split in ("train", "test"):
        write_jpeg_split(data, split, per_class=12 if split == "train" else 3)
    out = tmp_path / "c10"
    sets = ['preset="tiny"', "model-options={in_channels=3, data_size=32}", "steps-per-round=4", "compile=false",
            'precision="auto"', f'data-root="{data}"', "batch-size=8", "warmup-steps=1", "log-every=2",
            "checkpoint-every=4", 'device="cpu"']
    study = ["samples=16", "sample-steps=2", "evaluator-options={max_steps=2, reference_samples=16, kid_subsets=2, "
             "kid_subset_size=8, batch_size=16}"]
    argv, env = study_command("cifar10.py", TOML, out, sets, study, tmp_path)
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = out / "results"
    doc = json.loads((results / "cifar10.json").read_text())
    assert {j: v["state"] for j, v in doc["jobs"].items() if v["state"] != "done"} == {}
    rows = {r["id"]: r for r in doc["rows"]}
    assert list(rows) == ["r0", "none-tau@r0", "r1", "r2", "r3", "ticket-reinit@r3", "random-tau@r3"]
    planned = doc["plan"]["planned_sparsity"]
    for r in rows.values():
        assert r["fd_resnet"] is not None and r["kid"] is not None and r["n_samples"] == 16 and r["steps"] == 2
        assert r["sparsity"] == pytest.approx(planned[r["round"]], abs=1e-12) and r["ema"] is True
        record = RunStore(out / r["folder"]).round_record(0 if "branches" in r["folder"] else r["round"])
        assert record["metrics"]["fd-resnet"]["fd_resnet"] == r["fd_resnet"]  # stored, the rounds' once the run was done
        assert r["sampling_sparse_macs"] == 2 * r["sparse_macs"] and r["nonzero_params"] <= r["params"]
        assert r["counted"] == f"{r['folder']} r{0 if 'branches' in r['folder'] else r['round']}"  # its own MACs
    ticket = rows["r3"]
    for control in ("ticket-reinit@r3", "random-tau@r3"):  # the ticket's per-tensor counts: its MACs exactly
        assert (rows[control]["kept_prunable"], rows[control]["sparse_macs"]) == (ticket["kept_prunable"],
                                                                                  ticket["sparse_macs"])
    assert rows["none-tau@r0"]["sparse_macs"] == rows["r0"]["dense_macs"] > ticket["sparse_macs"]
    assert {c["control"] for c in doc["comparisons"]} == {"ticket-reinit", "random-tau"}
    assert doc["mnist_finding"]["status"] in ("holds", "does not hold", "not decided")
    assert doc["faithful"]["paper"]["gpu_hours"] > 0 and "quality 75" in doc["data"]["note"]
    assert doc["cuts"] == [] and doc["measured"]["first_round_seconds"] > 0
    for name in ("cifar10_table.md", "cifar10_fd.png", "cifar10_samples.png", "cifar10_denoising.png", "cifar10.log"):
        assert (results / name).stat().st_size > 0, name
    assert "| ticket-reinit@r3 |" in (results / "cifar10_table.md").read_text()
    assert len(list((tmp_path / "cache" / "data").glob("cifar10-*.pt"))) == 1  # decoded once, for every training


# -- the figures and checks of a finished part ---------------------------------------------------------
def _row(id_, kind, rnd, sparsity, fd, kid, kid_std=0.004):
    return {"id": id_, "kind": kind, "round": rnd, "sparsity": sparsity, "fd_resnet": fd, "kid": kid,
            "kid_std": kid_std}


def _finished(rows):
    return {"evaluator": "fd-resnet", "rows": rows, "plan": {"last_round": 3}, "study": {"samples": 10000}}


NARROW = [_row("r0", "dense", 0, 0.0, 7.8, 0.080), _row("none-tau@r0", "none-tau", 0, 0.0, 7.7, 0.078),
          _row("r3", "ticket", 3, 0.726, 7.8, 0.076), _row("ticket-reinit@r3", "ticket-reinit", 3, 0.726, 8.7, 0.093),
          _row("random-tau@r3", "random-tau", 3, 0.726, 7.8, 0.075)]


def test_score_axes_are_logarithmic_only_over_a_wide_positive_span(monkeypatch, tmp_path):
    """Over 7-9 a log axis labels its ticks 7.25x10^0 (the 2026-12-03 run's first drawing): linear there; a
    KID below zero cannot go on a log axis; a span of 10x does."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c10 = _cifar10()
    assert not c10.log_axis([7.1, 8.7]) and not c10.log_axis([-0.001, 0.09]) and not c10.log_axis([])
    assert c10.log_axis([9.6, 320.0])
    figs, close = [], plt.close
    monkeypatch.setattr(plt, "close", figs.append)
    c10.plot_fd(NARROW, "fd_resnet", 10000, tmp_path / "narrow.png")
    wide = [{**r, "fd_resnet": r["fd_resnet"] * (40 if r["round"] else 1)} for r in NARROW]
    c10.plot_fd(wide, "fd_resnet", 10000, tmp_path / "wide.png")
    assert [ax.get_yscale() for f in figs for ax in f.axes] == ["linear", "linear", "log", "linear"]
    for f in figs:
        close(f)


def test_cifar10_checks_give_each_controls_margin_and_the_dense_pairs_gap(tmp_path, capsys):
    checks = load_script(STUDY / "cifar10_checks.py")
    (tmp_path / "cifar10.json").write_text(json.dumps(_finished(NARROW)))
    out = checks.main([str(tmp_path / "cifar10.json"), "--fd-png", str(tmp_path / "fd.png")])
    by = {m["vs"]: m for m in out["controls"]}
    assert set(by) == {"ticket-reinit@r3", "random-tau@r3"} and out["ticket"] == "r3"
    reinit = by["ticket-reinit@r3"]
    assert reinit["metric"] == pytest.approx(0.9) and reinit["metric_relative"] == pytest.approx(0.9 / 7.8)
    assert reinit["kid"] == pytest.approx(0.017) and reinit["kid_in_subset_stds"] == pytest.approx(0.017 / (0.004 * 2 ** 0.5))
    pair = out["dense_pair"]
    assert (pair["base"], pair["vs"]) == ("r0", "none-tau@r0") and pair["metric"] == pytest.approx(-0.1)
    assert "ticket-reinit@r3 minus r3: fd-resnet +0.900" in capsys.readouterr().out
    assert (tmp_path / "fd.png").stat().st_size > 0
    (tmp_path / "cut.json").write_text(json.dumps(_finished([r for r in NARROW if r["id"] != "r3"])))
    with pytest.raises(SystemExit, match="r3 has no score"):
        checks.main([str(tmp_path / "cut.json")])
    with pytest.raises(SystemExit, match="not a finished part's cifar10.json"):
        checks.main([str(tmp_path / "missing.json")])


def test_cifar10_checks_take_the_steady_rate_and_a_checkpoints_cost_from_the_train_logs(tmp_path):
    """The median interval is the steady rate (a slow interval beside a score does not move it); the
    intervals after a checkpoint step cost their extra seconds; round boundaries are not intervals."""
    checks = load_script(STUDY / "cifar10_checks.py")
    run, branch = tmp_path / "seed0", tmp_path / "seed0" / "branches" / "b"
    branch.mkdir(parents=True)
    rates = {100: 50.0, 200: 50.0, 300: 20.0, 400: 50.0, 500: 20.0}  # 300 and 500 hold the checkpoints after 200, 400
    lines = [{"round": r, "step": s, "steps_per_s": v} for r in (0, 1) for s, v in rates.items()]
    (run / "train_log.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    (branch / "train_log.jsonl").write_text(json.dumps({"round": 0, "step": 100, "steps_per_s": 10.0}) + "\n")
    got = checks.train_rates(run, 200)
    assert (got["logs"], got["intervals"], got["steady_steps_per_s"]) == (2, 11, 50.0)
    assert got["checkpoint_seconds"] == pytest.approx(100 / 20 - 100 / 50)
    with pytest.raises(SystemExit, match="no train_log.jsonl"):
        checks.train_rates(tmp_path / "empty", 200)


def test_cifar10_checks_reproduce_the_committed_rates_and_gpu_hours():
    """docs/results.md's CIFAR-10 rates and GPU-hours come from this command on the committed files."""
    checks = load_script(STUDY / "cifar10_checks.py")
    committed = STUDY.parents[1] / "docs" / "results" / "cifar10"
    out = checks.main([str(committed / "cifar10.json"), "--runs", str(committed / "runs" / "seed0")])
    assert round(out["rates"]["steady_steps_per_s"], 1) == 43.8 and round(out["rates"]["checkpoint_seconds"], 1) == 2.7
    cost = out["faithful_at_steady"]
    assert (cost["paper"]["trainings"], round(cost["paper"]["gpu_hours"])) == (26, 132)
    assert (cost["decide_90_99"]["trainings"], round(cost["decide_90_99"]["gpu_hours"])) == (38, 193)

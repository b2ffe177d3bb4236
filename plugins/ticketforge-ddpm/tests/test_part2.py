"""experiments/study/part2.py (issue 18): the plan it makes on the mnist preset, its projection and cut
order, its comparison with part 1, and one whole tiny part in its own processes, run twice."""

from __future__ import annotations

import json
import math
import os
import subprocess

import pytest
from test_experiments import STUDY, load_script, study_command

from ticketforge import Engine, RunConfig, TicketforgeError

TOML = STUDY / "schedules.toml"
read_study = load_script(STUDY / "common.py").read_study


def _part2():
    return load_script(STUDY / "part2.py")


@pytest.fixture(scope="module")
def mnist_plan(tmp_path_factory):
    """``part2.py schedules.toml --plan``: the job graph and projection of the real study (no training)."""
    part2 = _part2()
    out = tmp_path_factory.mktemp("plan")
    return part2, part2.main([str(TOML), "--out", str(out), "--plan"]), out


def test_part2_runs_with_part1s_settings():
    """The trajectories are part 1's run with another schedule: the top-level settings are rewind.toml's."""
    part2 = _part2()
    ours, study = read_study(TOML, [], [], part2.STUDY_KEYS)
    theirs, _ = read_study(STUDY / "rewind.toml", [], [], set(load_script(STUDY / "part1.py").STUDY_KEYS))
    assert ours == theirs
    assert study["schedules"] == ["uniform", "global", "erk"] and study["samples"] == 10000
    assert (TOML.parent / study["part1-json"]).resolve() == STUDY.parents[1] / "docs" / "results" / "part1" / "part1.json"


def test_part2_plans_the_cells_of_each_schedule_on_the_mnist_preset(mnist_plan):
    """p=20 prunes a fifth of what is left per round in every schedule: 14 prunings to >= 95%, and the
    rounds nearest 68/85/95% are 5 (67.2%), 9 (86.6%: nearer than round 8's 83.2%) and 13 (94.5%)."""
    _, doc, out = mnist_plan
    for name in ("uniform", "global", "erk"):
        traj = doc["plan"]["trajectories"][name]
        assert traj["last_round"] == 14 and traj["planned_sparsity"][14] == pytest.approx(0.956, abs=5e-4)
        assert traj["planned_sparsity"][13] < 0.95 <= traj["planned_sparsity"][14]
        assert [c["round"] for c in traj["cells"]] == [5, 9, 13]
        assert [c["planned_sparsity"] for c in traj["cells"]] == pytest.approx([1 - 0.8 ** 5, 1 - 0.8 ** 9, 1 - 0.8 ** 13],
                                                                              abs=5e-4)


def test_part2_job_graph_chains_each_trajectory_and_scores_its_cells(mnist_plan, tmp_path):
    part2, _, _ = mnist_plan
    data, study = read_study(TOML, [], [], part2.STUDY_KEYS)
    jobs, chosen = part2.make_plan(RunConfig.from_dict(data), study, tmp_path)
    by_id = {j.id: j for j in jobs}
    for name in study["schedules"]:
        chain = [j for j in jobs if j.kind == "run" and j.args["schedule"] == name]
        assert [j.id for j in chain] == [f"{name}@{s}" for s in ("dense", "0.68", "0.85", "0.95", "last")]
        assert [(j.args["first_round"], j.args["config"]["rounds"]) for j in chain] == [(0, 0), (1, 5), (6, 9),
                                                                                       (10, 13), (14, 14)]
        assert [j.needs_jobs for j in chain] == [[]] + [[j.id] for j in chain[:-1]]
        assert {j.args["config"]["out"] for j in chain} == {str(tmp_path / name)}  # one run folder, continued
        assert [j.args["config"]["target_sparsity"] for j in chain] == [None] * 4 + [0.95]
        assert all(j.args["config"]["schedule"] == name and j.steps == 3000 * (j.args["config"]["rounds"] -
                                                                               j.args["first_round"] + 1) for j in chain)
        for k, seg in ((5, "0.68"), (9, "0.85"), (13, "0.95")):
            for kind in ("score", "flops"):
                job = by_id[f"{kind}:{name}-r{k}"]
                assert job.needs_jobs == [f"{name}@{seg}"] and job.args["round"] == k and job.args["store"] is False
    dense = [j.id for j in jobs if j.kind == "score" and j.args["round"] == 0]
    assert dense == ["score:uniform-r0"]  # the dense round once
    assert [j.id for j in jobs[:3]] == ["uniform@dense", "global@dense", "erk@dense"]  # one trajectory a worker
    assert set(study["cut-order"]) <= {j.id for j in jobs if j.kind == "run"}


def test_part2_cuts_in_its_order_to_fit_the_budget(mnist_plan):
    """At part 1's rates the whole plan is over 23 minutes; the cut order takes the rounds past the 95%
    cells first, then global's 95% cell (with its score), and stops as soon as the plan fits."""
    _, doc, _ = mnist_plan
    proj = doc["projection"]
    assert proj["uncut_end_s"] > proj["budget_s"] >= proj["end_s"] and proj["fits"]
    assert [c["job"] for c in proj["cuts"]] == ["erk@last", "global@last", "uniform@last", "global@0.95"]
    assert sorted(proj["cuts"][3]["with"]) == ["flops:global-r13", "score:global-r13"]
    ends = proj["ends"]
    assert all(f"score:uniform-r{k}" in ends for k in (0, 5, 9, 13))  # the claim's own cells stay
    assert ends["uniform@0.95"] < ends["score:uniform-r13"] <= ends["end"] - 30  # report-seconds last
    assert ends["uniform@0.95"] < proj["uncut_ends"]["uniform@0.95"]  # sooner with global stopped at its 85% cell


def test_part2_timeline_speeds_up_the_trajectories_left_and_queues_the_scores():
    """Two trajectories side by side at 50 steps/s each; when the shorter one ends, the other goes on at
    100 steps/s. The scorer takes each score as its trajectory ends, in the plan's order."""
    part2 = _part2()
    Job = part2.Job
    cfg = {"steps_per_round": 1000}
    jobs = [Job("a", "run", {"config": cfg, "first_round": 0, "schedule": "a"}, steps=1000),
            Job("b", "run", {"config": cfg, "first_round": 0, "schedule": "b"}, steps=2000),
            Job("score:a", "score", {}, needs_jobs=["a"]), Job("score:b", "score", {}, needs_jobs=["b"]),
            Job("flops:b", "flops", {}, needs_jobs=["b"])]
    study = {"round-seconds": 0.0, "compile-seconds": 0.0, "score-seconds": 2.0, "busy-score-seconds": 4.0,
             "first-score-seconds": 8.0, "flops-seconds": 1.0, "report-seconds": 10.0}
    by_id = {j.id: j for j in jobs}
    ends = part2.timeline(by_id, list(by_id), [100.0, 50.0], study, n_train=2)
    assert ends["a"] == pytest.approx(20.0) and ends["b"] == pytest.approx(30.0)
    assert ends["score:a"] == pytest.approx(28.0)  # the first score: the featurizer's training
    assert ends["score:b"] == pytest.approx(32.0) and ends["flops:b"] == pytest.approx(33.0)  # alone: 2 s
    assert ends["end"] == pytest.approx(43.0)
    by_id["b"].state, by_id["b"].progress = "running", 1500  # live: b half done, a cut (its score too)
    assert load_script(STUDY / "common.py").cut(by_id, "a") == ["a", "score:a"]
    ends = part2.timeline(by_id, list(by_id), [100.0, 50.0], study, n_train=2, now=100.0, scorer_warm=True)
    assert ends["b"] == pytest.approx(105.0) and "a" not in ends and "score:a" not in ends
    assert ends["score:b"] == pytest.approx(107.0)


def test_part2_projects_the_end_from_the_measured_rate(mnist_plan, tmp_path):
    """Once the first round has run, the projection is the timeline at the TOML's rates scaled by the rate
    the trainings show: twice the table's 33 steps/s, and every training's steps take half the time (each
    round's own seconds do not scale)."""
    import time

    part2 = mnist_plan[0]
    data, study = read_study(TOML, [], [], part2.STUDY_KEYS)
    jobs, _ = part2.make_plan(RunConfig.from_dict(data), study, tmp_path)
    sched = object.__new__(part2.Part2Scheduler)  # its projection alone: no worker processes
    sched.jobs, sched.order, sched.study, sched.t0, sched.first_round_s = {j.id: j for j in jobs}, [j.id for j in jobs], \
        study, time.time(), None
    now = time.time()
    sched.workers = [{"kind": "train", "job": f"{n}@dense", "rate": [(now - 10, 0), (now, 660)]}
                     for n in study["schedules"]] + [{"kind": "score", "job": None, "rate": []}]
    for n in study["schedules"]:
        sched.jobs[f"{n}@dense"].state, sched.jobs[f"{n}@dense"].progress = "running", 660
    assert sched.projected_end() is None  # the first round not done yet: no projection, no cut
    sched.first_round_s = 140.0
    fast = sched.projected_end()
    table = part2.timeline(sched.jobs, sched.order, study["train-rates"], study, 3, compiled=True)
    doubled = part2.timeline(sched.jobs, sched.order, [2 * r for r in study["train-rates"]], study, 3, compiled=True)
    assert fast == pytest.approx(doubled["end"], abs=1.0)
    overhead = 14 * study["round-seconds"]  # rounds 0-13, as part of the dense round is done
    assert doubled["uniform@0.95"] == pytest.approx((table["uniform@0.95"] - overhead) / 2 + overhead, rel=1e-9)


def test_the_scheduler_restores_a_cut_once_the_plan_with_it_fits_again():
    """Part 2's first attempt cut six segments while its first score trained the featurizer beside the
    trainings, then ended 2.2 min early: a projection cut (and what it takes with it) is undone, the latest
    first, once the plan with it back ends the margin before the budget; never in the last two minutes."""
    import time

    common = load_script(STUDY / "common.py")
    Job = common.Job
    cost = {"x@last": 100.0, "y@0.95": 200.0}  # seconds each segment adds to the projection

    class Toy(common.Scheduler):
        def projected_end(self):
            return self.base + sum(cost.get(j.id, 0.0) for j in self.jobs.values() if j.state == "todo")

    jobs = [Job("x@last", "run", {}), Job("y@0.95", "run", {}), Job("y@last", "run", {}, needs_jobs=["y@0.95"]),
            Job("score:y", "score", {}, needs_jobs=["y@0.95"])]
    sched = object.__new__(Toy)  # its cut logic alone: no worker processes
    sched.jobs, sched.study, sched.t0 = {j.id: j for j in jobs}, {"budget-minutes": 10,
                                                                 "cut-order": ["x@last", "y@0.95"]}, time.time()
    sched.cuts, sched.restored, sched.undoable, sched.last_cut, sched.base = [], [], [], 0.0, 250.0
    sched.log = open(os.devnull, "w")
    state = lambda: {j.id: j.state for j in jobs}  # noqa: E731

    sched.maybe_cut()  # 550 s projected, under 600 s: nothing to cut
    assert sched.cuts == [] and set(state().values()) == {"todo"}
    sched.base = 500.0  # the scorer slows the trainings: 800 s
    sched.maybe_cut()
    sched.last_cut = 0.0
    sched.maybe_cut()
    assert [c["job"] for c in sched.cuts] == ["x@last", "y@0.95"] and sched.cuts[1]["with"] == ["y@last", "score:y"]
    assert state() == dict.fromkeys(state(), "cut")
    sched.base, sched.last_cut = 345.0, 0.0  # y back would end at 545 s: 55 s before the budget, inside the margin
    sched.maybe_cut()
    assert [c["job"] for c in sched.cuts] == ["x@last", "y@0.95"] and sched.restored == []
    sched.base, sched.last_cut = 330.0, 0.0  # 530 s with y: restored, with what it took along; x still waits
    sched.maybe_cut()
    assert state() == {"x@last": "cut", "y@0.95": "todo", "y@last": "todo", "score:y": "todo"}
    assert [c["job"] for c in sched.cuts] == ["x@last"] and sched.restored[0]["job"] == "y@0.95"
    assert sched.restored[0]["projected_end_with_it_s"] == pytest.approx(530.0)
    sched.base = 0.0  # x would fit now, but not within 30 s of the restore
    sched.maybe_cut()
    assert state()["x@last"] == "cut"
    sched.base, sched.last_cut, sched.t0 = 0.0, 0.0, time.time() - 481  # the last two minutes: nothing comes back
    sched.maybe_cut()
    assert state()["x@last"] == "cut" and len(sched.restored) == 1


def test_part2_compares_each_cell_with_the_incremental_curve_at_its_sparsity():
    """fd-lenet interpolated in log space along part 1's curve; a margin inside the seed spread (relative,
    as part 1 measured it) decides nothing; the claim holds only where incremental wins every cell."""
    part2 = _part2()
    reference = {"curve": [{"sparsity": 0.0, "fd_lenet": 10.0}, {"sparsity": 0.5, "fd_lenet": 20.0},
                           {"sparsity": 0.9, "fd_lenet": 100.0}], "seed_spread": {"rel": 0.1}}

    def row(schedule, s, fd):
        return {"schedule": schedule, "cell": f"{s:g}", "round": 1, "sparsity": s, "fd_lenet": fd,
                "sampling_sparse_macs": 1}

    rows = [row("uniform", 0.5, 30.0), row("uniform", 0.7, 46.0), row("global", 0.7, 30.0)]
    out = part2.compare(rows, reference)
    assert out[1]["incremental_fd_lenet_at_sparsity"] == pytest.approx(math.sqrt(20.0 * 100.0))  # 44.7, not 60
    assert [c["verdict"] for c in out] == ["incremental better", "within the seed spread", "schedule better"]
    assert out[0]["incremental_sparsity_at_this_fd"] == pytest.approx(0.5 + 0.4 * math.log(1.5) / math.log(5.0))
    assert part2.claim(out)["status"] == "not decided" and part2.claim(out, "global")["status"] == "not held"
    assert part2.claim(part2.compare([row("uniform", 0.5, 30.0)], reference))["status"] == "held"


def test_scoring_without_storing_works_while_the_run_holds_its_lock(tmp_path, monkeypatch):
    """``Scoring.score(store=False)`` (part 2 scores rounds while their run trains on) writes nothing, so
    the run's lock does not stop it; storing under the lock is refused as before."""
    from ticketforge.evaluation import EvalItem, Scoring
    from ticketforge.store import RunLock, RunStore

    monkeypatch.setenv("TICKETFORGE_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    Engine(RunConfig(preset="tiny", schedule="uniform", rounds=0, steps_per_round=2, device="cpu", out=str(run),
                     artifacts=False, log_every=1, dataset="mnist-sample")).run()
    scoring = Scoring("fd-lenet", n_samples=8, sampler="ddim", steps=2, device="cpu",
                      options={"max_steps": 2, "reference_samples": 8, "kid_subsets": 2, "kid_subset_size": 4,
                               "batch_size": 8})
    before = RunStore(run).round_record(0)
    with RunLock(run):
        out = scoring.score(EvalItem(str(run), 0), store=False)
        assert out["scores"]["n_samples"] == 8 and RunStore(run).round_record(0) == before
        with pytest.raises(TicketforgeError, match="is in use by pid"):
            scoring.score(EvalItem(str(run), 0))


def test_part2_runs_a_tiny_part_end_to_end_and_resumes(tmp_path):
    """Three tiny trajectories in two training processes and one scoring process: every job finishes,
    each scored round reaches the sparsity the plan gave it and carries its scores in its record (stored
    once its run was done), ``ticketforge flops``'s counts and its per-group profile; run again, nothing is
    trained or scored again."""
    from ticketforge.inspection import model_report
    from ticketforge.store import RunStore

    out = tmp_path / "p2"
    sets = ['preset="tiny"', "steps-per-round=8", "compile=false", 'precision="auto"', 'dataset="mnist-sample"',
            "data-root=", "batch-size=8", "warmup-steps=1", "target-sparsity=0.5", "log-every=4",
            "checkpoint-every=4", 'device="cpu"', "keep-rewind-points=[0.0]"]
    study = ["sparsities=[0.3, 0.55]", "samples=16", "sample-steps=2", "train-workers=2", "cut-order=[]",
             "evaluator-options={max_steps=2, reference_samples=16, kid_subsets=2, kid_subset_size=8, batch_size=16}"]
    argv, env = study_command("part2.py", TOML, out, sets, study, tmp_path)
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    doc = json.loads((out / "results" / "part2.json").read_text())
    assert {j: v["state"] for j, v in doc["jobs"].items() if v["state"] != "done"} == {}
    rows = {r["id"]: r for r in doc["rows"]}
    # 20/36/48.8/59%: 0.3 -> round 2, 0.55 -> round 4, where the run stops (>= 50%): its score is made
    # after the run is done, round 2's while it trains on
    assert sorted(rows) == sorted(["uniform-r0"] + [f"{s}-r{k}" for s in ("uniform", "global", "erk") for k in (2, 4)])
    assert [j for j in doc["jobs"] if j.startswith("uniform@")] == ["uniform@dense", "uniform@0.3", "uniform@0.55"]
    for r in rows.values():
        traj = doc["plan"]["trajectories"][r["schedule"]]
        assert traj["last_round"] == 4
        assert r["sparsity"] == pytest.approx(traj["planned_sparsity"][r["round"]], abs=1e-12)  # the engine's masks
        stored = RunStore(out / r["schedule"]).round_record(r["round"])["metrics"]["fd-lenet"]
        assert stored["fd_lenet"] == r["fd_lenet"] and r["n_samples"] == 16 and not r["score_reused"]
        assert r["store_error"] is None
        report = model_report(str(out / r["schedule"]), None, None, {}, r["round"])
        assert (r["dense_macs"], r["sparse_macs"], r["nonzero_params"]) == (
            report["dense_macs"], report["sparse_macs"], report["nonzero_params"])
        assert r["sampling_sparse_macs"] == 2 * r["sparse_macs"]  # DDIM 2 steps: two forward passes a sample
        lo, hi = r["estimated_sampling_sparse_macs_bounds"]
        assert lo <= r["sampling_sparse_macs"] <= hi  # part 1's estimate brackets the exact count
        assert [g["name"] for g in r["groups"]] == [g["name"] for g in report["by_group"]]
        assert sum(g["nonzero_params"] for g in r["groups"]) == round((1 - r["sparsity"]) * r["prunable_params"])
    assert rows["uniform-r2"]["sparse_macs"] < rows["uniform-r0"]["sparse_macs"] == rows["uniform-r0"]["dense_macs"]
    assert [p["round"] for p in doc["final_profiles"].values()] == [4, 4, 4, 9]  # part 1's incremental: round 9
    assert doc["part1"]["curve"][1]["round"] == 3 and doc["part1"]["seed_spread"]["seeds"] == [0, 1]
    for cell in doc["part1"]["curve"]:  # its per-group profile (the schedule's math) is part 1's measured sparsity
        groups = cell["groups"]
        assert sum(g["params"] * g["sparsity"] for g in groups) / sum(g["params"] for g in groups) == \
            pytest.approx(cell["sparsity"], abs=1e-12)
    for png in ("part2_fd.png", "part2_macs.png", "part2_groups.png"):
        assert (out / "results" / png).exists()

    def trained() -> dict[str, list]:
        return {s: [(k, RunStore(out / s).round_record(k)["metrics"]["seconds"]) for k in RunStore(out / s).finished_rounds()]
                for s in ("uniform", "global", "erk")}

    before = trained()
    again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)  # resumes: nothing redone
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    doc2 = json.loads((out / "results" / "part2.json").read_text())
    assert all(r["score_reused"] for r in doc2["rows"]) and len(doc2["rows"]) == len(rows)
    assert trained() == before
    assert [r["fd_lenet"] for r in doc2["rows"]] == [r["fd_lenet"] for r in doc["rows"]]


def test_closing_layers_counts_each_tensors_share_from_the_schedule(tmp_path, capsys):
    """``closing_layers.py``: with within=tensor every residual-closing layer keeps the group's share
    (p=50: half, then a quarter), and the pooled schedule is said to come from random scores."""
    script = load_script(STUDY / "closing_layers.py")
    toml = tmp_path / "t.toml"
    toml.write_text('model = "ddpm-unet"\npreset = "tiny"\nschedule = "uniform"\np = 50.0\n')
    rows = script.main([str(toml), "--set", 'schedule-options={within="tensor"}', "--rounds", "2"])
    assert [r["closing_kept"] for r in rows] == pytest.approx([1.0, 0.5, 0.25], abs=0.02)
    assert rows[2]["closing_min"] == pytest.approx(0.25, abs=0.05) and "random scores" not in capsys.readouterr().out
    script.main([str(toml), "--rounds", "1"])
    assert "counts from random scores" in capsys.readouterr().out


# -- the checks of a finished part (part2_checks.py) --------------------------------------------------
def _finished_part2(fds: dict[tuple[str, int], float], verdicts: dict[tuple[str, int], str], sha: str = "f" * 64):
    """A part2.json with the fields the checks read: a row per (schedule, round), a comparison per non-dense row."""
    cell = {0: "dense", 5: "0.68", 9: "0.85"}
    rows = [{"schedule": s, "round": k, "cell": cell[k], "sparsity": 0.1 * k, "fd_lenet": fd,
             "featurizer_sha256": sha, "sampling_sparse_macs": 10 - k} for (s, k), fd in fds.items()]
    comparisons = [{"schedule": s, "round": k, "cell": cell[k], "sparsity": 0.1 * k, "fd_lenet": fds[s, k],
                    "margin": fds[s, k] - 20.0, "seed_spread_at_this_fd": 4.0, "verdict": v}
                   for (s, k), v in verdicts.items()]
    return {"rows": rows, "comparisons": comparisons, "dense_vs_part1": {"part2": fds["uniform", 0], "part1": 9.5},
            "cuts": [{"job": "erk@0.95"}], "part1": {"seed_spread": {"rel": 0.15}, "curve": []},
            "study": {"samples": 10000}}


def test_part2_checks_give_margins_in_spreads_and_the_change_between_two_runs(tmp_path, capsys):
    """Margins in part 1's seed spreads; against another run: each round both scored, its change relative
    to the other run, the verdicts that changed, the largest change, what only one run scored; runs of two
    featurizers do not compare (one-line error), nor does a file that is not a finished part."""
    checks = load_script(STUDY / "part2_checks.py")
    first = _finished_part2({("uniform", 0): 10.0, ("uniform", 5): 24.0, ("uniform", 9): 50.0},
                            {("uniform", 5): "within the seed spread", ("uniform", 9): "schedule better"})
    second = _finished_part2({("uniform", 0): 10.5, ("uniform", 5): 15.0, ("uniform", 9): 49.0, ("erk", 9): 4.0},
                             {("uniform", 5): "schedule better", ("uniform", 9): "schedule better",
                              ("erk", 9): "schedule better"})
    for name, doc in (("a.json", first), ("b.json", second)):
        (tmp_path / name).write_text(json.dumps(doc))
    out = checks.main([str(tmp_path / "b.json"), "--against", str(tmp_path / "a.json"), "--fd-png", str(tmp_path / "fd.png")])
    assert [m["in_spreads"] for m in out["margins"]] == pytest.approx([-5.0 / 4, 29.0 / 4, -16.0 / 4])
    by = {(c["schedule"], c["round"]): c for c in out["against"]["cells"]}
    assert set(by) == {("uniform", 0), ("uniform", 5), ("uniform", 9)}
    assert by["uniform", 5]["relative"] == pytest.approx(-9.0 / 24) and by["uniform", 0]["change"] == pytest.approx(0.5)
    assert [k for k, c in by.items() if c["verdict_changed"]] == [("uniform", 5)]
    assert out["against"]["largest"]["round"] == 5 and out["against"]["only_this"] == ["erk-r9"]
    printed = capsys.readouterr().out
    assert "uniform-r5 (0.68): 24.00 -> 15.00, -9.00 (-37.5%); verdict within the seed spread -> schedule better" in printed
    assert "part 1's two seeds: 15.0%" in printed and (tmp_path / "fd.png").stat().st_size > 0
    (tmp_path / "other.json").write_text(json.dumps({**first, "rows": [{**r, "featurizer_sha256": "0" * 64} for r in first["rows"]]}))
    with pytest.raises(SystemExit, match="different featurizers"):
        checks.main([str(tmp_path / "b.json"), "--against", str(tmp_path / "other.json")])
    with pytest.raises(SystemExit, match="not a finished part's part2.json"):
        checks.main([str(tmp_path / "b.json"), "--against", str(tmp_path / "missing.json")])


def test_part2_checks_say_whether_the_trajectories_started_alike(tmp_path):
    """theta_0 and theta_tau compared by the runs' manifests: one sha256 in every run, or not."""
    checks = load_script(STUDY / "part2_checks.py")
    for run, tau in (("uniform", "1" * 64), ("global", "2" * 64)):
        (tmp_path / run).mkdir()
        (tmp_path / run / "manifest.json").write_text(json.dumps({"files": {"init.safetensors": "a" * 64,
                                                                              "rewind.safetensors": tau}}))
    got = checks.starts(tmp_path)
    assert got["init.safetensors"]["same"] and not got["rewind.safetensors"]["same"]
    assert got["rewind.safetensors"]["sha256"] == {"global": "2" * 12, "uniform": "1" * 12}
    with pytest.raises(SystemExit, match="no run folder with a manifest.json"):
        checks.starts(tmp_path / "uniform")


def test_part2_checks_reproduce_the_committed_runs_figures():
    """docs/results.md's Part 2: the margins in spreads, and the same-seed change between the two runs,
    come from this command on the committed files; the plot it draws is the committed one."""
    checks = load_script(STUDY / "part2_checks.py")
    committed = STUDY.parents[1] / "docs" / "results" / "part2"
    out = checks.main([str(committed / "part2.json"), "--against", str(committed / "first-run" / "part2.json"),
                       "--runs", str(committed / "runs")])
    assert out["starts"]["init.safetensors"]["same"] and not out["starts"]["rewind.safetensors"]["same"]
    spreads = {(m["schedule"], m["cell"]): round(m["in_spreads"], 1) for m in out["margins"]}
    assert spreads == {("uniform", "0.68"): -1.6, ("uniform", "0.85"): -3.0, ("uniform", "0.95"): 3.0,
                       ("global", "0.68"): -1.9, ("global", "0.85"): -2.4, ("erk", "0.68"): -5.5, ("erk", "0.85"): -6.3}
    against = out["against"]
    assert (against["largest"]["schedule"], against["largest"]["round"], round(against["largest"]["relative"], 3)) == \
        ("uniform", 9, 0.154)
    assert [(c["schedule"], c["round"]) for c in against["cells"] if c["verdict_changed"]] == [("uniform", 5)]
    assert against["only_this"] == ["erk-r9"] and against["only_other"] == []

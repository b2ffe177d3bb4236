"""experiments/study/part3.py (issue 19): the plan it makes on the mnist preset and its projection, the
rank correlation of CKA with module position, the switch-point schedules and their MACs, the CKA of
Gram matrices it computes activations' CKA with, and one whole tiny part in its own processes, run twice."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from test_experiments import STUDY, load_script

from ticketforge import RunConfig

TOML = STUDY / "similarity.toml"


def _part3():
    return load_script(STUDY / "part3.py")


@pytest.fixture(scope="module")
def mnist_plan(tmp_path_factory):
    """``part3.py similarity.toml --plan``: the job graph and projection of the real study (no training)."""
    part3 = _part3()
    out = tmp_path_factory.mktemp("plan")
    return part3, part3.main([str(TOML), "--out", str(out), "--plan"]), out


def test_part3_runs_with_part1s_settings_to_85_percent():
    """The trajectories are part 1's run (rewind.toml) but for the target sparsity."""
    part3 = _part3()
    ours, study = part3.read_study(TOML, [], [], part3.STUDY_KEYS)
    theirs, _ = part3.read_study(STUDY / "rewind.toml", [], [], set(load_script(STUDY / "part1.py").STUDY_KEYS))
    assert ours.pop("target-sparsity") == 0.845 and theirs.pop("target-sparsity") == 0.95
    assert ours == theirs
    assert [(t["name"], t["seed"], t.get("init-seed")) for t in study["tickets"]] == [
        ("seed0", 0, None), ("seed1-init0", 1, 0), ("seed1", 1, None)]
    assert study["cka-samples"] == 512 and study["cka-timesteps"] == [100, 500, 900] and study["samples"] == 10000


def test_part3_plans_three_trajectories_to_round_5_and_the_cells_they_gate(mnist_plan, tmp_path):
    """p=20 q=1 reaches 84.62% at round 5; each CKA cell waits for both its rounds, the dense score for
    round 0 only, the other schedules for the ticket's round too; the switch points leave the noisy
    network 5, 10, 20, 30, 40 and 45 of DDIM's 50 steps."""
    part3, doc, _ = mnist_plan
    plan = doc["plan"]
    assert plan["last_round"] == 5 and plan["planned_sparsity"][5] == pytest.approx(0.8462, abs=5e-5)
    assert plan["planned_sparsity"][4] < 0.845 <= plan["planned_sparsity"][5]
    data, study = part3.read_study(TOML, [], [], part3.STUDY_KEYS)
    jobs, _ = part3.make_plan(RunConfig.from_dict(data), study, tmp_path)
    by_id = {j.id: j for j in jobs}
    runs = [j for j in jobs if j.kind == "run"]
    assert [(j.id, j.args["config"]["seed"], j.args["config"]["init_seed"]) for j in runs] == [
        ("run:seed0", 0, None), ("run:seed1-init0", 1, 0), ("run:seed1", 1, None)]
    assert all(j.steps == 18000 and j.args["config"]["out"] == str(tmp_path / j.id[4:]) for j in runs)
    s0, s1i, s1 = (str(tmp_path / n) for n in ("seed0", "seed1-init0", "seed1"))
    assert by_id["cka:seed0-vs-seed1-init0@r5"].needs_rounds == [(s0, 5), (s1i, 5)]
    assert by_id["cka:seed0-vs-seed1@r0"].needs_rounds == [(s0, 0), (s1, 0)]
    assert by_id["mixed:dense"].needs_rounds == [(s0, 0)]
    assert by_id["mixed:ticket-first@600"].needs_rounds == [(s0, 0), (s0, 5)]
    assert by_id["mixed:ticket-first@600"].args["dense"] == [s0, 0] and by_id["mixed:ticket"].args["ticket"] == [s0, 5]
    assert [j.id for j in jobs if j.kind == "cka"] == [f"cka:seed0-vs-{b}@r{k}" for k in (0, 5) for b in ("seed1-init0", "seed1")]
    mixed = [j.id for j in jobs if j.kind == "mixed"]
    assert mixed[:2] == ["mixed:dense", "mixed:ticket"] and len(mixed) == 2 + 2 * 6
    assert [s["switch"] for s in plan["schedules"][2::2]] == [900, 800, 600, 400, 200, 100]
    from ticketforge_ddpm.mixed import first_steps, switch_points
    assert [first_steps(s, plan["sampler_timesteps"]) for s in study["switches"]] == [5, 10, 20, 30, 40, 45]
    assert switch_points(plan["sampler_timesteps"], [5, 10, 20, 30, 40, 45]) == study["switches"]
    assert set(study["cut-order"]) <= set(mixed) - {"mixed:dense", "mixed:ticket"}


def test_part3_projects_the_part_at_part1s_rates(mnist_plan):
    """Three trainings at 33 steps/s each: 100 s of compilation, 18000 steps, 6 rounds of 3 s; the dense
    score (the featurizer's training) after round 0; the last-round cells after round 5, one at a time,
    scored alone once the trainings are done; 18 minutes in all, under the 23-minute budget: nothing cut."""
    _, doc, _ = mnist_plan
    proj = doc["projection"]
    ends = proj["ends"]
    assert ends["run:seed0"] == pytest.approx(100 + 18000 / 33 + 6 * 3)
    r0 = 100 + 3000 / 33 + 3
    assert ends["flops:seed0-r0"] == pytest.approx(r0 + 5)
    assert ends["mixed:dense"] == pytest.approx(r0 + 5 + 135)
    last = ends["run:seed0"]
    assert ends["flops:seed0-r5"] == pytest.approx(last + 5)
    assert ends["mixed:ticket"] == pytest.approx(last + 5 + 2 * 80 + 13 + 40)  # two CKA cells; its own compile
    assert ends["mixed:ticket-first@100"] == pytest.approx(ends["mixed:ticket"] + 12 * 13)
    assert proj["uncut_end_s"] == pytest.approx(ends["mixed:ticket-first@100"] + 30)
    assert 16 * 60 < proj["end_s"] < 18 * 60 and proj["fits"] and proj["cuts"] == []


def test_part3_cuts_the_outer_switch_points_first_when_over_budget():
    part3 = _part3()
    data, study = part3.read_study(TOML, [], [], part3.STUDY_KEYS)
    jobs, _ = part3.make_plan(RunConfig.from_dict(data), study, STUDY / "nowhere")
    tight = part3.dry_run(jobs, {**study, "budget-minutes": 17.5})
    assert [c["job"] for c in tight["cuts"]] == ["mixed:ticket-first@100", "mixed:dense-first@100"]
    assert tight["fits"] and "mixed:ticket-first@100" not in tight["ends"]
    assert tight["end_s"] == pytest.approx(tight["uncut_end_s"] - 2 * 13)
    slow = part3.dry_run(jobs, {**study, "train-rates": [39.0, 25.0, 16.5]})  # half the rate: over, cut all four
    assert len(slow["cuts"]) == 4 and not slow["fits"]


def test_part3_projection_follows_the_rounds_and_the_warm_scorer():
    """A running run half way through its second round; the scorer warm: a mixed cell costs the busy
    rate while the run trains, a ticket's first use its compile; cells wait for their rounds."""
    part3 = _part3()
    Job = part3.Job
    cfg = {"steps_per_round": 100, "out": "/r"}
    jobs = [Job("run", "run", {"config": cfg}, steps=300, state="running", progress=150, rounds_done=1),
            Job("m1", "mixed", {"order": "dense"}, needs_rounds=[("/r", 0)]),
            Job("m2", "mixed", {"order": "ticket"}, needs_rounds=[("/r", 2)]),
            Job("c", "cka", {}, needs_rounds=[("/r", 1)])]
    study = {"compile-seconds": 50.0, "round-seconds": 1.0, "first-score-seconds": 100.0, "busy-score-seconds": 4.0,
             "score-seconds": 2.0, "switch-compile-seconds": 7.0, "cka-seconds": 3.0, "flops-seconds": 1.0,
             "report-seconds": 10.0}
    by_id = {j.id: j for j in jobs}
    ends = part3.projection(by_id, list(by_id), [10.0], study, n_train=1, now=1000.0, compiled=True,
                            warm=frozenset({"score"}))
    assert ends["run"] == pytest.approx(1000 + 150 / 10 + 2)  # two rounds left, 1 s each
    assert ends["m1"] == pytest.approx(1004.0)  # round 0 is done: at once, beside the training
    assert ends["c"] == pytest.approx(1000 + 5 + 1 + 3)  # round 1 ends at 1006
    assert ends["m2"] == pytest.approx(ends["run"] + 2 + 7)  # alone now, and the ticket's compile
    assert ends["end"] == pytest.approx(ends["m2"] + 10)


# -- the rank correlation -------------------------------------------------------------------------
def test_position_trend_reads_the_direction_of_a_profile():
    from ticketforge.similarity.trend import position_trend

    falling = position_trend([0.9, 0.8, None, 0.85, 0.6, float("nan"), 0.5, 0.4, 0.3])
    assert falling["n"] == 7 and falling["rho"] < -0.9 and falling["p"] < 0.01 and falling["trend"] == "falls"
    from scipy.stats import spearmanr
    ref = spearmanr([0, 1, 3, 4, 6, 7, 8], [0.9, 0.8, 0.85, 0.6, 0.5, 0.4, 0.3])  # the positions of the values kept
    assert falling["rho"] == pytest.approx(ref[0]) and falling["p"] == pytest.approx(ref[1])
    assert position_trend([0.1, 0.2, 0.3, 0.5, 0.4, 0.6])["trend"] == "rises"
    assert position_trend([0.5, 0.1, 0.4, 0.2, 0.45, 0.15])["trend"] == "none"
    assert position_trend([0.5] * 6)["trend"] == "undefined" and position_trend([0.9, None, 0.1])["rho"] is None


def _cell(values: list[float], jaccard: list[float]) -> dict:
    return {"modules": [{"module": f"m{i}", "group": "g", "position": i, "weights_cka": v, "jaccard": j,
                         "jaccard_random": 0.1, "activations": {"100": {"linear": v, "rbf": 1 - v}}}
                        for i, (v, j) in enumerate(zip(values, jaccard))]}


def test_rank_table_and_claim_on_constructed_profiles():
    """A CKA profile falling along the network holds the claim for that mode; rising RBF (1 - CKA)
    reverses it; the dense reference's trend is tested alike, not the dense Jaccard (all ones)."""
    part3 = _part3()
    down, up = [0.9, 0.8, 0.7, 0.6, 0.5], [0.1, 0.2, 0.3, 0.4, 0.5]
    cells = {"a-vs-b": {5: _cell(down, up), 0: _cell(up, [1.0] * 5)}, "a-vs-c": {5: _cell(down, down), 0: _cell(down, [1.0] * 5)}}
    table = part3.rank_table(cells, 5, [100], 0.05)
    rows = {(r["pair"], r["mode"]): r for r in table}
    assert [r["mode"] for r in table[:4]] == ["weights", "linear@t100", "rbf@t100", "jaccard"]
    w = rows[("a-vs-b", "weights")]
    assert w["rho"] == pytest.approx(-1.0) and w["trend"] == "falls" and w["dense_trend"] == "rises"
    assert w["mean"] == pytest.approx(0.7)
    assert rows[("a-vs-b", "jaccard")]["dense_rho"] is None and rows[("a-vs-b", "jaccard")]["random_mean"] == pytest.approx(0.1)
    claim = part3.claim(table, ["a-vs-b", "a-vs-c"])
    assert claim["weights"] == {"status": "held", "falls": ["a-vs-b", "a-vs-c"], "rises": [], "dense_falls": ["a-vs-c"]}
    assert claim["rbf@t100"]["status"] == "reversed"
    assert claim["jaccard"]["status"] == "held for some pairs" and claim["jaccard"]["falls"] == ["a-vs-c"]


def test_holm_adjusts_each_p_for_all_the_tests_and_keeps_their_order():
    part3 = _part3()
    # sorted: 0.01 * 4, 0.03 * 3, 0.04 * 2 (raised to the 0.09 before it), 0.5 * 1
    assert part3.holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert part3.holm([0.6, 0.5]) == pytest.approx([1.0, 1.0])  # capped at 1
    down, flat = [0.9, 0.8, 0.7, 0.6, 0.5], [0.5, 0.7, 0.4, 0.8, 0.6]
    table = part3.rank_table({"a-vs-b": {5: _cell(down, flat)}, "a-vs-c": {5: _cell(flat, flat)}}, 5, [100], 0.05)
    tested = [r for r in table if r["p"] is not None]
    assert [r["p_holm"] for r in tested] == pytest.approx(part3.holm([r["p"] for r in tested]))
    assert all(r["p_holm"] >= r["p"] for r in tested)


def test_part3_checks_leave_out_modules_empty_in_both_and_redraw_the_rank_plot(tmp_path, capsys):
    checks = load_script(STUDY / "part3_checks.py")
    down = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    ticket = _cell(down, [0.2, 0.3, 0.4, 0.5, 1.0, 1.0])
    for m, density in zip(ticket["modules"], (0.5, 0.5, 0.5, 0.5, 0.0, 0.0)):
        m.update(density_a=density, density_b=density)
    dense = _cell([-0.05, 0.02, 0.01, 0.03, -0.01, 0.04], [1.0] * 6)
    result = {"study": {"alpha": 0.05, "cka-timesteps": [100]}, "plan": {"last_round": 5},
              "cka": {"a-vs-b": {"r0": dense, "r5": ticket}}}
    (tmp_path / "part3.json").write_text(json.dumps(result))
    out = checks.main([str(tmp_path / "part3.json"), "--rank-png", str(tmp_path / "rank.png")])
    j = out["jaccard_without_empty"]["a-vs-b"]
    assert j["empty_in_both"] == ["m4", "m5"] and j["n"] == 4
    assert j["mean"] == pytest.approx(0.35) and j["random_mean"] == pytest.approx(0.1)
    assert j["rho"] == pytest.approx(1.0)  # the four kept rise; with the two 1.0s the mean would be 0.567
    assert out["weights_cka_range"]["a-vs-b"] == {"r0": pytest.approx([-0.05, 0.04]), "r5": pytest.approx([0.4, 0.9])}
    assert {r["mode"] for r in out["rank_table"] if "p_holm" in r} == {"weights", "linear@t100", "rbf@t100", "jaccard"}
    assert (tmp_path / "rank.png").stat().st_size > 0 and "m4, m5" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="not a finished part's part3.json"):
        checks.main([str(tmp_path / "missing.json")])


def test_rank_plot_keeps_each_series_colour_on_hollow_bars_and_in_its_legend(monkeypatch, tmp_path):
    """Not-significant bars are hatched and hollow: their outline keeps the series' colour, and the legend
    shows each series filled (the 2026-12-03 run's plot had four identical hollow legend entries)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgba

    part3 = _part3()
    figs = []
    monkeypatch.setattr(plt, "close", figs.append)
    table = [{"pair": pair, "mode": mode, "rho": -0.3, "p": p, "dense_rho": 0.1, "dense_p": 0.5}
             for pair in ("a-vs-b", "a-vs-c") for mode, p in (("weights", 0.01), ("jaccard", 0.4))]
    part3.plot_rank(table, tmp_path / "rank.png")
    ax = figs[0].axes[0]
    legend = [to_rgba(h.get_facecolor()) for h in ax.get_legend().get_patches()]
    assert len(set(legend)) == 4 and all(c[3] > 0 for c in legend)
    hollow = [b for b in ax.patches if b.get_hatch()]
    assert len(hollow) == 6  # jaccard in all four series, and the dense weights of both pairs
    assert all(to_rgba(b.get_facecolor())[3] == 0 and to_rgba(b.get_edgecolor()) in legend for b in hollow)
    plt.close(figs[0])


# -- the switch points and their MACs -----------------------------------------------------------------
def test_switch_schedules_and_their_macs():
    from ticketforge_ddpm.mixed import schedule_macs, schedules, steps_of
    from ticketforge_ddpm.samplers import ddim_timesteps

    ts = ddim_timesteps(1000, 50)
    assert ts[:2] == [980, 960] and ts[-1] == 0
    assert schedules([600], ts) == [("dense", None), ("ticket", None), ("dense-first", 600), ("ticket-first", 600)]
    for bad in (990, 0):  # every step on one network: not a switch
        with pytest.raises(ValueError, match="leaves one network none"):
            schedules([bad], ts)
    assert steps_of("dense-first", 600, ts) == (20, 30) and steps_of("ticket-first", 600, ts) == (30, 20)
    assert steps_of("dense-first", 601, ts) == (19, 31)  # 600 itself is on the clean side of 601
    dense, ticket = 1000.0, 150.0
    assert schedule_macs("dense", None, ts, dense, ticket) == 50_000 and schedule_macs("ticket", None, ts, dense, ticket) == 7500
    assert schedule_macs("dense-first", 900, ts, dense, ticket) == 5 * 1000 + 45 * 150
    for s in (900, 600, 100):  # the two orders at one switch point cost one pure dense and one pure ticket run
        both = schedule_macs("dense-first", s, ts, dense, ticket) + schedule_macs("ticket-first", s, ts, dense, ticket)
        assert both == 50 * (dense + ticket)


def test_mixed_rows_count_each_schedule_from_the_flops_of_its_two_networks():
    part3 = _part3()
    Job = part3.Job
    chosen = {"tickets": [{"name": "s0"}], "last_round": 5, "sampler_timesteps": [750, 500, 250, 0]}
    jobs = {"flops:s0-r0": Job("flops:s0-r0", "flops", {}, state="done", result={"sparse_macs": 100}),
            "flops:s0-r5": Job("flops:s0-r5", "flops", {}, state="done", result={"sparse_macs": 20})}
    for order, s, fd in (("dense", None, 1.0), ("ticket", None, 3.0), ("dense-first", 600, 2.5), ("ticket-first", 600, 1.2)):
        name = order if s is None else f"{order}@{s}"
        jobs[f"mixed:{name}"] = Job(f"mixed:{name}", "mixed", {"order": order, "switch": s}, state="done",
                                    result={"scores": {"fd_lenet": fd, "kid_lenet": fd / 100}, "reused": False})
    rows = {r["schedule"]: r for r in part3.mixed_rows(jobs, chosen, {"evaluator": "fd-lenet"})}
    assert rows["dense"]["macs"] == 400 and rows["ticket"]["macs"] == 80
    assert (rows["dense-first@600"]["dense_steps"], rows["dense-first@600"]["ticket_steps"]) == (1, 3)  # 750 only
    assert rows["dense-first@600"]["macs"] == 100 + 3 * 20 and rows["ticket-first@600"]["macs"] == 3 * 100 + 20
    assert rows["ticket-first@600"]["macs_fraction_of_dense"] == pytest.approx(320 / 400)
    assert rows["ticket"]["kid"] == pytest.approx(0.03)


def test_mixed_summary_names_the_better_order_and_what_beats_the_pure_networks():
    from ticketforge_ddpm.mixed import mixed_summary

    def row(order, s, macs, fd):
        return {"order": order, "switch": s, "macs": macs, "fd_lenet": fd}

    rows = [row("dense", None, 100, 2.0), row("ticket", None, 20, 8.0),
            row("dense-first", 800, 40, 7.0), row("dense-first", 400, 60, 6.0),
            row("ticket-first", 400, 60, 3.0), row("ticket-first", 800, 80, 1.9)]
    out = mixed_summary(rows)
    assert out["better_order"] == "ticket-first" and out["wins"] == {"dense-first": 0, "ticket-first": 2}
    assert out["beat_ticket"] == ["dense-first@800", "dense-first@400", "ticket-first@400", "ticket-first@800"]
    assert out["dominate_dense"] == ["ticket-first@800"]
    chord_at_60 = math.exp(math.log(8.0) + (math.log(2.0) - math.log(8.0)) * 40 / 80)  # 4.0
    assert chord_at_60 == pytest.approx(4.0)
    assert out["below_chord"] == ["ticket-first@400", "ticket-first@800"]
    assert out["pareto"] == ["ticket", "dense-first@800", "ticket-first@400", "ticket-first@800"]
    gap = next(r for r in out["rows"] if r["schedule"] == "ticket-first@400")["log_gap_to_other_order"]
    assert gap == pytest.approx(math.log(3.0) - math.log(6.0))


def test_schedule_network_routes_each_step_to_its_network():
    from ticketforge_ddpm.mixed import schedule_network

    class Const(torch.nn.Module):
        def __init__(self, value: float) -> None:
            super().__init__()
            self.value = value

        def forward(self, x, t):
            return torch.full_like(x, self.value)

    dense, ticket = Const(1.0), Const(2.0)
    x = torch.zeros(3, 1)
    first = schedule_network("dense-first", 500, dense, ticket)
    assert first(x, torch.tensor([999, 500, 499])).flatten().tolist() == [1.0, 1.0, 2.0]
    assert schedule_network("ticket-first", 500, dense, ticket)(x, torch.tensor([500, 0, 0])).flatten().tolist() == [2.0, 1.0, 1.0]
    assert schedule_network("ticket", None, dense, ticket) is ticket


# -- activations' CKA from Gram matrices ---------------------------------------------------------------
def test_cka_of_grams_is_cka_of_the_activations():
    from ticketforge.similarity.cka import activation_cka, activation_grams, cka, cka_of_grams, gram_linear

    gen = np.random.default_rng(0)
    x = gen.normal(size=(20, 50))
    y = x @ gen.normal(size=(50, 30)) + 0.5 * gen.normal(size=(20, 30))
    for kernel in ("linear", "rbf"):
        for debiased in (False, True):
            want = cka(x, y, kernel, debiased=debiased)
            assert cka_of_grams(gram_linear(x), gram_linear(y), kernel, debiased=debiased) == pytest.approx(want, rel=1e-9)
    torch.manual_seed(0)
    net_a = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    net_b = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    inputs = torch.randn(16, 6)
    ga, gb = activation_grams(net_a, inputs, ["0", "2"]), activation_grams(net_b, inputs, ["0", "2"])
    for kernel in ("linear", "rbf"):
        ref = activation_cka(net_a, net_b, inputs, ["0", "2"], kernel, debiased=True)
        for m in ("0", "2"):
            assert cka_of_grams(ga[m], gb[m], kernel, debiased=True) == pytest.approx(ref[m], rel=1e-9)
    with pytest.raises(ValueError, match="square Gram"):
        cka_of_grams(ga["0"], ga["0"][:4, :4])


def test_noisy_inputs_are_the_same_images_and_noise_at_each_timestep():
    from ticketforge_ddpm.probes import noisy_inputs
    from ticketforge_ddpm.spec import DDPMSpec

    spec = DDPMSpec.from_preset("tiny")
    images = torch.rand(10, 1, 28, 28)
    data = [(images[i], 0) for i in range(10)]
    (x1, t1), (x9, t9) = noisy_inputs(spec, data, 4, 100, seed=3), noisy_inputs(spec, data, 4, 900, seed=3)
    assert x1.shape == (4, 1, 32, 32) and t1.tolist() == [100] * 4 and t9.tolist() == [900] * 4
    d = spec.diffusion
    a1, b1 = d.sqrt_alphas_cumprod[100], d.sqrt_one_minus_alphas_cumprod[100]
    a9, b9 = d.sqrt_alphas_cumprod[900], d.sqrt_one_minus_alphas_cumprod[900]
    # x_t = a x0 + b eps with the same x0 and eps: solve both timesteps for them
    eps = (x9 * a1 - x1 * a9) / (b9 * a1 - b1 * a9)
    x0 = (x1 - b1 * eps) / a1
    assert float(x0.min()) >= -1 - 1e-4 and float(x0.max()) <= 1 + 1e-4
    assert torch.allclose(x0[..., :2, :], torch.full_like(x0[..., :2, :], -1.0), atol=1e-4)  # the padding
    assert not torch.equal(noisy_inputs(spec, data, 4, 100, seed=4)[0], x1)
    with pytest.raises(ValueError, match="outside"):
        noisy_inputs(spec, data, 4, 1000)


# -- one tiny part, twice --------------------------------------------------------------------------
def test_part3_runs_a_tiny_part_end_to_end_and_resumes(tmp_path):
    """Three tiny trajectories in two training processes and one scoring process: every job finishes;
    the CKA cells cover every pruned module with the masks' Jaccard (the same-init pair's dense weights
    alike, the other-init pair's not); each schedule is scored with its MACs; run again, nothing is
    trained, compared or scored again."""
    from ticketforge.store import RunStore

    out = tmp_path / "p3"
    sets = ['preset="tiny"', "steps-per-round=8", "compile=false", 'precision="auto"', 'dataset="mnist-sample"',
            "data-root=", "batch-size=8", "warmup-steps=1", "target-sparsity=0.5", "log-every=4",
            "checkpoint-every=4", 'device="cpu"', "keep-rewind-points=[0.0]"]
    study = ["cka-samples=16", "switches=[600, 300]", "samples=16", "sample-steps=4", "train-workers=2", "cut-order=[]",
             "evaluator-options={max_steps=2, reference_samples=16, kid_subsets=2, kid_subset_size=8, batch_size=16}"]
    argv = [sys.executable, str(STUDY / "part3.py"), str(TOML), "--out", str(out), "--no-mps"]
    argv += [a for s in sets for a in ("--set", s)] + [a for s in study for a in ("--study-set", s)]
    env = {**os.environ, "TICKETFORGE_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    doc = json.loads((out / "results" / "part3.json").read_text())
    assert {j: v["state"] for j, v in doc["jobs"].items() if v["state"] != "done"} == {}
    last = doc["plan"]["last_round"]
    assert last == 3 and all(sorted(s) == [f"r{k}" for k in range(4)] for s in doc["sparsity"].values())
    same, other = doc["cka"]["seed0-vs-seed1-init0"], doc["cka"]["seed0-vs-seed1"]
    for cell in (*same.values(), *other.values()):
        mods = cell["modules"]
        assert [m["position"] for m in mods] == list(range(len(mods))) and len(mods) > 20
        assert all(0 <= m["jaccard"] <= 1 and set(m["activations"]) == {"100", "500", "900"} for m in mods)
    mean = lambda cell: np.mean([m["weights_cka"] for m in cell["modules"] if m["weights_cka"] is not None])  # noqa: E731
    assert mean(same["r0"]) > 0.9 > 0.3 > mean(other["r0"])  # 8 steps from one theta_0 against another init
    assert all(m["jaccard"] == 1.0 for m in same["r0"]["modules"])  # dense: every mask all ones
    assert {r["mode"] for r in doc["rank_table"]} == {"weights", "jaccard"} | {f"{k}@t{t}" for k in ("linear", "rbf")
                                                                               for t in (100, 500, 900)}
    assert set(doc["claim"]) == {r["mode"] for r in doc["rank_table"]}
    rows = {r["schedule"]: r for r in doc["mixed"]}
    assert sorted(rows) == sorted(["dense", "ticket", "dense-first@600", "ticket-first@600", "dense-first@300",
                                   "ticket-first@300"])
    dense, ticket = doc["macs"]["r0"]["sparse_macs"], doc["macs"][f"r{last}"]["sparse_macs"]
    assert ticket < dense == doc["macs"]["r0"]["dense_macs"]
    assert rows["dense-first@600"]["macs"] == dense + 3 * ticket and rows["ticket-first@600"]["macs"] == 3 * dense + ticket
    assert all(r["n_samples"] == 16 and r["fd_lenet"] > 0 and not r["score_reused"] for r in rows.values())
    assert len({r["fd_lenet"] for r in rows.values()}) == 6  # each schedule samples its own images
    assert doc["mixed_summary"]["better_order"] in ("dense-first", "ticket-first", "neither")
    table = (out / "results" / "part3_table.md").read_text()
    assert "| seed0-vs-seed1 | rbf@t900 |" in table and "| ticket-first@300 | 2 | 2 |" in table
    for png in ("part3_cka_seed0-vs-seed1-init0.png", "part3_cka_seed0-vs-seed1.png", "part3_rank.png", "part3_mixed.png"):
        assert (out / "results" / png).exists()

    def trained() -> dict[str, list]:
        return {s: [(k, RunStore(out / s).round_record(k)["metrics"]["seconds"]) for k in RunStore(out / s).finished_rounds()]
                for s in ("seed0", "seed1-init0", "seed1")}

    before = trained()
    again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)  # resumes: nothing redone
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    doc2 = json.loads((out / "results" / "part3.json").read_text())
    assert trained() == before
    assert all(v["reused"] for j, v in doc2["jobs"].items() if j.startswith(("cka:", "mixed:")))
    assert [r["fd_lenet"] for r in doc2["mixed"]] == [r["fd_lenet"] for r in doc["mixed"]]
    assert doc2["cka"] == json.loads(json.dumps({p: {k: {**c, "reused": True} for k, c in by.items()}
                                                 for p, by in doc["cka"].items()}))

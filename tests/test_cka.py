"""CKA: the properties Kornblith et al. (2019) and Nguyen et al. (2021) state."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from ticketforge import ComponentRecord, Option, hookimpl
from ticketforge.protocols import Similarity
from ticketforge.similarity.cka import CKA, activation_cka, cka, mask_jaccard, weight_cka


@pytest.fixture
def x() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(50, 20))


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("debiased", [False, True])
def test_self_similarity_is_one(x, kernel, debiased):
    assert cka(x, x, kernel, debiased=debiased) == pytest.approx(1.0, abs=1e-10)


def test_accepts_torch_tensors(x):
    t = torch.from_numpy(x).float()
    assert cka(t, t * 2.0) == pytest.approx(1.0, abs=1e-6)


def test_linear_invariant_to_orthogonal_transform_and_isotropic_scaling(x):
    rng = np.random.default_rng(1)
    y = x @ rng.normal(size=(20, 30)) + 0.5 * rng.normal(size=(50, 30))
    q, _ = np.linalg.qr(rng.normal(size=(30, 30)))
    base = cka(x, y)
    assert 0.0 < base < 1.0
    assert cka(x, y @ q) == pytest.approx(base, abs=1e-10)
    assert cka(3.7 * x, y) == pytest.approx(base, abs=1e-10)
    assert cka(x, 0.01 * y @ q, debiased=True) == pytest.approx(cka(x, y, debiased=True), abs=1e-10)


def test_debiased_removes_the_bias_of_wide_random_matrices():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(32, 2000)), rng.normal(size=(32, 2000))
    assert cka(a, b) > 0.8  # the biased estimator sees structure in pure noise when p >> n
    assert abs(cka(a, b, debiased=True)) < 0.1


def test_paper_variant_is_opt_in_and_not_scale_invariant(x):
    assert cka(x, x, variant="paper-no-sqrt") != pytest.approx(1.0)
    assert cka(x, 2 * x, variant="paper-no-sqrt") != pytest.approx(cka(x, x, variant="paper-no-sqrt"))
    with pytest.raises(ValueError):
        cka(x, x, variant="nope")


def test_sample_count_mismatch_is_an_error(x):
    with pytest.raises(ValueError, match="same number of samples"):
        cka(x, x[:10])


def test_constant_representation_gives_nan(x):
    assert np.isnan(cka(x, np.zeros((50, 3))))


def test_similarity_protocol():
    measure = CKA(kernel="rbf", debiased=True)
    assert isinstance(measure, Similarity)
    data = np.random.default_rng(3).normal(size=(10, 4))
    assert measure(data, data) == pytest.approx(1.0)


def test_weight_cka_reads_the_masked_weight():
    torch.manual_seed(0)
    a, b = nn.Conv2d(16, 32, 3), nn.Conv2d(16, 32, 3)
    assert weight_cka(a, a) == pytest.approx(1.0)
    assert abs(weight_cka(a, b)) < 0.2
    c = nn.Conv2d(16, 32, 3)
    c.load_state_dict(a.state_dict())
    prune.l1_unstructured(c, "weight", 0.5)
    assert weight_cka(a, c) < 1.0 - 1e-6  # the pruned zeros are seen


def test_activation_cka_per_module():
    torch.manual_seed(0)
    net_a = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    net_b = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    inputs = torch.randn(64, 8)
    same = activation_cka(net_a, net_a, inputs, ["0", "2"])
    assert list(same) == ["0", "2"] and all(v == pytest.approx(1.0) for v in same.values())
    other = activation_cka(net_a, net_b, (inputs,), {"0": "0", "2": "2"})
    assert all(v < 0.999 for v in other.values())


def test_mask_jaccard():
    a = torch.tensor([1, 1, 0, 0], dtype=torch.bool)
    b = torch.tensor([1, 0, 1, 0], dtype=torch.bool)
    assert mask_jaccard(a, a) == 1.0
    assert mask_jaccard(a, b) == pytest.approx(1 / 3)
    assert mask_jaccard(torch.zeros(3, dtype=torch.bool), torch.zeros(3, dtype=torch.bool)) == 1.0


def test_nearly_constant_representation_gives_nan_not_noise(x):
    rows = np.ones((50, 1)) @ np.random.default_rng(4).normal(size=(1, 30))  # every sample identical
    assert np.isnan(cka(x, rows + 1e-15 * np.random.default_rng(5).normal(size=rows.shape), debiased=True))


def test_weight_cka_sees_weights_loaded_after_pruning_without_a_forward():
    torch.manual_seed(0)
    a, b = nn.Conv2d(8, 16, 3), nn.Conv2d(8, 16, 3)
    prune.custom_from_mask(b, "weight", torch.ones_like(b.weight))
    with torch.no_grad():
        b.weight_orig.copy_(a.weight)  # as a checkpoint loader does: b.weight is stale until a forward
    assert weight_cka(a, b) == pytest.approx(1.0)


# -- the ``ticketforge compare`` command on a toy run -------------------------------------------------
def test_compare_command(toy_config, registry, monkeypatch, tmp_path):
    import dataclasses
    import json

    from click.testing import CliRunner

    import ticketforge.registry as reg
    from ticketforge import Engine
    from ticketforge.cli.main import cli
    monkeypatch.setattr(reg, "_registry", registry)
    config = dataclasses.replace(toy_config, rounds=1, steps_per_round=10)
    Engine(config, registry=registry).run()
    run = config.out
    runner = CliRunner()
    same = json.loads(runner.invoke(cli, ["compare", run, run, "--json"], catch_exceptions=False).output)
    assert [r["module"] for r in same["modules"]] == ["inp", "mid", "fc", "out"]  # forward order
    assert same["jaccard"] == 1.0
    assert all(r["cka"] is None or r["cka"] == pytest.approx(1.0) for r in same["modules"])
    assert same["modules"][-1]["cka"] is None  # 1 output channel: debiased CKA is undefined
    dense = json.loads(runner.invoke(cli, ["compare", run, run, "--round", "0", "--round-b", "1", "--json"],
                                     catch_exceptions=False).output)
    assert dense["jaccard"] == pytest.approx(0.8, abs=0.01)  # round 0 keeps all, round 1 drops 20%
    result = runner.invoke(cli, ["compare", run, run, "--round", "0", "--round-b", "1", "--mode", "activations",
                                 "--plot", str(tmp_path / "cka.png")], catch_exceptions=False)
    assert result.exit_code == 0 and (tmp_path / "cka.png").stat().st_size > 0


def test_cka_plot_names_the_modules_and_keeps_the_legend_off_the_axes_and_labels():
    pytest.importorskip("matplotlib")
    from ticketforge.plots import cka_figure
    modules = ["time_embed.0", "down.0.res.conv1", "mid.attn.qkv", "out.conv"]
    rows = [{"module": m, "cka": c, "jaccard": 0.5} for m, c in zip(modules, [0.9, None, 0.4, 0.7])]
    fig = cka_figure({"a/3 vs b/3": rows, "a/3 vs c/3": rows}, title="weights CKA per module")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == modules  # names, not module numbers
    legend = ax.get_legend().get_window_extent(renderer)
    covered = [ax.get_window_extent(renderer), ax.yaxis.label.get_window_extent(renderer),
               ax.xaxis.label.get_window_extent(renderer), *(t.get_window_extent(renderer) for t in
                                                             ax.get_xticklabels() + ax.get_yticklabels())]
    assert not any(legend.overlaps(box) for box in covered)
    import matplotlib.pyplot as plt
    plt.close(fig)


class _Half:
    """A similarity plugin: every pair of representations is 0.5 alike (times a declared factor)."""

    @staticmethod
    @hookimpl
    def ticketforge_similarities() -> list[ComponentRecord]:
        return [ComponentRecord("half", lambda factor=1.0: (lambda x, y: 0.5 * factor), "a constant",
                                (Option("factor", float, 1.0, "scales it"),))]


def test_compare_looks_the_similarity_up_by_name(toy_config, monkeypatch):
    import dataclasses
    import json

    from click.testing import CliRunner
    from helpers import core_registry

    import ticketforge.registry as reg
    from ticketforge import Engine
    from ticketforge.cli.main import cli
    registry = core_registry(_Half())
    monkeypatch.setattr(reg, "_registry", registry)
    config = dataclasses.replace(toy_config, rounds=1, steps_per_round=4)
    Engine(config, registry=registry).run()
    run, runner = config.out, CliRunner()
    for mode in ("weights", "activations"):
        doc = json.loads(runner.invoke(cli, ["compare", run, run, "--json", "--mode", mode, "--similarity", "half",
                                             "--similarity-option", "factor=2"], catch_exceptions=False).output)
        assert doc["similarity"] == "half" and {r["cka"] for r in doc["modules"]} == {1.0}
    bad = runner.invoke(cli, ["compare", run, run, "--similarity", "hlaf"])
    assert bad.exit_code == 2 and "unknown similarity 'hlaf'" in bad.stderr and "Did you mean 'half'" in bad.stderr
    bad = runner.invoke(cli, ["compare", run, run, "--similarity", "half", "--similarity-option", "f=1"])
    assert bad.exit_code == 2 and "similarity 'half' has no option 'f'" in bad.stderr

"""Theoretical MACs: fvcore against the analytic formula and against torch's FlopCounterMode."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune
from torch.utils.flop_counter import FlopCounterMode

from ticketforge.metrics.flops import count_macs, effective_parameters, flops_report
from ticketforge.protocols import ModuleGroup


class Attention(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(4, ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, 1, c, h * w).transpose(-1, -2).unbind(1)
        return x + F.scaled_dot_product_attention(q, k, v).transpose(-1, -2).reshape(b, c, h, w)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.attn = Attention(16)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        h = self.attn(F.silu(self.conv2(F.silu(self.conv1(x)))))
        return self.fc(h.flatten(1))


def groups(net: Net) -> list[ModuleGroup]:
    return [ModuleGroup("stem", [("conv1", net.conv1), ("conv2", net.conv2)]),
            ModuleGroup("head", [("attn.qkv", net.attn.qkv), ("fc", net.fc)])]


def pruned(amount: float) -> Net:
    torch.manual_seed(0)
    net = Net()
    for _, module in net.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            prune.random_unstructured(module, "weight", amount)
    return net


X = torch.randn(2, 3, 8, 8)


def test_dense_conv_macs_match_the_formula():
    count = count_macs(Net(), (X,))
    # batch * C_out * C_in * k * k * H_out * W_out
    assert count.leaves["conv1"].dense == 2 * 8 * 3 * 3 * 3 * 8 * 8
    assert count.leaves["conv2"].dense == 2 * 16 * 8 * 3 * 3 * 4 * 4
    assert count.leaves["fc"].dense == 2 * 256 * 10


def test_sdpa_handle_counts_attention():
    count = count_macs(Net(), (X,))
    hw, c = 4 * 4, 16
    assert "aten::scaled_dot_product_attention" not in count.uncounted_ops
    assert "aten::mul" not in count.uncounted_ops
    norm = count.leaves["attn.norm"].dense
    assert count.other == 2 * hw * hw * (c + c) + norm  # Q K^T plus A V, plus the norm


def test_sparse_macs_scale_with_density():
    dense = count_macs(Net(), (X,))
    for amount in (0.5, 0.9):
        count = count_macs(pruned(amount), (X,))
        assert count.dense == dense.dense and count.other == dense.other
        for name in ("conv1", "conv2", "attn.qkv", "fc"):
            leaf = count.leaves[name]
            assert leaf.density == pytest.approx(1 - amount, abs=0.01)
            assert leaf.sparse == pytest.approx(leaf.dense * leaf.density)
        weight = dense.dense - dense.other
        assert count.sparse == pytest.approx(dense.other + weight * (1 - amount), rel=0.01)


def test_flop_counter_mode_cross_check():
    """torch counts 2 flops per MAC; with a raw-tensor formula it counts nonzero-weight MACs directly."""
    net = pruned(0.7)

    def conv_nonzero(x, w, *args, out_val=None, **kwargs):
        return 2 * int(torch.count_nonzero(w)) * x.shape[0] * out_val.shape[2:].numel()

    def addmm_nonzero(bias, x, wt, *args, out_val=None, **kwargs):
        return 2 * int(torch.count_nonzero(wt)) * x.shape[0]

    for f in (conv_nonzero, addmm_nonzero):
        f._get_raw = True
    aten = torch.ops.aten
    count = count_macs(net, (X,))
    with FlopCounterMode(display=False) as dense_mode:
        net(X)
    with FlopCounterMode(display=False, custom_mapping={aten.convolution: conv_nonzero,
                                                        aten.addmm: addmm_nonzero}) as sparse_mode:
        net(X)
    dense_ops = dense_mode.get_flop_counts()["Global"]
    weight_dense = dense_ops[aten.convolution] + dense_ops[aten.addmm]
    assert weight_dense == 2 * sum(leaf.weight for leaf in count.leaves.values())
    sparse_ops = sparse_mode.get_flop_counts()["Global"]
    nonzero = sparse_ops[aten.convolution] + sparse_ops[aten.addmm]
    assert nonzero == pytest.approx(2 * sum(leaf.sparse for leaf in count.leaves.values() if leaf.weight), rel=1e-9)
    # attention (bmm on CPU, a fused kernel elsewhere): torch counts 2 * (QK^T + AV), and no norm
    attention = sum(v for op, v in dense_ops.items() if op not in (aten.convolution, aten.addmm))
    assert attention == 2 * (count.other - count.leaves["attn.norm"].dense)


def test_report_shape_and_groups():
    net = pruned(0.5)
    report = flops_report(net, (X,), groups(net))
    assert set(report) >= {"params", "nonzero_params", "dense_macs", "sparse_macs", "other_macs", "by_group"}
    assert report["params"] == sum(p.numel() for p in Net().parameters())
    assert report["nonzero_params"] < report["params"]
    stem, head = report["by_group"]
    assert (stem["index"], stem["name"], head["name"]) == (0, "stem", "head")
    assert stem["params"] == 8 * 3 * 9 + 16 * 8 * 9
    assert stem["nonzero_params"] == pytest.approx(stem["params"] / 2, abs=1)
    assert stem["dense_macs"] == 2 * (8 * 3 * 9 * 64 + 16 * 8 * 9 * 16)
    assert stem["sparse_macs"] == pytest.approx(stem["dense_macs"] / 2, rel=0.01)
    assert sum(g["dense_macs"] for g in report["by_group"]) + report["other_macs"] == report["dense_macs"]


def test_effective_parameters_read_masked_weights():
    total, nonzero = effective_parameters(pruned(0.9))
    assert nonzero < 0.2 * total


def test_one_trace_serves_every_round():
    dense = count_macs(Net(), (X,))
    net = pruned(0.8)
    reused = flops_report(net, (X,), groups(net), count=dense)
    assert reused == flops_report(net, (X,), groups(net))


def test_density_reads_weights_loaded_after_pruning_without_a_forward():
    net = Net()
    prune.custom_from_mask(net.conv1, "weight", torch.ones_like(net.conv1.weight))
    with torch.no_grad():
        net.conv1.weight_orig.zero_()  # the stale net.conv1.weight still holds the old values
    count = count_macs(Net(), (X,))
    assert flops_report(net, (X,), groups(net), count=count)["by_group"][0]["nonzero_params"] == 16 * 8 * 9


# -- the ``ticketforge flops`` command on a toy run ------------------------------------------------
@pytest.fixture
def toy_run(toy_config, registry, monkeypatch):
    import dataclasses

    import ticketforge.registry as reg
    from ticketforge import Engine
    monkeypatch.setattr(reg, "_registry", registry)
    config = dataclasses.replace(toy_config, rounds=1, steps_per_round=10)
    Engine(config, registry=registry).run()
    return config.out


def test_flops_command(toy_run):
    import json

    from click.testing import CliRunner

    from ticketforge.cli.main import cli
    runner = CliRunner()
    dense = json.loads(runner.invoke(cli, ["flops", "--model", "toy", "--json"], catch_exceptions=False).output)
    last = json.loads(runner.invoke(cli, ["flops", toy_run, "--json"], catch_exceptions=False).output)
    assert last["round"] == 1 and last["dense_macs"] == dense["dense_macs"]
    assert last["sparse_macs"] < 0.9 * dense["sparse_macs"]
    assert [g["name"] for g in last["by_group"]] == ["inp", "mid", "out"]
    human = runner.invoke(cli, ["flops", toy_run, "--round", "0"])
    assert human.exit_code == 0 and "theoretical" in human.output
    neither = runner.invoke(cli, ["flops"])
    assert neither.exit_code == 2 and "RUN" in neither.output

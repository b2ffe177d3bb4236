"""What the engine asks torch.compile for, per device and graph mode (the speed itself: benchmarks/)."""

from __future__ import annotations

import torch

from ticketforge.engine.engine import compile_options


def test_cpu_compiles_with_torch_defaults():
    assert compile_options(torch.device("cpu"), capture=False) == {}


def test_gpu_inside_the_whole_step_graph_gets_channels_last_layout_and_no_graphs_of_its_own():
    assert compile_options(torch.device("cuda"), capture=True) == {"options": {"force_layout_optimization": True}}


def test_gpu_without_the_step_graph_lets_torch_compile_record_cuda_graphs():
    options = compile_options(torch.device("cuda"), capture=False)["options"]
    assert options["triton.cudagraphs"] is True  # what mode="reduce-overhead" sets
    assert "force_layout_optimization" not in compile_options(torch.device("cuda"), False, channels_last=False)["options"]


def test_every_option_is_a_setting_this_torch_knows():
    known = torch._inductor.config.get_config_copy()
    for capture in (True, False):
        for name in compile_options(torch.device("cuda"), capture)["options"]:
            assert name in known, f"torch {torch.__version__} has no inductor setting {name!r}"


def test_a_network_compiled_with_them_runs_and_matches_eager_on_the_cpu():
    # The options are validated by torch.compile itself; run them through inductor on the CPU.
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.GroupNorm(4, 8), torch.nn.SiLU(),
                              torch.nn.Conv2d(8, 4, 3, padding=1))
    x = torch.randn(2, 3, 8, 8)
    options = compile_options(torch.device("cuda"), capture=True)
    torch._dynamo.reset()
    compiled = torch.compile(net, **options)
    torch.testing.assert_close(compiled(x), net(x), rtol=1e-4, atol=1e-5)

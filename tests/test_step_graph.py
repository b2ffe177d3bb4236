"""The training step captured as one CUDA graph: same numbers as the eager step, resumable.

The CUDA tests run on a GPU machine (the suite skips them elsewhere); the EMA's device-side update
is checked on the CPU too. Those on the DDPM U-Net live with its plugin
(plugins/ticketforge-ddpm/tests/test_step_graph_unet.py).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import StopAt

from ticketforge import Engine
from ticketforge.engine.data import BatchSource
from ticketforge.engine.ema import EMA
from ticketforge.engine.train import make_optimizer, make_stepper, train_round

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_a_round_ignores_gradients_left_on_the_network():
    from toy_plugin import ToySpec
    spec = ToySpec()
    images = torch.randint(0, 256, (32, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    results = []
    for stale in (False, True):
        torch.manual_seed(0)
        network = spec.build()
        if stale:
            for p in network.parameters():
                p.grad = torch.ones_like(p)
        optimizer = make_optimizer(network, 1e-2, 0.0, torch.device("cpu"))
        stepper = make_stepper(spec, network, optimizer, None, torch.Generator().manual_seed(0), torch.device("cpu"),
                               0, lr=1e-2)
        train_round(stepper, BatchSource(images, 8, 0, torch.device("cpu")), round_index=0, start_step=0, steps=3,
                    log_every=1, checkpoint_every=10 ** 9, on_log=lambda s, m: None, on_checkpoint=lambda s: None)
        results.append([p.detach().clone() for p in network.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


def test_device_side_ema_update_matches_the_host_one():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    host, dev = EMA(net, 0.99), EMA(net, 0.99)
    dev.start_capture()
    for _ in range(30):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        host.update()
        dev.update_captured()
    for a, b in zip(host.shadow, dev.shadow):
        torch.testing.assert_close(a, b)



@cuda
def test_captured_run_resumes_mid_round_to_the_same_masks(toy_config, registry, tmp_path):
    config = dataclasses.replace(toy_config, device="cuda", cuda_graphs=True)
    reference = Engine(dataclasses.replace(config, out=str(tmp_path / "ref")), registry=registry).run()
    registry.pm.register(StopAt(1, 15), name="stop")
    with pytest.raises(KeyboardInterrupt):  # the command line turns it into its one line (cli/main.py)
        Engine(config, registry=registry).run()
    registry.pm.unregister(name="stop")
    resumed = Engine(config, registry=registry).run()
    assert [r["mask_sha256"] for r in resumed] == [r["mask_sha256"] for r in reference]
    assert resumed[-1]["metrics"]["loss"] == pytest.approx(reference[-1]["metrics"]["loss"], rel=1e-4)

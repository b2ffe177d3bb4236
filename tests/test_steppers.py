"""The round's steps behind one interface (engine/train.py): the stepper is chosen once per round,
the eager one sets the warm-up learning rate each step, and whatever stops a round releases it."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from toy_plugin import ToySpec

import ticketforge.engine.loop as loop_module
from ticketforge import Engine
from ticketforge.engine.data import BatchSource
from ticketforge.engine.train import CapturedStep, EagerStep, Tally, make_optimizer, make_stepper, train_round

CPU = torch.device("cpu")
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _toy(device: torch.device = CPU, capture: bool = False, **kw):
    spec = ToySpec()
    torch.manual_seed(0)
    network = spec.build().to(device)
    optimizer = make_optimizer(network, 1e-2, 0.0, device, capturable=capture and device.type == "cuda")
    gen = torch.Generator(device=device).manual_seed(0)
    images = torch.randint(0, 256, (32, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    stepper = make_stepper(spec, network, optimizer, None, gen, device, 0, lr=1e-2, capture=capture, **kw)
    return stepper, optimizer, BatchSource(images, 8, 0, device)


def _train(stepper, batches, steps: int, **kw):
    logs: list[tuple[int, dict]] = []
    summary = train_round(stepper, batches, round_index=0, start_step=0, steps=steps, log_every=1,
                          checkpoint_every=10 ** 9, on_log=lambda s, m: logs.append((s, m)),
                          on_checkpoint=lambda s: None, **kw)
    return summary, logs


def test_a_cpu_round_steps_eagerly_even_when_capture_is_asked():
    stepper, _, batches = _toy(capture=True)
    assert isinstance(stepper, EagerStep)
    summary, logs = _train(stepper, batches, 2)
    assert "cuda_graph" not in summary and len(logs) == 2


def test_the_eager_step_follows_the_warm_up():
    stepper, optimizer, batches = _toy(warmup_steps=4)
    seen: list[float] = []
    _, logs = _train(stepper, batches, 6, on_step=lambda s: seen.append(optimizer.param_groups[0]["lr"]))
    want = [1e-2 * min(1.0, (s + 1) / 4) for s in range(6)]
    assert seen == pytest.approx(want) and [m["lr"] for _, m in logs] == pytest.approx(want)


class _Failing:
    """A stepper whose third step fails; it records whether it was released."""

    def __init__(self):
        self.tally, self.steps, self.released = Tally(CPU, 0), 0, False

    def step(self, batch, step):
        self.steps += 1
        if self.steps == 3:
            raise RuntimeError("step failed")
        self.tally.step.add_(1)
        self.tally.add(torch.tensor(1.0))
        return 0.5

    def release(self):
        self.released = True
        return {"extra": 1}


def test_any_stepper_is_released_and_adds_to_the_summary():
    ok = _Failing()
    summary, logs = _train(ok, _toy()[2], 2)
    assert ok.released and summary == {"loss": 1.0, "extra": 1} and len(logs) == 2
    failing = _Failing()
    with pytest.raises(RuntimeError, match="step failed"):
        _train(failing, _toy()[2], 5)
    assert failing.released


def test_the_engine_chooses_one_stepper_per_round(toy_config, registry, monkeypatch):
    made = []
    real = loop_module.make_stepper
    monkeypatch.setattr(loop_module, "make_stepper", lambda *a, **k: made.append(real(*a, **k)) or made[-1])
    Engine(dataclasses.replace(toy_config, rounds=1), registry=registry).run()
    assert [type(s) for s in made] == [EagerStep, EagerStep]


@cuda
def test_a_cuda_round_is_captured_only_when_asked():
    assert isinstance(_toy(torch.device("cuda"))[0], EagerStep)
    stepper, _, batches = _toy(torch.device("cuda"), capture=True)
    assert isinstance(stepper, CapturedStep)
    summary, logs = _train(stepper, batches, 6)
    assert summary["cuda_graph"] is True and len(logs) == 6

"""The ``ticketforge`` command with the toy plugin, sending itself a signal at a chosen moment
(interruption tests).

Usage: python run_toy_cli.py [--signal-at-step R:S SIG | --signal-in-sample SIG | --signal-in-write NAME SIG]
       -- ticketforge arguments...

``toy-slow`` is the toy model whose sampler signals (when asked) and then keeps sampling.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
import toy_plugin  # noqa: E402
from helpers import core_registry  # noqa: E402

import ticketforge.registry as registry_module  # noqa: E402
import ticketforge.store.atomic as atomic  # noqa: E402
from ticketforge import ComponentRecord, hookimpl  # noqa: E402
from ticketforge.cli.main import main  # noqa: E402

SAMPLE_SIGNAL: list[int] = []


class SlowSpec(toy_plugin.ToySpec):
    name = "toy-slow"

    def sample(self, network, n, *, generator=None, **options):
        if SAMPLE_SIGNAL:
            os.kill(os.getpid(), SAMPLE_SIGNAL[0])
        out = super().sample(network, n, generator=generator)
        for _ in range(200 if SAMPLE_SIGNAL else 0):  # a long sampling loop the signal lands in
            out = super().sample(network, n, generator=generator)
        return out


class Plugin:
    @hookimpl
    def ticketforge_models(self):
        return [ComponentRecord("toy-slow", SlowSpec, "the toy model with a slow sampler")]


class SignalAtStep:
    def __init__(self, round_index: int, step: int, signum: int):
        self.round_index, self.step, self.signum = round_index, step, signum

    @hookimpl
    def ticketforge_train_step(self, run, round_index, step, metrics):
        if (round_index, step) == (self.round_index, self.step):
            os.kill(os.getpid(), self.signum)


def signal_during_write(name: str, signum: int) -> None:
    """The signal arrives after the temp file of ``name`` is written, before it replaces the old file."""
    real = os.replace

    def replace(src, dst):
        if Path(dst).name == name:
            os.kill(os.getpid(), signum)
        return real(src, dst)

    atomic.os.replace = replace  # type: ignore[attr-defined]


def run(argv: list[str]) -> None:
    split = argv.index("--")
    ours, args = argv[:split], argv[split + 1:]
    torch.set_num_threads(1)  # as the tests in-process (conftest.py)
    registry = core_registry(Plugin())  # the toy needs no other plugin
    if "--signal-at-step" in ours:
        i = ours.index("--signal-at-step")
        round_index, step = map(int, ours[i + 1].split(":"))
        registry.pm.register(SignalAtStep(round_index, step, getattr(signal, ours[i + 2])))
    if "--signal-in-sample" in ours:
        SAMPLE_SIGNAL.append(getattr(signal, ours[ours.index("--signal-in-sample") + 1]))
    if "--signal-in-write" in ours:
        i = ours.index("--signal-in-write")
        signal_during_write(ours[i + 1], getattr(signal, ours[i + 2]))
    registry_module._registry = registry
    sys.argv = ["ticketforge", *args]
    main()


if __name__ == "__main__":
    run(sys.argv[1:])

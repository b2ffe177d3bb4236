"""Different networks at different denoising steps ("dense for the noisy steps, the ticket after").

A schedule ``[(s, other), ...]`` after a first network means: the first network for model
timesteps ``t >= s``, ``other`` for ``t < s``; further switches at lower ``s`` follow the same rule.
Timesteps are the network's 0-based inputs (``T - 1`` is the noisiest).
"""

from __future__ import annotations

from typing import Callable, Sequence, cast

import torch
from torch import Tensor, nn

NetworkSchedule = Sequence[tuple[int, nn.Module]]
"""``[(s, network), ...]``: ``network`` denoises every model timestep below ``s`` (until a lower switch)."""


def _sorted(schedule: NetworkSchedule) -> list[tuple[int, nn.Module]]:
    return sorted(schedule, key=lambda item: item[0], reverse=True)


def network_picker(network: nn.Module, schedule: NetworkSchedule = ()) -> Callable[[int], nn.Module]:
    """A function ``t -> network`` that applies ``schedule`` after ``network``."""
    switches = _sorted(schedule)

    def pick(t: int) -> nn.Module:
        chosen = network
        for step, net in switches:
            if t < step:
                chosen = net
        return chosen

    return pick


class TimestepSwitch(nn.Module):
    """One denoiser made of several: routes each example to the network its timestep falls to.

    Usable wherever a network is (samplers, evaluators): ``spec.sample(switch_at(500, dense,
    ticket), 64)``. Samplers call one network per step, since all examples share the timestep.
    """

    def __init__(self, first: nn.Module, schedule: NetworkSchedule) -> None:
        super().__init__()
        switches = _sorted(schedule)
        self.steps = [step for step, _ in switches]
        self.networks = nn.ModuleList([first, *(net for _, net in switches)])

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        # index of the network per example: how many switch points lie above its timestep
        index = cast(Tensor, sum((t < step).long() for step in self.steps)) if self.steps else torch.zeros_like(t)
        if bool((index == index[0]).all()):
            return self.networks[int(index[0])](x, t)
        out = torch.empty_like(x)
        for i in index.unique().tolist():
            rows = index == i
            out[rows] = self.networks[i](x[rows], t[rows]).to(out.dtype)
        return out


def switch_at(step: int, noisy: nn.Module, clean: nn.Module) -> TimestepSwitch:
    """A denoiser that uses ``noisy`` for ``t >= step`` and ``clean`` for ``t < step``:
    ``switch_at(500, dense, ticket)`` is dense-then-ticket, ``switch_at(500, ticket, dense)`` the reverse."""
    return TimestepSwitch(noisy, [(step, clean)])

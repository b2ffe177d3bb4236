"""How many threads torch's CPU operators use (``--threads``): how a run executes, not what it is.

``auto`` picks one thread on a CPU of at most two usable cores: there a second thread makes the
U-Nets' small convolutions several times slower as soon as another process wants a core, because
OpenMP threads spin-wait for the one that process holds (docs/performance.md, "On a CPU"). With more
cores ``auto`` keeps torch's default (a thread per physical core), and on a GPU, or when
``OMP_NUM_THREADS`` is set, it leaves torch alone.

The count is recorded (``config.json`` and each round's ``metrics.threads``) but is no part of a
run's identity, like ``world_size``: another count sums in another order, so the weights agree to
float rounding, not bit for bit, and a mask entry at a pruning threshold may fall the other way.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator, Mapping

from .errors import ConfigError

if TYPE_CHECKING:  # torch is imported where threads are applied: config checks (and `list`) need none
    import torch

AUTO = "auto"
SMALL_CPU_CORES = 2  # at most this many usable cores: one thread


THREADS_HELP = ("Threads of torch's CPU operators. auto: 1 on a CPU of at most 2 cores (where two threads "
                "run several times slower once other work shares the cores; docs/performance.md), torch's "
                "default otherwise, on a GPU, or when OMP_NUM_THREADS is set. Another count changes results "
                "only by float rounding.")


def check_threads(value: object, flag: str = "threads") -> int | str:
    """``value`` as a thread setting (``auto`` or a count >= 1), or a one-line :class:`ConfigError`."""
    if value == AUTO:
        return AUTO
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ConfigError(f"{flag} must be auto or a number of threads >= 1 (e.g. 1), not {value!r}")


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, which taskset and cgroups narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity masks (macOS)
        return max(1, os.cpu_count() or 1)


def resolve_threads(setting: int | str, device: torch.device, *, cores: int | None = None,
                    environ: Mapping[str, str] | None = None) -> int | None:
    """The thread count ``setting`` asks for on ``device``; None: leave torch's own choice."""
    setting = check_threads(setting)
    if setting != AUTO:
        return int(setting)
    environ = os.environ if environ is None else environ
    if device.type != "cpu" or environ.get("OMP_NUM_THREADS"):
        return None
    return 1 if (cores if cores is not None else usable_cores()) <= SMALL_CPU_CORES else None


def apply_threads(setting: int | str, device: torch.device) -> int:
    """Set torch's intra-op thread count as ``setting`` asks (for the rest of the process); returns it."""
    import torch

    wanted = resolve_threads(setting, device)
    if wanted is not None and wanted != torch.get_num_threads():
        torch.set_num_threads(wanted)
    return torch.get_num_threads()


@contextmanager
def threads_applied(setting: int | str, device: torch.device) -> Iterator[int]:
    """:func:`apply_threads` for the duration of a block (a Python caller keeps its own setting after)."""
    import torch

    before = torch.get_num_threads()
    try:
        yield apply_threads(setting, device)
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)

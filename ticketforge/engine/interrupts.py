"""Ctrl-C and SIGTERM during training: the step in flight finishes, its state is checkpointed, then the
signal is delivered as it would have been (KeyboardInterrupt, the CLI's SIGTERM exception, or the
default action).

A signal that lands inside a step cannot be checkpointed there: Adam may have updated some tensors and
not others. So :class:`StepBoundary` holds it until the loop reaches the end of a step. It holds a
signal only while some finished step is not yet saved; otherwise (the first step of an attempt, which
may be a long compilation, or a second Ctrl-C) it is delivered at once, as before.
"""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StepBoundary:
    """A context in which SIGINT and SIGTERM wait for :meth:`deliver` while ``unsaved`` is set.

    Inert outside the main thread (Python runs signal handlers there only) and for a signal that is
    ignored. On leaving without an error, a signal still held is delivered.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.unsaved = False  # a finished step has not been checkpointed: worth finishing the current one
        self.pending: int | None = None
        self.held = False  # the signal that ended the block waited for a step's end (its state is saved)
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StepBoundary":
        if self.enabled and threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                previous = signal.getsignal(signum)
                if previous not in (signal.SIG_IGN, None):
                    self._previous[signum] = previous
                    signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.pending is None and self.unsaved:
            self.pending = signum  # noted only: the step in flight finishes first
            return
        self._deliver(signum, frame)

    def _restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def _deliver(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous.get(signum, signal.SIG_DFL)
        self._restore()
        self.pending = None
        if callable(previous):
            previous(signum, frame)  # raises KeyboardInterrupt (or the CLI's Terminated)
        else:  # SIG_DFL: the default action, now that the state is saved
            os.kill(os.getpid(), signum)

    def deliver(self) -> None:
        """Deliver the held signal, if any (after the checkpoint of the step it waited for)."""
        if self.pending is not None:
            self.held = True
            self._deliver(self.pending, None)

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if kind is None and self.pending is not None:
            self.deliver()
        self._restore()


@dataclass(frozen=True)
class InterruptedAt:
    """Where an interruption left a run's training (attached to the KeyboardInterrupt as ``ticketforge_at``).

    Attributes:
        folder: the run (or branch) folder.
        what: ``round K`` or ``branch NAME``.
        step: the step the checkpoint holds (None: no checkpoint of this round).
        steps: the round's steps.
        now: True when the checkpoint was written on the way out (no step lost).
        finished: the round finished before the signal was delivered.
    """

    folder: str
    what: str
    step: int | None
    steps: int
    now: bool = False
    finished: bool = False

    def describe(self) -> str:
        if self.finished:
            return f"{self.what} finished and was saved"
        if self.step is None:
            return f"{self.what} had no checkpoint yet and restarts from step 0"
        if self.now:
            return f"{self.what} was checkpointed at step {self.step} of {self.steps}"
        return f"{self.what} resumes from its checkpoint at step {self.step} of {self.steps} (later steps are lost)"


def attach(exc: BaseException, at: InterruptedAt) -> None:
    """Record ``at`` on ``exc`` once (the innermost training loop knows best)."""
    if getattr(exc, "ticketforge_at", None) is None:
        exc.ticketforge_at = at  # type: ignore[attr-defined]


def interrupted_at(exc: BaseException) -> InterruptedAt | None:
    return getattr(exc, "ticketforge_at", None)

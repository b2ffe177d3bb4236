"""Progress of long work (training rounds, sampling, featurizer training) as events, shown as asked.

Producers open a :func:`task` and advance it; it sends :class:`ProgressEvent`s to the progress
display of the surrounding :func:`using` block (nothing when there is none). ``progress`` arguments
of the Python API take:

- ``"rich"``: bars on stderr (rate, ETA), for a terminal;
- ``"log"``: plain lines on stderr, at most one per task every ``LogProgress.every`` seconds (none
  for a task done within a second), for log files;
- ``"none"``: nothing;
- None: the display of the surrounding :func:`using` block (nothing outside one);
- ``"auto"``: ``rich`` on a terminal, ``log`` otherwise;
- a callable, called with every :class:`ProgressEvent`.

Updates go by the wall clock, never by a step count: a task advanced many times a second sends one
update per :data:`INTERVAL`, and one advanced once a minute sends one per advance. Advancing is pure
Python (a clock read), so a training loop can do it every step without waiting for the GPU.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, TextIO, Union

from .errors import UsageError

INTERVAL = 1.0  # seconds between updates of one task (bars redraw on their own in between)
MODES = ("auto", "rich", "log", "none")


@dataclass(frozen=True)
class ProgressEvent:
    """One thing to show.

    Attributes:
        kind: ``start``, ``update``, ``end`` (of ``task``) or ``message`` (a line to print).
        task: what is being done, e.g. ``round 1``, ``sampling``, ``training the lenet featurizer``.
        done: units done so far (a resumed task starts above 0).
        total: units in all, None when unknown.
        unit: what is counted (``step``, ``image``, ``item``).
        rate: units per second since the task's first advance in this process (None before a second one).
        elapsed: seconds since the task started in this process.
        info: more to show, e.g. ``{"loss": 0.0312}``.
        message: the text of a ``message`` event.
    """

    kind: str
    task: str = ""
    done: int = 0
    total: int | None = None
    unit: str = "step"
    rate: float | None = None
    elapsed: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    message: str = ""


ProgressFn = Callable[[ProgressEvent], object]  # what it returns is ignored
ProgressLike = Union[str, ProgressFn, None]

_current: ContextVar[ProgressFn | None] = ContextVar("ticketforge_progress", default=None)


def resolve(progress: ProgressLike) -> ProgressFn | None:
    """The display for a ``progress`` argument (see the module docstring); None shows nothing."""
    if progress is None or progress == "none":
        return None
    if callable(progress):
        return progress
    if progress == "auto":
        progress = "rich" if _is_terminal(sys.stderr) else "log"
    if progress == "rich":
        from .rich_progress import RichProgress
        return RichProgress()
    if progress == "log":
        return LogProgress()
    raise UsageError(f"unknown progress {progress!r}: use one of {', '.join(MODES)}, or a callable")


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@contextmanager
def using(progress: ProgressLike) -> Iterator[ProgressFn | None]:
    """Tasks opened inside the block report to ``progress`` (None: the surrounding block's display); a
    display made here is closed at the end."""
    made = isinstance(progress, str)
    shown = resolve(progress) if progress is not None else _current.get()
    token = _current.set(shown)
    try:
        yield shown
    finally:
        _current.reset(token)
        if made and shown is not None and hasattr(shown, "close"):
            shown.close()


def current() -> ProgressFn | None:
    """The display tasks report to here (None: none)."""
    return _current.get()


def message(text: str) -> None:
    """A line for the current display (none: dropped)."""
    shown = _current.get()
    if shown is not None:
        shown(ProgressEvent("message", message=text))


def format_rate(rate: float | None, unit: str = "step") -> str:
    """``12.5 step/s``, or seconds per unit when slower than one a second (``4.2 s/step``)."""
    if rate is None or rate <= 0:
        return ""
    return f"{rate:.1f} {unit}/s" if rate >= 1 else f"{1 / rate:.1f} s/{unit}"


def format_seconds(seconds: float) -> str:
    """``0:07:05``; ``2 days 3:00:00`` past a day."""
    seconds = int(round(seconds))
    days, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    text = f"{h}:{rest // 60:02d}:{rest % 60:02d}"
    return f"{days} day{'s' if days > 1 else ''} {text}" if days else text


def eta(event: ProgressEvent) -> float | None:
    """Seconds left at the event's rate (None when the rate or the total is unknown)."""
    if event.rate is None or event.rate <= 0 or event.total is None:
        return None
    return max(event.total - event.done, 0) / event.rate


class Task:
    """A counter that sends a ``start`` event, then at most one ``update`` per ``interval`` seconds of
    ``clock``, then ``end``. The rate is measured from the first advance, so a first step that
    compiles or warms caches does not make the estimate."""

    def __init__(self, shown: ProgressFn | None, name: str, total: int | None, unit: str = "step", *,
                 done: int = 0, info: dict[str, Any] | None = None, clock: Callable[[], float] = time.monotonic,
                 interval: float = INTERVAL) -> None:
        self.shown, self.name, self.total, self.unit = shown, name, total, unit
        self.done, self.info, self.clock, self.interval = done, dict(info or {}), clock, interval
        self.t_start = self.t_sent = clock() if shown is not None else 0.0
        self._first: tuple[int, float] | None = None  # (done, time) at the first advance
        self._send("start")

    @property
    def rate(self) -> float | None:
        if self._first is None:
            return None
        done, t = self._first
        now = self.clock()
        return (self.done - done) / (now - t) if self.done > done and now > t else None

    def _send(self, kind: str) -> None:
        if self.shown is not None:
            self.shown(ProgressEvent(kind, self.name, self.done, self.total, self.unit,
                                     self.rate if kind != "start" else None,
                                     self.clock() - self.t_start, dict(self.info)))

    def advance(self, n: int = 1) -> None:
        self.set(self.done + n)

    def set(self, done: int) -> None:
        """``done`` units done; an update is sent if ``interval`` has passed (or at the total)."""
        self.done = done
        if self.shown is None:
            return
        now = self.clock()
        if self._first is None:
            self._first = (done, now)
        if now - self.t_sent >= self.interval or done == self.total:
            self.t_sent = now
            self._send("update")

    def update(self, **info: Any) -> None:
        """New ``info`` (a loss), shown with the next update."""
        self.info.update(info)

    def close(self) -> None:
        self._send("end")
        self.shown = None


@contextmanager
def task(name: str, total: int | None, unit: str = "step", **kwargs: Any) -> Iterator[Task]:
    """A :class:`Task` reporting to the current display, ended when the block ends (also on an error)."""
    bar = Task(_current.get(), name, total, unit, **kwargs)
    try:
        yield bar
    finally:
        bar.close()


class LogProgress:
    """Plain lines on ``file`` (default: stderr): a task's first update once it has run ``first``
    seconds, then one at most every ``every`` seconds of its own clock, and its end; every message.
    A task done within ``first`` seconds prints nothing."""

    def __init__(self, file: TextIO | None = None, every: float = 10.0, first: float = INTERVAL) -> None:
        self.file, self.every, self.first = file, every, first
        self._printed: dict[str, float] = {}  # task -> elapsed at its last line

    def __call__(self, event: ProgressEvent) -> None:
        if event.kind == "message":
            self._print(event.message)
        elif event.kind == "start":
            self._printed.pop(event.task, None)
        elif event.kind == "update":
            last = self._printed.get(event.task)
            if event.elapsed < self.first or (last is not None and event.elapsed - last < self.every):
                return
            self._printed[event.task] = event.elapsed
            self._print(progress_line(event))
        elif event.kind == "end":
            if self._printed.pop(event.task, None) is not None or event.elapsed >= self.first:
                total = f"/{event.total}" if event.total is not None else ""
                self._print(f"{event.task}: {event.done}{total} {event.unit}s in {format_seconds(event.elapsed)}")

    def _print(self, line: str) -> None:
        print(line, file=self.file or sys.stderr, flush=True)


def progress_line(event: ProgressEvent) -> str:
    """``round 1: 40/200 steps (20%), 3.2 step/s, ETA 0:00:50, loss 0.1234``."""
    parts = [f"{event.task}: {event.done}/{event.total} {event.unit}s ({100 * event.done / max(event.total, 1):.0f}%)"
             if event.total is not None else f"{event.task}: {event.done} {event.unit}s"]
    if event.rate is not None:
        parts.append(format_rate(event.rate, event.unit))
    left = eta(event)
    if left is not None:
        parts.append(f"ETA {format_seconds(left)}")
    parts += [f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in event.info.items()]
    return ", ".join(parts)


__all__ = ["INTERVAL", "LogProgress", "MODES", "ProgressEvent", "ProgressFn", "ProgressLike", "Task", "current",
           "eta", "format_rate", "format_seconds", "message", "progress_line", "resolve", "task", "using"]

"""The ``rich`` progress display: one bar per open task on stderr, messages as lines above them.

A module of its own beside :mod:`ticketforge.progress`, which imports it (and rich) only when rich
bars are asked for.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from .progress import ProgressEvent, eta, format_rate, format_seconds


class RichProgress:
    """Progress events as rich bars on stderr (one row per open task), messages as lines above them."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._bars: Progress | None = None
        self._tasks: dict[str, TaskID] = {}

    def __call__(self, event: ProgressEvent) -> None:
        if event.kind == "message":
            self.console.print(event.message, markup=False, highlight=False)
            return
        if event.kind == "start":
            if self._bars is None:
                # No elapsed-time column: the row must fit 80 columns with the loss and the ETA in it.
                self._bars = Progress(
                    TextColumn("{task.description}"), BarColumn(bar_width=20),
                    TextColumn("{task.completed}/{task.total}"), TextColumn("{task.fields[rate]}"),
                    TextColumn("{task.fields[eta]}"), TextColumn("{task.fields[info]}"),
                    console=self.console, transient=True, refresh_per_second=4)
                self._bars.start()
            self._tasks[event.task] = self._bars.add_task(event.task, total=event.total, completed=event.done,
                                                          **self._fields(event))
            return
        task = self._tasks.get(event.task)
        if task is None or self._bars is None:
            return
        if event.kind == "update":
            self._bars.update(task, completed=event.done, **self._fields(event))
        elif event.kind == "end":
            self._bars.remove_task(self._tasks.pop(event.task))
            if not self._tasks:
                self.close()

    @staticmethod
    def _fields(event: ProgressEvent) -> dict[str, Any]:  # Any: rich types its fields so
        left = eta(event)
        info = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in event.info.items())
        return {"unit": event.unit, "rate": format_rate(event.rate, event.unit),
                "eta": f"ETA {format_seconds(left)}" if left is not None else "", "info": info}

    def close(self) -> None:
        if self._bars is not None:
            self._bars.stop()
            self._bars = None
        self._tasks.clear()

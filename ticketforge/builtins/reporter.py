"""Reporters: the lifecycle hooks of a run shown as progress (rich bars, log lines or a callable), and
the per-round table."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Iterator

from rich.console import Console
from rich.table import Table

from ..hookspecs import hookimpl
from ..progress import ProgressEvent, ProgressFn, ProgressLike, current, format_rate, format_seconds, resolve, using
from ..rich_progress import RichProgress


def rounds_table(rounds: list[dict[str, Any]], title: str = "Rounds") -> Table:
    """Round, sparsity, kept weights, loss and speed of each finished round."""
    table = Table(title=title, title_justify="left")
    for col in ("round", "sparsity", "kept weights", "final loss", "speed", "mask sha256"):
        table.add_column(col, justify="right" if col != "mask sha256" else "left")
    for r in rounds:
        m = r.get("metrics", {})
        table.add_row(str(r["round"]), f"{100 * r['sparsity']:.2f}%",
                      f"{m.get('nonzero_params', 0):,}", f"{m.get('loss', float('nan')):.4f}",
                      format_rate(m.get("steps_per_s")) or "-", r["mask_sha256"][:12])
    return table


class ProgressReporter:
    """A lifecycle plugin: a run's hooks as progress events (a task per round) for any display."""

    def __init__(self, shown: ProgressFn) -> None:
        self.shown = shown
        self.trained = False
        self._round: tuple[str, int, float] | None = None  # (task name, total steps, start time)
        self._rate: float | None = None
        self._info: dict[str, Any] = {}

    def _message(self, text: str) -> None:
        self.shown(ProgressEvent("message", message=text))

    def _event(self, kind: str, done: int) -> None:
        if self._round is not None:
            name, total, t0 = self._round
            self.shown(ProgressEvent(kind, name, done, total, "step", self._rate, time.monotonic() - t0,
                                     dict(self._info)))

    @hookimpl
    def ticketforge_run_start(self, run: Any) -> None:
        cfg = run.config
        self._message(f"ticketforge {cfg['model']} ({cfg.get('preset') or 'default preset'}) on {cfg['dataset']}, "
                      f"schedule {cfg['schedule']}, {cfg['rounds']} prunings x {cfg['steps_per_round']} steps, "
                      f"device {run.device} -> {run.run_dir}")
        if run.rounds:
            self._message(f"resuming: rounds {', '.join(str(r['round']) for r in run.rounds)} already finished")

    @hookimpl
    def ticketforge_round_start(self, run: Any, round_index: int, sparsity: float, steps: int, start_step: int,
                                compiling: bool) -> None:
        if start_step:
            self._message(f"resuming round {round_index} from step {start_step} (of {steps})")
        if compiling:
            self._message("compiling the training step (first steps take longer)")
        self._round, self._rate, self._info = (f"round {round_index} ({100 * sparsity:.1f}% pruned)", steps,
                                               time.monotonic()), None, {}
        self._event("start", start_step)

    @hookimpl
    def ticketforge_train_progress(self, run: Any, round_index: int, step: int, steps: int,
                                   steps_per_s: float | None) -> None:
        self._rate = steps_per_s
        self._event("update", step)

    @hookimpl
    def ticketforge_train_step(self, run: Any, round_index: int, step: int, metrics: dict) -> None:
        self._info["loss"] = float(metrics["loss"])
        self._event("update", step)

    @hookimpl
    def ticketforge_compiled(self, run: Any, round_index: int, steps: int, seconds: float) -> None:
        first = "the first step" if steps == 1 else f"the first {steps} steps"
        self._message(f"compiled the training step: {first} took {format_seconds(seconds)}")

    @hookimpl
    def ticketforge_round_end(self, run: Any, round_index: int, record: dict) -> None:
        self._event("end", record.get("metrics", {}).get("steps", 0))
        self._round = None
        self.trained = True
        self.round_finished(run, round_index, record)

    def round_finished(self, run: Any, round_index: int, record: dict) -> None:
        m = record.get("metrics", {})
        self._message(f"round {round_index} finished: {100 * record['sparsity']:.2f}% pruned, "
                      f"{m.get('nonzero_params', 0):,} weights kept, loss {m.get('loss', float('nan')):.4f}, "
                      f"{format_rate(m.get('steps_per_s')) or '-'}, mask {record['mask_sha256'][:12]}")

    @hookimpl
    def ticketforge_run_end(self, run: Any, rounds: list) -> None:
        if not self.trained:
            self._message(f"nothing to train: rounds {', '.join(str(r['round']) for r in rounds)} are finished")


class RichReporter(ProgressReporter):
    """Rich bars per round (step, loss, rate, ETA) and the table of every round as each one ends."""

    def __init__(self, console: Console | None = None, progress: RichProgress | None = None) -> None:
        super().__init__(progress or RichProgress(console))
        self.console = self.shown.console  # type: ignore[attr-defined]

    def round_finished(self, run: Any, round_index: int, record: dict) -> None:
        # The table of every round so far: the run's state at a glance after each round.
        rounds = [r for r in run.rounds if r["round"] != round_index] + [record]
        self.console.print(rounds_table(rounds, title=f"after round {round_index}"))

    @hookimpl
    def ticketforge_run_end(self, run: Any, rounds: list) -> None:
        if not self.trained:  # nothing trained in this invocation: show what the run holds
            self.console.print(rounds_table(rounds))


@contextmanager
def reporting(registry: Any, progress: ProgressLike, name: str = "progress-reporter") -> Iterator[None]:
    """``progress`` (see :mod:`ticketforge.progress`; None: the surrounding display, if any) shown for the
    run's hooks and for the tasks its plugins open, for the duration of the block."""
    shown = resolve(progress) if progress is not None else current()
    if shown is None:
        yield
        return
    reporter = RichReporter(progress=shown) if isinstance(shown, RichProgress) else ProgressReporter(shown)
    registry.pm.register(reporter, name=name)
    try:
        with using(shown):
            yield
    finally:
        registry.pm.unregister(name=name)
        if isinstance(progress, str) and hasattr(shown, "close"):
            shown.close()

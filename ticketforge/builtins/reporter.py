"""The terminal reporter: a lifecycle plugin that draws progress and the per-round table with rich."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from ..hookspecs import hookimpl


def rounds_table(rounds: list[dict[str, Any]], title: str = "Rounds") -> Table:
    """Round, sparsity, kept weights, loss and speed of each finished round."""
    table = Table(title=title, title_justify="left")
    for col in ("round", "sparsity", "kept weights", "final loss", "steps/s", "mask sha256"):
        table.add_column(col, justify="right" if col != "mask sha256" else "left")
    for r in rounds:
        m = r.get("metrics", {})
        table.add_row(str(r["round"]), f"{100 * r['sparsity']:.2f}%",
                      f"{m.get('nonzero_params', 0):,}", f"{m.get('loss', float('nan')):.4f}",
                      f"{m.get('steps_per_s', float('nan')):.1f}", r["mask_sha256"][:12])
    return table


class RichReporter:
    """Progress bar per round (step, loss, sparsity, ETA) and a table row as each round ends."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.progress: Progress | None = None
        self.task: Any = None
        self.trained = False

    @hookimpl
    def ticketforge_run_start(self, run: Any) -> None:
        cfg = run.config
        self.console.print(f"[bold]ticketforge[/] {cfg['model']} ({cfg.get('preset') or 'default preset'}) on "
                           f"{cfg['dataset']}, schedule {cfg['schedule']}, {cfg['rounds']} prunings x "
                           f"{cfg['steps_per_round']} steps, device {run.device} -> {run.run_dir}")
        if run.rounds:
            self.console.print(f"resuming: rounds {', '.join(str(r['round']) for r in run.rounds)} already finished")

    @hookimpl
    def ticketforge_round_start(self, run: Any, round_index: int, sparsity: float, steps: int) -> None:
        self.progress = Progress(
            TextColumn(f"round {round_index} [dim]{100 * sparsity:5.1f}% pruned[/]"), BarColumn(),
            MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, transient=True)
        self.progress.start()
        self.task = self.progress.add_task("train", total=steps, loss="-", speed="")

    @hookimpl
    def ticketforge_train_step(self, run: Any, round_index: int, step: int, metrics: dict) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=step, loss=f"{metrics['loss']:.4f}",
                                 speed=f"{metrics['steps_per_s']:.1f} it/s")

    @hookimpl
    def ticketforge_round_end(self, run: Any, round_index: int, record: dict) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        self.trained = True
        # The table of every round so far: the run's state at a glance after each round.
        rounds = [r for r in run.rounds if r["round"] != round_index] + [record]
        self.console.print(rounds_table(rounds, title=f"after round {round_index}"))

    @hookimpl
    def ticketforge_run_end(self, run: Any, rounds: list) -> None:
        if not self.trained:  # nothing trained in this invocation: show what the run holds
            self.console.print(rounds_table(rounds))

"""Every hook a ticketforge plugin can implement (pluggy project ``ticketforge``).

Registration hooks return a list of :class:`~ticketforge.records.ComponentRecord`. Lifecycle hooks
are called by the engine; reporters and loggers implement them. ``docs/hooks.md`` documents each
hook, and a test fails when one is missing there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .engine.loop import RunState
    from .records import ComponentRecord

PROJECT = "ticketforge"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def ticketforge_scorers() -> list[ComponentRecord]:
    """Scorers: give each prunable weight an importance score (lowest pruned first)."""


@hookspec
def ticketforge_schedules() -> list[ComponentRecord]:
    """Schedules: decide how many weights each module group loses per round."""


@hookspec
def ticketforge_models() -> list[ComponentRecord]:
    """Models: factories of :class:`~ticketforge.protocols.ModelSpec` (network, loss, groups, sampler)."""


@hookspec
def ticketforge_datasets() -> list[ComponentRecord]:
    """Datasets: factories ``(root, download, train, **options) -> Dataset`` of (image, label)."""


@hookspec
def ticketforge_similarities() -> list[ComponentRecord]:
    """Similarity measures between two representations (CKA, ...)."""


@hookspec
def ticketforge_evaluators() -> list[ComponentRecord]:
    """Evaluators of sample quality (FID, Frechet distances on other features, KID, ...)."""


@hookspec
def ticketforge_run_start(run: RunState) -> None:
    """A run starts (or resumes); ``run`` is the :class:`~ticketforge.engine.RunState`."""


@hookspec
def ticketforge_round_start(run: RunState, round_index: int, sparsity: float, steps: int, start_step: int,
                            compiling: bool) -> None:
    """A round starts training with the given sparsity for ``steps`` steps, from ``start_step`` (above 0:
    resumed from its checkpoint); ``compiling``: its first steps compile the training step."""


@hookspec
def ticketforge_train_progress(run: RunState, round_index: int, step: int, steps: int,
                               steps_per_s: float | None) -> None:
    """At most once a second of wall-clock time, and at the round's last step: ``step`` of ``steps`` done.

    Counted on the host, so it never waits for the GPU (the loss is not known here: see train_step).
    """


@hookspec
def ticketforge_train_step(run: RunState, round_index: int, step: int, metrics: dict[str, float]) -> None:
    """Every ``log_every`` steps: ``metrics`` holds loss, lr and steps/s."""


@hookspec
def ticketforge_compiled(run: RunState, round_index: int, steps: int, seconds: float) -> None:
    """The round's first ``steps`` steps, which compiled the training step, took ``seconds``."""


@hookspec
def ticketforge_round_end(run: RunState, round_index: int, record: dict[str, Any]) -> None:
    """A round finished; ``record`` is its entry as ``ticketforge inspect --json`` shows it."""


@hookspec
def ticketforge_run_end(run: RunState, rounds: list[dict[str, Any]]) -> None:
    """The run finished; ``rounds`` are all round records."""

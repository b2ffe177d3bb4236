"""Errors that the CLI turns into one line on stderr and an exit code.

``UsageError`` means the user asked for something impossible (exit 2); ``TicketforgeError`` means a
valid request failed (exit 1). Both carry a message that says what to do.
"""

from __future__ import annotations


class TicketforgeError(Exception):
    """A failure the user can act on; the message says what to do. Exit code 1."""

    exit_code = 1


class UsageError(TicketforgeError):
    """A request that cannot be satisfied as given (unknown name, impossible ratio). Exit code 2."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration value or combination that is refused before any work starts."""


class PluginError(UsageError):
    """A plugin problem: unknown component name, duplicate name across distributions."""


class CheckpointError(TicketforgeError):
    """A file of a run is missing, corrupt, truncated, foreign or fails its checksum."""


class TrainingDiverged(TicketforgeError):
    """The loss became NaN or infinite; the last good checkpoint is kept.

    ``detail`` says what happened; the engine puts advice after it that works for the run at hand
    (a lower ``--lr`` is another run)."""

    def __init__(self, detail: str, advice: str = "train again with a lower --lr"):
        super().__init__(f"{detail}: {advice}")
        self.detail = detail


class TicketforgeWarning(UserWarning):
    """Something optional failed (a cache could not be written); the work goes on. The CLI prints one line."""

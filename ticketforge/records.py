"""Typed records that registration hooks return.

Every component a plugin contributes (a scorer, a schedule, a model, ...) is described by one
:class:`ComponentRecord`: a kebab-case name, a factory, a one-line summary and its typed options.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

KINDS: tuple[str, ...] = ("scorers", "schedules", "models", "datasets", "similarities", "evaluators")
"""The component kinds, in the order ``ticketforge list`` shows them."""

_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


@dataclass(frozen=True)
class Option:
    """One typed option of a component, shown by ``ticketforge list`` and documented in the guide."""

    name: str
    type: type
    default: Any
    help: str = ""


@dataclass(frozen=True)
class ComponentRecord:
    """A named component: ``factory(**options)`` builds it.

    Attributes:
        name: lower-case kebab-case name users type (``magnitude``, ``ddpm-unet``).
        factory: callable returning the component object.
        summary: one line shown by ``ticketforge list``.
        options: typed keyword options the factory accepts.
        plugin: the distribution that registered it (filled in by the registry).
    """

    name: str
    factory: Callable[..., Any]
    summary: str
    options: tuple[Option, ...] = field(default_factory=tuple)
    plugin: str = ""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"component name {self.name!r} must be lower-case kebab-case")
        if "\n" in self.summary:
            raise ValueError(f"summary of {self.name!r} must be one line")


# Short aliases so plugin code reads naturally: ``ScorerRecord("snip", Snip, "...")``.
ScorerRecord = ComponentRecord
ScheduleRecord = ComponentRecord
ModelRecord = ComponentRecord
DatasetRecord = ComponentRecord
SimilarityRecord = ComponentRecord
EvaluatorRecord = ComponentRecord

"""Typed records that registration hooks return.

Every component a plugin contributes (a scorer, a schedule, a model, ...) is described by one
:class:`ComponentRecord`: a kebab-case name, a factory, a one-line summary and its typed options.
A :class:`LazyFactory` names the factory by import path, so that registering (and ``ticketforge
list``) imports none of the component's code, torch included.
"""

from __future__ import annotations

import importlib
import inspect
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
class LazyFactory:
    """A factory named ``"package.module:attribute"`` (``"pkg.spec:Spec.from_preset"``), imported when
    first called; its signature is the target's, so option checks see the real keywords."""

    target: str

    def __post_init__(self) -> None:
        module, sep, attribute = self.target.partition(":")
        if not (module and sep and attribute):
            raise ValueError(f"lazy factory {self.target!r} must be 'package.module:attribute'")

    def resolve(self) -> Callable[..., Any]:
        """The factory itself (its module imported)."""
        module, _, attribute = self.target.partition(":")
        found: Any = importlib.import_module(module)
        for part in attribute.split("."):
            found = getattr(found, part)
        return found

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)

    @property
    def __signature__(self) -> inspect.Signature:
        return inspect.signature(self.resolve())


@dataclass(frozen=True)
class ComponentRecord:
    """A named component: ``factory(**options)`` builds it.

    Attributes:
        name: lower-case kebab-case name users type (``magnitude``, ``ddpm-unet``).
        factory: callable returning the component object; a :class:`LazyFactory` imports it on first use.
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


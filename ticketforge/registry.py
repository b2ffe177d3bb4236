"""The plugin manager: finds plugins through the ``ticketforge`` entry-point group and resolves names.

The core's built-ins register through that same group, exactly like a third-party package. A plugin
that fails to import (or whose hook raises) is recorded as broken and skipped; the others keep
working. A name registered by two distributions is a conflict: ``ticketforge list`` shows both, and
only a use of that name is an error, one line naming both distributions.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import json
import re
from dataclasses import dataclass, replace
from typing import Any, Collection, Iterable

import pluggy

from . import hookspecs
from .errors import PluginError
from .records import KINDS, ComponentRecord, LazyFactory
from .typecheck import problem

ENTRY_POINT_GROUP = "ticketforge"
_HOOKS = {kind: f"ticketforge_{kind}" for kind in KINDS}
_SINGULAR = {"scorers": "scorer", "schedules": "schedule", "models": "model", "datasets": "dataset",
             "similarities": "similarity", "evaluators": "evaluator"}


@dataclass(frozen=True)
class BrokenPlugin:
    """A plugin that could not be loaded or whose registration hook raised."""

    name: str
    distribution: str
    error: str


class Registry:
    """Named components of every installed plugin, by kind."""

    def __init__(self, pm: pluggy.PluginManager, distributions: dict[str, str], broken: list[BrokenPlugin]):
        self.pm = pm
        self.broken = broken
        self._distributions = distributions
        self._records: dict[str, dict[str, ComponentRecord]] = {kind: {} for kind in KINDS}
        # Names that two distributions register: kept apart, so that every other name still works.
        self._conflicts: dict[str, dict[str, list[ComponentRecord]]] = {kind: {} for kind in KINDS}
        for kind in KINDS:
            self._collect(kind)

    @property
    def hook(self) -> Any:
        """The lifecycle hook relay (``registry.hook.ticketforge_round_end(...)``)."""
        return self.pm.hook

    def _collect(self, kind: str) -> None:
        caller = getattr(self.pm.hook, _HOOKS[kind])
        for impl in caller.get_hookimpls():
            dist = self._distributions.get(impl.plugin_name, impl.plugin_name)
            try:
                records, problem = _as_records(impl.function())
            except Exception as exc:  # a plugin's bug must not take the others down
                self.broken.append(BrokenPlugin(impl.plugin_name, dist, f"{_HOOKS[kind]} raised {exc!r}"))
                continue
            if problem:  # neither may something that is not a list of records
                self.broken.append(BrokenPlugin(impl.plugin_name, dist, f"{_HOOKS[kind]} returned {problem}, "
                                                                        f"not a list of ComponentRecord"))
                continue
            for record in records:
                self._add(kind, replace(record, plugin=dist))

    def _add(self, kind: str, record: ComponentRecord) -> None:
        known, conflicts = self._records[kind], self._conflicts[kind]
        if record.name in conflicts:
            if all(r.plugin != record.plugin for r in conflicts[record.name]):
                conflicts[record.name].append(record)
            return
        if record.name in known and known[record.name].plugin != record.plugin:
            conflicts[record.name] = [known.pop(record.name), record]
            return
        known[record.name] = record

    def _check_kind(self, kind: str) -> None:
        if kind not in self._records:
            raise PluginError(f"unknown component kind {kind!r}; known kinds: {', '.join(KINDS)}")

    def records(self, kind: str) -> dict[str, ComponentRecord]:
        """Every usable record of ``kind`` by name, in registration order (conflicting names left out)."""
        self._check_kind(kind)
        return dict(self._records[kind])

    def conflicts(self, kind: str) -> dict[str, list[ComponentRecord]]:
        """The names of ``kind`` that more than one distribution registers, each with all its records."""
        self._check_kind(kind)
        return {name: list(records) for name, records in self._conflicts[kind].items()}

    def conflict_message(self, kind: str, name: str) -> str:
        """The one-line error for a use of the conflicting name ``name``."""
        plugins = [repr(r.plugin) for r in self._conflicts[kind][name]]
        both = f"both {plugins[0]} and {plugins[1]}" if len(plugins) == 2 else \
            f"{', '.join(plugins[:-1])} and {plugins[-1]}"
        return f"{_SINGULAR[kind]} {name!r} is registered by {both}: uninstall one of them"

    def get(self, kind: str, name: str) -> ComponentRecord:
        """The record called ``name``; a usage error listing the known names otherwise, or naming the
        distributions that both register it."""
        known = self.records(kind)
        if name in known:
            return known[name]
        if name in self._conflicts[kind]:
            raise PluginError(self.conflict_message(kind, name))
        hint = difflib.get_close_matches(name, known, n=1)
        did_you_mean = f" Did you mean {hint[0]!r}?" if hint else ""
        names = ", ".join(sorted(known)) or "none installed"
        raise PluginError(f"unknown {_SINGULAR[kind]} {name!r} (known: {names}).{did_you_mean}")

    def only(self, kind: str) -> str:
        """The name of the one usable component of ``kind`` (what a run uses when none is named); a usage
        error naming them when there are none or several."""
        names = list(self.records(kind))
        if len(names) == 1:
            return names[0]
        what = f"{len(names)} {kind} are installed ({', '.join(names)})" if names else f"no {kind} are installed"
        raise PluginError(f"{what}: name the {_SINGULAR[kind]} to use (--{_SINGULAR[kind]} NAME)")

    def options(self, kind: str, name: str, given: dict[str, Any]) -> dict[str, Any]:
        """``given`` options of component ``name`` checked against the options it declares, in the form a
        run's hash takes: a declared default left out, a whole number given to a float option a float.

        A one-line error for a name it does not declare (every name, when it declares none) or a value
        of another type."""
        record = self.get(kind, name)
        what = f"{_SINGULAR[kind]} {name!r}"
        allowed = {o.name for o in record.options}
        unknown = sorted(set(given) - allowed)
        if unknown:
            known = f"options: {', '.join(sorted(allowed))}" if allowed else "it has none"
            raise PluginError(f"{what} has no option {unknown[0]!r} ({known}; `ticketforge list {kind} --options`)")
        checked = _check_option_types(what, record, given)
        out = {}
        for option in record.options:
            if option.name in checked and checked[option.name] != option.default:
                value = checked[option.name]
                out[option.name] = float(value) if option.type is float and isinstance(value, int) else value
        return out

    def create(self, kind: str, name: str, **options: Any) -> Any:
        """Build the component ``name`` of ``kind`` with its factory's keyword options."""
        record = self.get(kind, name)
        allowed = {o.name for o in record.options}
        unknown = sorted(set(options) - allowed) if record.options else []
        if unknown:
            raise PluginError(f"{_SINGULAR[kind]} {name!r} has no option {unknown[0]!r} "
                              f"(options: {', '.join(sorted(allowed))})")
        options = _check_option_types(f"{_SINGULAR[kind]} {name!r}", record, options)
        factory = record.factory
        if isinstance(factory, LazyFactory):  # registered by name: its module is imported now
            try:
                factory = factory.resolve()
            except Exception as exc:
                raise PluginError(f"{_SINGULAR[kind]} {name!r} (plugin {record.plugin}) cannot be loaded: "
                                  f"{type(exc).__name__}: {exc}") from exc
        return factory(**options)


def _as_records(returned: Any) -> tuple[list[ComponentRecord], str | None]:
    """A registration hook's return value as records, or what it was instead (for the broken list)."""
    if returned is None:
        return [], None
    if isinstance(returned, (str, bytes, dict, ComponentRecord)) or not isinstance(returned, Iterable):
        return [], f"a {type(returned).__name__} ({_short(returned)})"
    items = list(returned)  # a list, a tuple or a generator of records
    for item in items:
        if not isinstance(item, ComponentRecord):
            return [], f"a {type(returned).__name__} holding a {type(item).__name__} ({_short(item)})"
    return items, None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_option_types(what: str, record: ComponentRecord, options: dict[str, Any]) -> dict[str, Any]:
    """Refuse an option value of another type than the record declares (None: the default).

    A number or boolean for a string option is taken as its text: ``--model-option key=123`` parses
    ``123`` as JSON, and the user meant the string."""
    options = dict(options)
    for option in record.options:
        value = options.get(option.name)
        if value is None:
            continue
        if option.type is str and isinstance(value, (int, float, bool)):
            options[option.name] = value = json.dumps(value)
        bad = problem(f"option {option.name!r}", value, option.type)
        if bad:
            raise PluginError(f"{what}: {bad}")
    return options


def _entry_points() -> Iterable[importlib.metadata.EntryPoint]:
    return importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)


def _canonical(distribution: str) -> str:
    """A distribution's name as pip compares them (``Ticketforge_DDPM`` is ``ticketforge-ddpm``)."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def build_registry(*, entry_points: bool | Collection[str] = True, plugins: Iterable[object] = ()) -> Registry:
    """A registry of the installed plugins plus ``plugins`` given directly.

    ``entry_points``: True loads the plugins of every distribution in the ``ticketforge`` entry-point
    group, False none, and a collection of distribution names only theirs: ``["ticketforge"]`` is the
    core's built-ins alone, named as ``ticketforge list`` names them. Tests build on that, so that
    another installed plugin cannot change what they see.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    distributions: dict[str, str] = {}
    broken: list[BrokenPlugin] = []
    if entry_points:
        wanted = None if entry_points is True else \
            {_canonical(d) for d in ([entry_points] if isinstance(entry_points, str) else entry_points)}
        for ep in _entry_points():
            dist = ep.dist.name if ep.dist is not None else ep.name
            if wanted is not None and _canonical(dist) not in wanted:
                continue
            try:
                pm.register(ep.load(), name=ep.name)
                distributions[ep.name] = dist
            except Exception as exc:  # report and skip: one broken plugin never takes the rest down
                broken.append(BrokenPlugin(ep.name, dist, f"{type(exc).__name__}: {exc}"))
    for plugin in plugins:
        name = pm.register(plugin)
        if name is not None:  # None: a blocked plugin (never one given here)
            distributions[name] = getattr(plugin, "__name__", type(plugin).__name__)
    return Registry(pm, distributions, broken)


_registry: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry of installed plugins, built on first use."""
    global _registry
    if _registry is None:
        _registry = build_registry()
    return _registry


def reset_registry() -> None:
    """Forget the cached registry (tests, or after installing a plugin at run time)."""
    global _registry
    _registry = None

"""The packages of ticketforge import one way: each layer only from its own layer and those below it.

docs/architecture.md draws the same picture. Imports inside functions count (a lazy import is still
an arrow); imports under ``if TYPE_CHECKING:`` do not (annotations only).
"""

from __future__ import annotations

import ast
from pathlib import Path

import ticketforge

ROOT = Path(ticketforge.__file__).parent

LAYERS = [  # bottom first; names are the first part below ``ticketforge.``
    {"errors", "typecheck", "lazy", "threads", "config", "progress", "rich_progress"},
    {"protocols", "records", "pruning", "metrics", "similarity", "hookspecs", "registry", "specs"},
    {"store", "cache"},
    {"builtins"},
    {"engine"},
    {"api", "branches", "export", "evaluation", "comparison", "inspection", "report", "plots", "scores"},
    {"cli", "__main__"},
]
TOP = {"__init__", "testing"}  # the package's facade and the plugin-author test kit see everything
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def _part(dotted: str) -> str:
    return dotted.split(".")[1] if dotted.count(".") else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every ticketforge import of ``path`` outside ``if TYPE_CHECKING:``."""
    module = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
    package = module.split(".")[:-1]  # of a module, and of an __init__ (whose last part is "__init__")
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                   for child in node.body for n in ast.walk(child)}
    found = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module or ""
            found += [(node.lineno, target)] if node.module else [(node.lineno, f"{target}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
    return [(line, t) for line, t in found if t == "ticketforge" or t.startswith("ticketforge.")]


def test_every_module_is_in_a_layer():
    parts = {_part(".".join(p.relative_to(ROOT.parent).with_suffix("").parts)) for p in ROOT.rglob("*.py")}
    assert parts - TOP - set(RANK) == set(), "add the new module or package to a layer in LAYERS (and the doc)"


def test_imports_point_down_the_layers_only():
    upward = []
    for path in sorted(ROOT.rglob("*.py")):
        source = _part(".".join(path.relative_to(ROOT.parent).with_suffix("").parts))
        if source in TOP:
            continue
        for line, target in _imports(path):
            if RANK.get(_part(target), len(LAYERS)) > RANK[source]:
                upward.append(f"{path.relative_to(ROOT.parent)}:{line} imports {target}")
    assert upward == []

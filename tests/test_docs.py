"""The docs keep up with the code: every hook has a section in docs/hooks.md, docs/cli.md is current."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import ticketforge.hookspecs as hookspecs

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _hookspec_names() -> list[str]:
    marker = f"{hookspecs.PROJECT}_spec"
    return [name for name, obj in vars(hookspecs).items() if callable(obj) and hasattr(obj, marker)]


def test_every_hook_has_a_section_in_hooks_md():
    names = _hookspec_names()
    assert len(names) >= 11
    headings = set(re.findall(r"^## (\S+)\s*$", (DOCS / "hooks.md").read_text(), flags=re.MULTILINE))
    missing = [n for n in names if n not in headings]
    assert not missing, f"docs/hooks.md has no '## <hook>' section for: {', '.join(missing)}"
    stale = sorted(h for h in headings if h.startswith("ticketforge_") and h not in names)
    assert not stale, f"docs/hooks.md documents hooks that hookspecs.py no longer has: {', '.join(stale)}"


def test_cli_reference_is_up_to_date():
    spec = importlib.util.spec_from_file_location("gen_cli_reference", DOCS / "gen_cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    current = (DOCS / "cli.md").read_text() if (DOCS / "cli.md").exists() else ""
    if f"Rendered with click {module.click_version()}." in current:
        assert current == module.render(), "docs/cli.md is out of date: run python docs/gen_cli_reference.py"
        return
    # Another click version words and wraps help differently: check the content, not the layout.
    from ticketforge.cli.main import all_commands

    for name, command in all_commands().items():
        for param in command.params:
            if getattr(param, "hidden", False):  # a deprecated alias: not in --help, so not in the page
                continue
            for opt in getattr(param, "opts", []):
                if opt.startswith("--"):
                    assert opt in current, f"docs/cli.md lacks {name} {opt}: run python docs/gen_cli_reference.py"


def test_cli_reference_covers_every_command():
    from ticketforge.cli.main import all_commands

    text = (DOCS / "cli.md").read_text()
    for name in all_commands():
        assert f"## ticketforge {name}\n" in text, f"docs/cli.md lacks {name}: run python docs/gen_cli_reference.py"

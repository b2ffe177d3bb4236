"""Write docs/cli.md from the click commands: ``python docs/gen_cli_reference.py``.

Every command registered on ``ticketforge.cli.main.cli`` (and on its subgroups) gets a section with
its ``--help`` text, rendered at a fixed width so the output does not depend on the terminal.
``--check`` exits with 1 when docs/cli.md is out of date instead of writing it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

WIDTH = 100
TARGET = Path(__file__).resolve().parent / "cli.md"
HEADER = """# CLI reference

Every `ticketforge` command with its `--help` text. This page is generated: after changing a
command, run `python docs/gen_cli_reference.py` (a test fails while it is out of date).
Rendered with click {click_version}.
"""


def click_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("click")


def _sections(command: click.Command, ctx: click.Context) -> list[str]:
    path = ctx.command_path
    out = [f"## {path}\n\n```text\n{command.get_help(ctx).rstrip()}\n```\n"]
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                out.extend(_sections(sub, click.Context(sub, info_name=name, parent=ctx)))
    return out


def render() -> str:
    """The whole of docs/cli.md as it should be now."""
    from ticketforge.cli.main import cli

    settings = {**cli.context_settings, "terminal_width": WIDTH, "max_content_width": WIDTH}
    ctx = click.Context(cli, info_name="ticketforge", **settings)
    return HEADER.format(click_version=click_version()) + "\n" + "\n".join(_sections(cli, ctx))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = render()
    if "--check" in argv:
        current = TARGET.read_text() if TARGET.exists() else ""
        if current != text:
            print(f"{TARGET} is out of date: run python docs/gen_cli_reference.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

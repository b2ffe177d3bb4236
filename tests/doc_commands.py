"""The ``ticketforge`` and ``torchrun`` command lines of README.md and docs/*.md, and a dry parse of each.

A line is split as the shell splits it and parsed as the programs parse it, without running anything:
torchrun's part by torchrun's own argparse parser, ticketforge's by click (``make_context`` with
resilient parsing off; whether a run folder exists is not checked). Conventions of the docs:

- code blocks hold whole commands; ``\\`` continues a line; two spaces or `` #`` end a command (an
  aligned comment), and so do a pipe, ``&&`` and ``;``; a ``$ `` prompt is dropped;
- an inline ``ticketforge ...`` span may name a command without its required arguments;
- ``...`` elides arguments; ``[x]`` is optional (its first ``a | b`` alternative is taken, as is
  ``a`` of ``a|b``); ``<run>`` and upper-case words (``RUN``, ``N``, ``KEY=VALUE``) are placeholders.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from argparse import Namespace
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import click

ROOT = Path(__file__).resolve().parent.parent
# how a command starts: optional VAR=value assignments, then a launcher
_START = re.compile(r"^(?:[A-Z_][A-Z0-9_]*=\S*\s+)*(python3? -m ticketforge|python3? -m torch\.distributed\.run|"
                    r"ticketforge|torchrun)(?=\s|$)")
_CODE_LANGUAGES = {"", "bash", "sh", "shell", "console", "text"}  # python, toml, json blocks are not shell
_END = re.compile(r"\s{2,}|\s#")
_PLACEHOLDER_WORD = re.compile(r"^[A-Z][A-Z0-9_]*$")


@dataclass(frozen=True)
class DocCommand:
    file: str  # relative to the repository
    line: int
    text: str  # the command as written (continuations joined, comment cut)
    complete: bool  # from a code block (an inline mention may leave out required arguments)

    @property
    def launcher(self) -> str:
        """``ticketforge`` or ``torchrun``."""
        match = _START.match(self.text)
        assert match is not None
        word = match.group(1)
        return "torchrun" if "torch" in word else "ticketforge"

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def argv(self) -> list[str]:
        """The arguments after the launcher, placeholders filled in and elisions dropped."""
        match = _START.match(self.text)
        assert match is not None
        return fill_placeholders(shlex.split(self.text[match.end():]))


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _command_at(text: str) -> str | None:
    """The command that ``text`` starts with (cut at its end), or None if it starts with none."""
    text = text.strip()
    if text.startswith("$ "):
        text = text[2:].lstrip()
    match = _START.match(text)
    if match is None:
        return None
    end = _END.search(text, match.end())
    text = text[:end.start()] if end else text
    rest = text[match.end():].split()
    if not rest:
        return None
    # "ticketforge trains on ..." is prose; a command goes on with an option or a command name
    from ticketforge.cli.main import COMMANDS
    launcher = "torchrun" if "torch" in match.group(1) else "ticketforge"
    if not rest[0].startswith("-") and not (launcher == "ticketforge" and rest[0] in COMMANDS):
        return None
    return text


def doc_commands() -> list[DocCommand]:
    """Every command of README.md and docs/*.md, in file order."""
    found: list[DocCommand] = []
    for path in doc_files():
        rel = str(path.relative_to(ROOT))
        lines = path.read_text().splitlines()
        fence: str | None = None
        i = 0
        prose: list[tuple[int, str]] = []
        while i < len(lines):
            line = lines[i]
            if line.lstrip().startswith("```"):
                fence = None if fence is not None else line.lstrip()[3:].strip()
                i += 1
                continue
            if fence is None:
                prose.append((i + 1, line))
                i += 1
                continue
            start, joined = i + 1, line
            while joined.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                joined = joined.rstrip()[:-1].rstrip() + " " + lines[i].strip()
            i += 1
            if fence not in _CODE_LANGUAGES:
                continue
            for part in re.split(r"\s&&\s|\s;\s", joined):
                command = _command_at(part)
                if command:
                    found.append(DocCommand(rel, start, command, complete=True))
        found.extend(_inline_commands(rel, prose))
    return sorted(found, key=lambda c: (c.file, c.line))


def _inline_commands(rel: str, prose: list[tuple[int, str]]) -> list[DocCommand]:
    """Commands in inline code spans (which may wrap onto the next line) of a file's prose lines."""
    out = []
    text = "\n".join(line for _, line in prose)
    numbers = [n for n, _ in prose]
    for match in re.finditer(r"`([^`]+)`", text):
        command = _command_at(match.group(1).replace("\n", " "))
        if command:
            out.append(DocCommand(rel, numbers[text.count("\n", 0, match.start())], command, complete=False))
    return out


def fill_placeholders(tokens: list[str]) -> list[str]:
    """Doc notation to arguments: drop ``...``, take optional groups' first alternative, fill placeholders."""
    out: list[str] = []
    group: list[str] | None = None
    for token in tokens:
        if group is None and token == "|":  # a pipe: the command ends
            break
        if group is None and token.startswith("["):
            group, token = [], token[1:]
        closes = group is not None and token.endswith("]")
        if closes:
            token = token[:-1]
        if group is not None:
            group.append(token)
            if closes:
                alternative = " ".join(group).split(" | ")[0].split()
                out.extend(alternative)
                group = None
            continue
        out.append(token)
    filled = []
    for token in out:
        if token in ("...", "", "|"):
            continue
        token = token.split("|")[0] if "|" in token and not token.startswith("-") else token
        token = re.sub(r"<[^>]*>", "x", token)
        token = "=".join("1" if _PLACEHOLDER_WORD.match(part) else part for part in token.split("="))
        filled.append(token)
    return filled


class DocLineError(AssertionError):
    """A doc command that its program would refuse."""


@contextlib.contextmanager
def paths_need_not_exist() -> Iterator[None]:
    """Run folders named in the docs do not exist here: let click's path types skip that check."""
    from ticketforge.cli.main import all_commands
    changed = []
    for command in all_commands().values():
        for param in command.params:
            if isinstance(param.type, click.Path) and param.type.exists:
                param.type.exists = False
                changed.append(param.type)
    try:
        yield
    finally:
        for path_type in changed:
            path_type.exists = True


def parse_torchrun(argv: list[str]) -> Namespace:
    """torchrun's own parse of ``argv``; its error message as a :class:`DocLineError`."""
    from torch.distributed.run import get_args_parser
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return get_args_parser().parse_args(argv)
    except SystemExit:
        raise DocLineError(f"torchrun refuses it: {err.getvalue().strip().splitlines()[-1]}") from None


def parse_ticketforge(argv: list[str], complete: bool = True) -> click.Context | None:
    """click's parse of ``ticketforge ARGV`` (the subcommand's context; None for the group alone).

    With ``complete=False`` a missing required argument or option is filled in with a placeholder.
    """
    from ticketforge.cli.main import cli
    argv = list(argv)
    for _ in range(10):
        try:
            with paths_need_not_exist():
                # the group's own context settings (help option names): click caches the help option it makes
                ctx = click.Context(cli, info_name="ticketforge", resilient_parsing=False, **cli.context_settings)
                # the group's own parse, keeping the subcommand and its arguments together
                rest = click.Command.parse_args(cli, ctx, argv)
                if not rest:
                    return None
                name, command, sub_argv = cli.resolve_command(ctx, rest)
                assert command is not None and name is not None
                return command.make_context(name, sub_argv, parent=ctx)
        except click.MissingParameter as exc:
            if complete or exc.param is None:
                raise DocLineError(f"ticketforge refuses it: {exc.format_message()}") from None
            param = exc.param
            argv += ["1"] if isinstance(param, click.Argument) else [param.opts[0], "1"]
        except click.exceptions.Exit as exc:  # --help, --version
            if exc.exit_code:
                raise DocLineError(f"ticketforge exits with {exc.exit_code}") from None
            return None
        except click.ClickException as exc:
            raise DocLineError(f"ticketforge refuses it: {exc.format_message()}") from None
    raise DocLineError("ticketforge keeps asking for more required parameters")


def dry_parse(command: DocCommand) -> tuple[Namespace | None, click.Context | None]:
    """Parse ``command`` as its programs would; torchrun's namespace (if any) and ticketforge's context."""
    argv = command.argv()
    if command.launcher == "ticketforge":
        return None, parse_ticketforge(argv, complete=command.complete)
    ns = parse_torchrun(argv)
    if ns.training_script != "ticketforge" or not ns.module:
        return ns, None
    return ns, parse_ticketforge(ns.training_script_args, complete=command.complete)

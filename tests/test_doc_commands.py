"""Every command line the docs show parses as written: a doc line cannot drift from the CLI again.

Each ``ticketforge`` and ``torchrun`` line of README.md and docs/*.md goes through the programs' own
parsers (torchrun's argparse, then click), nothing runs; see tests/doc_commands.py for the notation.
"""

from __future__ import annotations

import contextlib

import pytest
from doc_commands import DocCommand, DocLineError, doc_commands, dry_parse, parse_ticketforge, parse_torchrun

from ticketforge.cli.main import all_commands, cli

COMMANDS = doc_commands()


@pytest.mark.parametrize("command", COMMANDS, ids=[c.where for c in COMMANDS])
def test_doc_command_parses(command: DocCommand):
    try:
        dry_parse(command)
    except DocLineError as exc:
        pytest.fail(f"{command.where}: {command.text}\n  {exc}", pytrace=False)


def test_the_docs_show_nproc_first_then_torchrun_with_the_long_percent_names():
    # the extractor sees them (by their text: line numbers move with every edit of the docs)
    assert len(COMMANDS) > 40
    assert any(c.file == "README.md" and c.text.startswith("ticketforge inspect runs/<run> --groups") for c in COMMANDS)
    assert any(c.file == "docs/quickstart.md" and c.text.startswith("ticketforge run --preset cifar10")
               and "800000" in c.argv() and c.complete for c in COMMANDS)  # a continued line, joined
    # multi-process runs: the --nproc line comes first, then torchrun lines, one of them the paper's percentages
    perf = [c for c in COMMANDS if c.file == "docs/performance.md" and c.complete]
    nproc = [c for c in perf if c.launcher == "ticketforge" and "--nproc" in c.argv()]
    torchrun = [c for c in perf if c.launcher == "torchrun"]
    assert nproc and torchrun and nproc[0].line < torchrun[0].line
    paper = [c for c in torchrun if "--prune-percent" in c.argv() and "--prune-increment" in c.argv()]
    assert paper, "docs/performance.md shows no torchrun line with the paper's percentages"
    _, ctx = dry_parse(paper[0])
    assert ctx is not None and ctx.info_name == "run" and (ctx.params["p"], ctx.params["q"]) == (20.0, 1.0)


def test_doc_notation_becomes_arguments():
    line = DocCommand("x.md", 1, "ticketforge eval RUN [--round K | --all] --evaluator NAME [--mode a|b] ...", False)
    assert line.argv() == ["eval", "1", "--round", "1", "--evaluator", "1", "--mode", "a"]
    line = DocCommand("x.md", 1, "torchrun --nproc-per-node N -m ticketforge inspect runs/<run> --json | jq", True)
    assert line.launcher == "torchrun" and line.argv()[-3:] == ["inspect", "runs/x", "--json"]


@pytest.mark.parametrize("text,needle", [
    # the line: torchrun takes --p for its own --print-completion (torch >= 2.14)
    ("torchrun --standalone --nproc-per-node 2 -m ticketforge run --schedule uniform --p 40", "torchrun refuses"),
    ("torchrun --standalone --nproc-per-node 2 -m ticketforge run --nproc 2", "ambiguous option: --nproc"),
    ("torchrun --nproc-per-node 2 -m ticketforge run --prune-pct 40", "No such option"),
    ("ticketforge run --prune-pct 40", "No such option"),
    ("ticketforge run --rounds ten", "'ten' is not a valid integer"),
    ("ticketforge inspect", "Missing argument"),
    ("ticketforge inspec runs/<run>", "No such command"),
])
def test_a_wrong_doc_line_is_refused(text, needle):
    if "--p 40" in text and not _torchrun_has("--print-completion"):
        pytest.skip("this torch's torchrun has no --print-completion (added in 2.14) for --p to abbreviate")
    with pytest.raises(DocLineError, match=needle.replace("(", r"\(")):
        dry_parse(DocCommand("x.md", 1, text, complete=True))


def test_inline_mentions_may_leave_out_required_arguments_but_not_misspell_options():
    assert parse_ticketforge(["inspect", "--json"], complete=False).params["run"] == "1"
    with pytest.raises(DocLineError, match="No such option"):
        parse_ticketforge(["inspect", "--jsn"], complete=False)


def _torchrun_has(option: str) -> bool:
    from torch.distributed.run import get_args_parser
    return option in get_args_parser()._option_string_actions


def _torchrun_passes(name: str, takes_value: bool) -> bool:
    """Whether torchrun hands ``name`` (an option after the program) to the program."""
    try:
        ns = parse_torchrun(["-m", "ticketforge", name, *(["1"] if takes_value else [])])
    except DocLineError:
        return False
    return ns.training_script_args[:1] == [name]


def test_every_option_has_a_name_that_torchrun_passes_on():
    """Under torchrun, an option abbreviating two of torchrun's own is refused: every one has another name.

    For the commands the docs launch under torchrun (``sample --n`` is taken, but sample runs on one process).
    """
    launched = set()
    for c in COMMANDS:
        with contextlib.suppress(DocLineError):  # a line torchrun refuses fails test_doc_command_parses
            launched |= {dry_parse(c)[1].info_name} if c.launcher == "torchrun" else set()
    assert {"run", "eval"} <= launched
    taken = set()
    commands = all_commands()
    for command_name, command in {"": cli, **{n: commands[n] for n in launched}}.items():
        for param in command.params:
            names = [n for n in (*getattr(param, "opts", ()), *getattr(param, "secondary_opts", ()))
                     if n.startswith("--")]
            takes_value = not getattr(param, "is_flag", False)
            passed = [n for n in names if _torchrun_passes(n, takes_value)]
            taken |= {f"{command_name} {n}".strip() for n in names if n not in passed}
            # --nproc has no use under torchrun (it starts torchrun); every other option needs a name
            assert passed or not names or names == ["--nproc"], \
                f"ticketforge {command_name} {names}: torchrun takes every name of it; add a longer one"
    # the short aliases kept for direct use, and --nproc
    assert taken <= {"run --p", "run --q", "run --nproc"}, taken
    assert "run --nproc" in taken  # the check can fail: --nproc abbreviates --nproc-per-node / --nproc_per_node
    assert ("run --p" in taken) == _torchrun_has("--print-completion")


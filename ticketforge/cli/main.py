"""Entry point of the ``ticketforge`` command: the click group and its error handling.

Usage errors exit with 2, failures with 1, each with one line on stderr and no traceback
(``--debug`` shows it).
"""

from __future__ import annotations

import errno
import importlib
import warnings

import click

from ..errors import TicketforgeError, TicketforgeWarning
from .failures import install_signal_handlers, interrupt_exit_code, interrupted_line, os_error_line

# Each command lives in its own module, which exports ``command``, and is imported only when it runs:
# ``ticketforge --help`` (and ``list``) must not wait for torch. The first paragraph of each command's
# help is kept here for ``--help`` (a test checks it against the command's own).
COMMANDS: dict[str, tuple[str, str]] = {
    "branch": ("branch_cmd", "Train a lottery branch of RUN: round K's ticket once more, with other masks or start "
                             "weights."),
    "compare": ("compare_cmd", "Compare two tickets module by module, upstream to downstream: CKA and mask Jaccard."),
    "eval": ("eval_cmd", "Score generated samples of a round (or --all rounds) and store the scores with the round."),
    "export": ("export_cmd", "Export a round's ticket (or a branch's): bit-packed masks, the kept values and the "
                             "config, in safetensors."),
    "flops": ("flops_cmd", "Theoretical MACs of a round's ticket (RUN), a branch's (--branch) or of a fresh dense "
                           "model (--model NAME)."),
    "inspect": ("inspect_cmd", "Show a run's config and its rounds: sparsity, kept weights, loss, mask digest."),
    "list": ("list_cmd", "List installed components (scorers, schedules, models, datasets, similarities, "
                         "evaluators)."),
    "report": ("report_cmd", "Markdown report of one or more runs: per-round table, score vs sparsity, CKA per "
                             "module, samples."),
    "run": ("run_cmd", "Find a lottery ticket: train, prune, rewind, repeat."),
    "sample": ("sample_cmd", "Sample a grid of images from a round's ticket, or a branch's (EMA weights by default)."),
}


class _Group(click.Group):
    """Turns ticketforge errors, interruptions and OS refusals into one line and an exit code.

    Commands are imported when first used, inside :meth:`invoke`, so that a Ctrl-C while torch is
    still loading also ends in that one line; the command list of ``--help`` imports none of them."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module = importlib.import_module(f"{__package__}.{COMMANDS[cmd_name][0]}")
            self.add_command(module.command, cmd_name)
        return self.commands.get(cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's command list, with the short help of a command not yet imported taken from :data:`COMMANDS`."""
        commands = [(name, self.commands.get(name) or click.Command(name, help=COMMANDS[name][1]))
                    for name in self.list_commands(ctx)]
        commands = [(name, command) for name, command in commands if not command.hidden]
        if commands:
            limit = formatter.width - 6 - max(len(name) for name, _ in commands)
            with formatter.section("Commands"):
                formatter.write_dl([(name, command.get_short_help_str(limit)) for name, command in commands])

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["ticketforge_argv"] = list(args)  # the command as given, for the line that says how to resume
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except TicketforgeError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (failures.Terminated)
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"Error: {interrupted_line(exc, ctx.meta.get('ticketforge_argv'))}", err=True)
            ctx.exit(interrupt_exit_code(exc))
        except click.UsageError as exc:  # click's own refusals (a bad option value): one line, like ours
            if ctx.obj and ctx.obj.get("debug"):
                raise
            hint = f" (see {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
            click.echo(f"Error: {exc.format_message()}{hint}", err=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except OSError as exc:
            if (ctx.obj and ctx.obj.get("debug")) or exc.errno == errno.EPIPE:  # a closed pipe: click's own handling
                raise
            known = os_error_line(exc)
            if known is None:
                click.echo(f"Error: {exc.strerror or exc}: {exc.filename or ''} (rerun with --debug for the "
                           f"traceback)", err=True)
                ctx.exit(1)
            click.echo(f"Error: {known[0]}", err=True)
            ctx.exit(known[1])
        except Exception as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"Error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", err=True)
            ctx.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.version_option(package_name="ticketforge")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Find lottery tickets in diffusion models: train, prune, rewind, repeat.

    \b
    Quickstart (a tiny U-Net on the embedded MNIST sample, a few minutes on a CPU):
      ticketforge run --model ddpm-unet --schedule incremental
    Then look at what it found:
      ticketforge inspect runs/<run>          per-round sparsity and loss
      ticketforge sample runs/<run> --out grid.png
    See what is installed:
      ticketforge list
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    _one_line_warnings()


def _one_line_warnings() -> None:
    """ticketforge's own warnings (an optional cache not written) as one ``warning:`` line each on stderr."""
    shown = warnings.showwarning
    if getattr(shown, "ticketforge", False):
        return

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, TicketforgeWarning):
            click.echo(f"warning: {message}", err=True)
        else:
            shown(message, category, filename, lineno, file, line)

    show.ticketforge = True  # type: ignore[attr-defined]
    warnings.showwarning = show


def main() -> None:
    """Console-script entry point."""
    install_signal_handlers()
    cli(prog_name="ticketforge")



def all_commands() -> dict[str, click.Command]:
    """Every command by name, each module imported (for the docs and tests; a command line imports one)."""
    ctx = click.Context(cli, info_name="ticketforge")
    return {name: command for name in cli.list_commands(ctx) if (command := cli.get_command(ctx, name))}

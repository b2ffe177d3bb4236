"""Entry point of the ``ticketforge`` command: the click group and its error handling.

Usage errors exit with 2, failures with 1, each with one line on stderr and no traceback
(``--debug`` shows it).
"""

from __future__ import annotations

import errno
import importlib
import warnings
from collections.abc import MutableMapping

import click

from ..errors import TicketforgeError, TicketforgeWarning
from .failures import install_signal_handlers, interrupt_exit_code, interrupted_line, os_error_line

# Commands live in their own modules; each exports ``command``. Optional ones are skipped if absent.
_COMMANDS = ["run_cmd", "list_cmd", "inspect_cmd", "sample_cmd", "export_cmd",
             "flops_cmd", "compare_cmd", "eval_cmd", "report_cmd", "branch_cmd"]


_MODULES = {name.removesuffix("_cmd"): name for name in _COMMANDS}


class _Group(click.Group):
    """Turns ticketforge errors, interruptions and OS refusals into one line and an exit code.

    Commands are imported when first used, inside :meth:`invoke`, so that a Ctrl-C while torch is
    still loading also ends in that one line."""

    @property
    def commands(self) -> MutableMapping[str, click.Command]:
        for name in _MODULES:
            self._load(name)
        return self._commands

    @commands.setter
    def commands(self, value: MutableMapping[str, click.Command]) -> None:
        self._commands = value

    def _load(self, name: str) -> None:
        if name in self._commands or name not in _MODULES:
            return
        try:
            module = importlib.import_module(f"{__package__}.{_MODULES[name]}")
        except ModuleNotFoundError as exc:  # optional commands may be absent
            if exc.name != f"{__package__}.{_MODULES[name]}":
                raise
            return
        self._commands[module.command.name] = module.command

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self._load(cmd_name)
        return self._commands.get(cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self.commands)

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


if __name__ == "__main__":  # pragma: no cover
    main()

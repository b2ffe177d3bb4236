"""Entry point of the ``ticketforge`` command: the click group and its error handling.

Usage errors exit with 2, failures with 1, each with one line on stderr and no traceback
(``--debug`` shows it).
"""

from __future__ import annotations

import importlib
import sys

import click

from ..errors import TicketforgeError

# Commands live in their own modules; each exports ``command``. Optional ones are skipped if absent.
_COMMANDS = ["run_cmd", "list_cmd", "inspect_cmd", "sample_cmd", "export_cmd",
             "flops_cmd", "compare_cmd", "eval_cmd", "report_cmd", "branch_cmd"]


class _Group(click.Group):
    """Turns ticketforge errors into one line and an exit code."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except TicketforgeError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except click.UsageError as exc:  # click's own refusals (a bad option value): one line as well
            if ctx.obj and ctx.obj.get("debug"):
                raise
            hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
            click.echo(f"Error: {exc.format_message()}{hint}", err=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
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


for _name in _COMMANDS:
    try:
        _module = importlib.import_module(f"{__package__}.{_name}")
    except ModuleNotFoundError as _exc:
        if _exc.name != f"{__package__}.{_name}":
            raise
        continue
    cli.add_command(_module.command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="ticketforge")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Shared CLI helpers: parsing ``KEY=VALUE`` options, picking a round, printing JSON."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import click

from ..config import PRECISIONS, SEED_MAX, SEED_MIN
from ..errors import ConfigError, UsageError
from ..threads import THREADS_HELP, check_threads
from .failures import os_error_line


def parse_key_values(items: tuple[str, ...], flag: str) -> dict[str, Any]:
    """``("ch=64", "dropout=0.1")`` -> ``{"ch": 64, "dropout": 0.1}`` (values parsed as JSON when they can be)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=flag)
        try:
            out[key.replace("-", "_")] = json.loads(value)
        except ValueError:
            out[key.replace("-", "_")] = value
    return out


def key_values_option(flag: str, help: str):
    """A repeatable ``flag KEY=VALUE`` option (the command's ``options``), with ``--option``, its earlier
    spelling, kept hidden and deprecated (the command's ``old_options``; see :func:`given_options`)."""
    def decorate(func):
        func = click.option("--option", "old_options", multiple=True, hidden=True, metavar="KEY=VALUE",
                            help=f"Deprecated spelling of {flag}.")(func)
        return click.option(flag, "options", multiple=True, metavar="KEY=VALUE", help=help)(func)
    return decorate


def given_options(options: tuple[str, ...], old_options: tuple[str, ...], flag: str, *,
                  warn: bool = True) -> dict[str, Any]:
    """The ``KEY=VALUE`` pairs of ``flag`` and of the deprecated ``--option`` (``flag`` wins a key both give),
    with a one-line warning when ``--option`` was used."""
    if old_options and warn:
        click.echo(f"warning: --option is deprecated here: use {flag}", err=True)
    return {**parse_key_values(old_options, "--option"), **parse_key_values(options, flag)}


def parse_fractions(ctx: click.Context, param: click.Parameter, value: str | None) -> list[float] | None:
    """``"0,0.05,0.2"`` -> ``[0.0, 0.05, 0.2]`` (a click callback; None stays None)."""
    if value is None:
        return None
    try:
        return [float(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"{param.opts[0]} takes comma-separated fractions such as 0,0.05,0.2, not {value!r}") from None


def echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=False, default=str))


round_option = click.option("--round", "round_", type=int, default=None,
                            help="Round index (0 is dense); default: the last finished round. -1 counts back.")
branch_option = click.option("--branch", default=None, metavar="NAME",
                             help="A branch of RUN instead of a round (name, unique prefix or part such as reinit; "
                                  "`inspect RUN` lists them). A branch folder may also be given as RUN.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
progress_option = click.option(
    "--progress", type=click.Choice(["auto", "rich", "log", "none"]), default="auto", show_default=True,
    help="How progress is shown on stderr: rich bars, plain log lines (at most one per task every 10 s), "
         "or none; auto = rich on a terminal, log otherwise.")


class ThreadsParam(click.ParamType):
    """``auto`` or a thread count >= 1, refused in one line otherwise."""

    name = "auto|N"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        try:
            return check_threads(value if isinstance(value, int) else str(value).strip().lower(), "--threads")
        except ConfigError as exc:
            self.fail(str(exc).removeprefix("--threads "), param, ctx)



def sampling_options(func):
    """``--sampler``, ``--steps``, ``--seed``, ``--no-ema``, ``--device``, ``--threads``, ``--precision`` and
    ``--compile``: how images are drawn from a round."""
    for option in reversed([
        click.option("--sampler", default=None,
                     help="Sampler of the model plugin (ddpm-unet: ddpm, ddim). [default: the model's]"),
        click.option("--steps", type=int, default=100, show_default=True, help="Denoising steps."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sampling noise."),
        click.option("--no-ema", is_flag=True, help="Use the raw trained weights instead of their EMA."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
        click.option("--threads", type=ThreadsParam(), default="auto", show_default=True, help=THREADS_HELP),
        click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
                     help="Precision of the denoiser: fp32, tf32 or bf16 autocast; auto = tf32 on a GPU, fp32 on "
                          "a CPU. Evaluators' featurizers keep their own."),
        click.option("--compile/--no-compile", "compile_", default=False, show_default=True,
                     help="torch.compile the denoiser (on a GPU: CUDA graphs and channels_last weights): "
                          "about 3x faster sampling than eager tf32 with --precision bf16, after a compile of "
                          "about a minute."),
    ]):
        func = option(func)
    return func


def check_seed(seed: int, flag: str = "--seed") -> None:
    """A seed torch's generators take (64 bits), refused in one line before any work."""
    if not SEED_MIN <= seed <= SEED_MAX:
        raise UsageError(f"{flag} must fit in 64 bits ({SEED_MIN} to {SEED_MAX}), not {seed}")


def writable_output(path: str | Path, flag: str = "--out", *, folder: bool = False) -> Path:
    """``path`` (a file, or a folder with ``folder``) checked writable before the work that fills it.

    Makes missing parent folders; refuses a folder where a file is wanted (and the reverse), a
    device or other special file, and a place the user may not write, naming the path and ``flag``.
    """
    out = Path(path)
    try:
        if out.exists() and not folder and not out.is_file():
            if out.is_dir():
                raise IsADirectoryError(21, "Is a directory", str(out))
            raise UsageError(f"{out} is not a regular file: give a file path with {flag}")
        target = out if folder else out.parent
        target.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=target)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        if not isinstance(exc, (NotADirectoryError, FileExistsError)):
            exc.filename = str(out)
        known = os_error_line(exc)
        if known is None:
            raise
        raise UsageError(known[0].replace("--out", flag)) from None
    return out

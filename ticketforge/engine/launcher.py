"""torchrun with a hard boundary between its own options and the program's (``ticketforge run --nproc N``).

``torchrun OPTIONS -m ticketforge ARGS`` gives its whole command line to argparse, ``ARGS`` included.
argparse leaves ``ARGS`` to the program, except an option among them that abbreviates two of torchrun's
option names: it stops torchrun with "ambiguous option" (``--p``: ``--print-completion`` and
``--print_completion``, since torch 2.14; ``--nproc``: ``--nproc-per-node`` and ``--nproc_per_node``). Here torchrun's parser sees its own options alone and
``ARGS`` are handed over after it ran, as given::

    python -m ticketforge.engine.launcher TORCHRUN-OPTIONS -m ticketforge -- ARGS

Everything else is torchrun's own code (its ``main`` is ``record(run)`` of the parsed options).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


def torchrun_args(launcher: Sequence[str], program_args: Sequence[str]) -> argparse.Namespace:
    """torchrun's options parsed from ``launcher`` (which ends with the program), with ``program_args`` as given."""
    from torch.distributed.run import get_args_parser

    args = get_args_parser().parse_args(list(launcher))
    if args.training_script_args:
        raise ValueError(f"launcher options end with the program, not {args.training_script_args}")
    args.training_script_args = list(program_args)
    return args


def main(argv: Sequence[str]) -> None:
    if "--" not in argv:
        raise SystemExit("usage: python -m ticketforge.engine.launcher TORCHRUN-OPTIONS PROGRAM -- ARGS")
    cut = list(argv).index("--")
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, record
    from torch.distributed.run import run

    try:
        record(run)(torchrun_args(argv[:cut], argv[cut + 1:]))
    except ChildFailedError as exc:
        # The process printed its own error; pass its exit code on (2: bad input) without torchrun's traceback.
        rank, failure = exc.get_first_failure()
        print(f"Error: process {rank} exited with code {failure.exitcode} (its error is above)", file=sys.stderr)
        raise SystemExit(failure.exitcode if failure.exitcode > 0 else 1) from None


if __name__ == "__main__":
    main(sys.argv[1:])

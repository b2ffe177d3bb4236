"""Start-up of the command line: wall time of ``python -m ticketforge ARGS`` (min of N runs) and what it imports.

    python benchmarks/cli_startup.py                    # --help and list, 5 runs each
    python benchmarks/cli_startup.py --runs 9 "list models"

For each command line: the fastest and every wall time, then one run under ``-X importtime``: how many
modules it imported, their cumulative import time, and whether torch, torchvision or torch._dynamo was
among them. The environment (PYTHONPATH included) is passed on, so another checkout can be measured the
same way. Numbers in docs/performance.md.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time

HEAVY = ("torch", "torchvision", "torch._dynamo")


def wall_times(args: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ticketforge", *args], stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return times


def imports(args: list[str]) -> tuple[int, float, list[str]]:
    """Modules imported, their cumulative import time in seconds (top-level entries), and the heavy ones."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "ticketforge", *args],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=True)
    rows = [line.split("|") for line in done.stderr.splitlines() if line.startswith("import time:")][1:]
    names = [name.strip() for _, _, name in rows]
    top = sum(int(cumulative) for _, cumulative, name in rows if not name.startswith("  ")) / 1e6
    return len(names), top, [m for m in HEAVY if m in names]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("commands", nargs="*", default=["--help", "list"], help="argument lines, quoted")
    parser.add_argument("--runs", type=int, default=5)
    opts = parser.parse_args(argv)
    for line in opts.commands:
        args = shlex.split(line)
        times = wall_times(args, opts.runs)
        count, seconds, heavy = imports(args)
        print(f"ticketforge {line}: min {min(times):.2f} s of {opts.runs} ({' '.join(f'{t:.2f}' for t in times)}); "
              f"{count} modules, {seconds:.2f} s of imports; heavy: {', '.join(heavy) or 'none'}")


if __name__ == "__main__":
    main()

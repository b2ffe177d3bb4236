"""One line, and an exit code, for what ends a command other than a ticketforge error: an
interruption (Ctrl-C, SIGTERM) or an operating-system refusal (permissions, a file in the way,
a read-only or full disk). Each line names the path and says what to do.
"""

from __future__ import annotations

import errno
import shlex
import signal
from types import FrameType

INTERRUPTED = ("interrupted: finished rounds are kept and no file is left half-written; give the same command "
               "again to resume")
SIGINT_EXIT, SIGTERM_EXIT = 130, 143  # 128 + the signal number, as shells report it


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so that it unwinds like Ctrl-C (temp files removed)."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


def install_signal_handlers() -> None:
    """SIGTERM unwinds the command like Ctrl-C does (the default would end it without a word)."""
    signal.signal(signal.SIGTERM, _raise_terminated)


def interrupt_exit_code(exc: KeyboardInterrupt) -> int:
    return SIGTERM_EXIT if isinstance(exc, Terminated) else SIGINT_EXIT


def interrupted_line(exc: KeyboardInterrupt, argv: list[str] | None) -> str:
    """What an interruption kept, and the command that resumes (``argv`` without ``--fresh``, which would
    discard what was kept)."""
    from ..engine.interrupts import interrupted_at

    at = interrupted_at(exc)
    if at is None:
        return INTERRUPTED
    command = shlex.join(["ticketforge", *[a for a in argv if a != "--fresh"]]) if argv else "the same command"
    return (f"interrupted: {at.describe()} in {at.folder}; finished rounds are kept and no file is left "
            f"half-written; give the same command again to resume: {command}")


def os_error_line(exc: OSError) -> tuple[str, int] | None:
    """The one line and exit code for an OSError the user can fix by choosing another path, or None."""
    path = exc.filename if exc.filename is not None else "a file"
    code = exc.errno
    if exc.filename is not None and _in_cache(str(exc.filename)) and code not in (errno.ENOSPC, errno.EDQUOT):
        reason = exc.strerror or type(exc).__name__
        return f"cannot write the cache at {path} ({reason}): set TICKETFORGE_CACHE to a writable folder", 2
    if code in (errno.ENOSPC, errno.EDQUOT):
        return (f"no space left on the disk of {path}: free some space, or write elsewhere with --out; "
                f"finished rounds are kept and the same command resumes"), 1
    if code == errno.EROFS:
        return f"{path} is on a read-only file system: choose a writable folder with --out", 2
    if isinstance(exc, PermissionError):
        return (f"permission denied for {path}: choose a folder you can write to with --out, "
                f"or change its permissions"), 2
    if isinstance(exc, IsADirectoryError):
        return f"{path} is a folder where a file is wanted: give a file path (--out FILE) or move the folder", 2
    if isinstance(exc, (NotADirectoryError, FileExistsError)):
        path = _file_in_the_way(path)
        return (f"a file is in the way at {path}, where a folder is wanted: move or delete it, or choose "
                f"another --out"), 2
    return None


def _file_in_the_way(path: str) -> str:
    """The first file among ``path`` and its parents (what blocks a folder from being made)."""
    from pathlib import Path

    for candidate in [Path(path), *Path(path).parents]:
        if candidate.exists():
            return str(candidate) if not candidate.is_dir() else path
    return path


def _in_cache(path: str) -> bool:
    """Whether ``path`` lies under ticketforge's cache root (the advice is then TICKETFORGE_CACHE, not --out)."""
    from pathlib import Path

    from ..cache import cache_root

    try:
        return Path(path).resolve().is_relative_to(cache_root().resolve())
    except (OSError, ValueError):
        return False

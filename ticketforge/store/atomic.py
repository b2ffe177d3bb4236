"""Atomic file writes: temp file in the same folder, fsync, rename, fsync the folder.

A reader (or a resumed run after SIGKILL) sees either the old file or the new one, never half.
The file gets the mode a plain ``open(path, "w")`` would give it (0666 less the umask): mkstemp's
0600 would make an exported ticket or a run folder unreadable to the people it is shared with.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Iterable

# The store's temp files, ``.<target name>.<8 random characters>.ticketforge-tmp``: a name no other
# program uses, so cleaning up after a killed writer can never delete someone else's file.
TEMP_SUFFIX = ".ticketforge-tmp"
_TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}" + re.escape(TEMP_SUFFIX))


def atomic_write_bytes(path: str | Path, data: bytes) -> str:
    """Write ``data`` to ``path`` atomically; returns its sha256 hex digest."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~current_umask())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # a failed write (a full disk) names the file it was for
        raise
    _fsync_dir(path.parent)
    return hashlib.sha256(data).hexdigest()


def current_umask() -> int:
    """The process's umask, read from /proc where it can be (setting it to read it is not thread-safe)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sha256_file(path: str | Path) -> str:
    """sha256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_temp_file(name: str) -> bool:
    """Whether ``name`` is a temp file of :func:`atomic_write_bytes` (exact pattern, nothing else)."""
    return _TEMP_NAME.fullmatch(name) is not None


def clean_temp_files(folders: Iterable[str | Path]) -> None:
    """Remove the temp files that a killed writer left in ``folders`` (not below them)."""
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            if is_temp_file(entry.name) and entry.is_file(follow_symlinks=False):
                Path(entry.path).unlink(missing_ok=True)

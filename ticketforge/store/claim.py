"""Which folder a run may start in, and what ``--fresh`` may delete.

A run starts only in a folder that is absent, empty (nothing in it but the store's own leftovers:
the lock, its temp files, a first ``config.json``) or that already holds a ticketforge run. ``--fresh``
deletes only the files of a ticketforge run, and only while holding the run's lock
(:func:`clear_run`), so that it can never delete a folder of someone else's files or a run that
another process is writing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath

from ..errors import ConfigError, TicketforgeError
from .atomic import clean_temp_files, is_temp_file
from .lock import RunLock
from .run_store import CONFIG, FORMAT, LOG, MANIFEST, store_folders

LOCK = "lock"  # RunLock's file


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


def _is_run_config(path: Path) -> bool:
    data = _read_json(path)
    return isinstance(data, dict) and isinstance(data.get("model"), str) and "schedule" in data


def manifest_files(run_dir: Path) -> dict[str, str] | None:
    """The manifest's file list if ``run_dir`` holds a ticketforge run's manifest, else None."""
    data = _read_json(run_dir / MANIFEST)
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("files"), dict):
        return None
    return data["files"]


def is_run(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a ticketforge run: its manifest says so and lists its config.

    A config that is present must be a run's config; one that is absent (a --fresh interrupted between
    deleting the config and the manifest) still leaves the folder a run, so that --fresh can finish."""
    run_dir = Path(run_dir)
    files = manifest_files(run_dir)
    if files is None or CONFIG not in files:
        return False
    return not (run_dir / CONFIG).exists() or _is_run_config(run_dir / CONFIG)


def _holds_only_store_leftovers(folder: Path, top: bool = True) -> bool:
    """True if ``folder`` has no file but the lock, store temp files and a run's first config (empty folders allowed)."""
    for entry in os.scandir(folder):
        if entry.is_dir(follow_symlinks=False):
            if not _holds_only_store_leftovers(Path(entry.path), top=False):
                return False
        elif not (is_temp_file(entry.name) or (top and entry.name == LOCK)
                  or (top and entry.name == CONFIG and _is_run_config(Path(entry.path)))):
            return False
    return True


def check_run_folder(run_dir: str | Path, fresh: bool) -> None:
    """Refuse (one line, nothing touched) a folder that a run may not start in, or ``--fresh`` may not clear."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is a file, not a run folder: give a folder with --out")
    if is_run(run_dir) or _holds_only_store_leftovers(run_dir):
        return
    if fresh:
        raise ConfigError(f"--fresh deletes only a ticketforge run, and {run_dir} is not one (no run manifest "
                          f"and config): nothing was deleted; give a run folder or another --out")
    raise ConfigError(f"{run_dir} is not empty and holds no ticketforge run: a run starts only in a new or "
                      f"empty folder (or its own run folder); give another --out")


def _inside(run_dir: Path, rel: str) -> Path | None:
    """``run_dir / rel`` if ``rel`` is a plain relative path inside the run (never ``..`` or absolute)."""
    parts = PurePosixPath(rel).parts
    if not parts or PurePosixPath(rel).is_absolute() or ".." in parts or LOCK == rel:
        return None
    return run_dir.joinpath(*parts)


def _hold_branch(branch: Path) -> RunLock:
    try:
        return RunLock(branch).acquire()
    except TicketforgeError:
        raise TicketforgeError(f"branch {branch.name} of {branch.parent.parent} is training in another process: "
                               f"wait for it to finish (or stop it), then give --fresh again; nothing was deleted"
                               ) from None


def clear_run(run_dir: str | Path) -> None:
    """Delete a run's files (call it holding the run's lock; the lock file itself stays).

    Only what the store wrote goes: its lottery branches (each a run folder of its own under
    ``branches/``, cleared the same way: they were trained from the masks now deleted), the manifest's
    files, the log, the store's temp files, the config and, last, the manifest (an interrupted clear
    leaves a run that --fresh can clear again). Other files, and folders that are not empty once the
    run's files are gone, are left where they are.
    """
    run_dir = Path(run_dir)
    if not run_dir.exists():
        return
    check_run_folder(run_dir, fresh=True)  # again, under the lock
    branches = run_dir / "branches"
    found = [b for b in sorted(branches.iterdir()) if b.is_dir() and is_run(b)] if branches.is_dir() else []
    held: list[RunLock] = []
    try:
        for branch in found:  # a branch trains under its own lock, not the run's: take each, or delete nothing
            held.append(_hold_branch(branch))
        for branch in found:
            clear_run(branch)
            (branch / LOCK).unlink(missing_ok=True)
            if not any(branch.iterdir()):
                branch.rmdir()
    finally:
        for lock in held:
            lock.release()
    if branches.is_dir() and not any(branches.iterdir()):
        branches.rmdir()
    files = manifest_files(run_dir) or {}
    folders = store_folders(run_dir, list(files))
    for rel in sorted(files):
        path = _inside(run_dir, rel)
        if path is not None and rel not in (CONFIG, MANIFEST) and (path.is_file() or path.is_symlink()):
            path.unlink()
    clean_temp_files(folders)
    for name in (LOG, CONFIG, MANIFEST):
        (run_dir / name).unlink(missing_ok=True)
    for folder in sorted(folders - {run_dir}, key=lambda p: len(p.parts), reverse=True):
        while folder != run_dir and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent

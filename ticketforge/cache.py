"""Where ticketforge and its plugins cache things, and content fingerprints of source files.

One rule for every cache (the data cache, extracted archives, featurizers, reference features):
``$TICKETFORGE_CACHE``, else ``$XDG_CACHE_HOME/ticketforge``, else ``~/.cache/ticketforge``.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Iterable

from .errors import TicketforgeWarning


def cache_root() -> Path:
    """The folder every ticketforge cache lives under (see the module docstring)."""
    if os.environ.get("TICKETFORGE_CACHE"):
        return Path(os.environ["TICKETFORGE_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ticketforge"


def warn_cache(what: str, path: Path, exc: OSError) -> None:
    """An optional cache could not be used: say so in one line, and go on without it."""
    reason = exc.strerror or str(exc)
    warnings.warn(f"cannot write the {what} at {path} ({reason}); going on without it "
                  f"(set TICKETFORGE_CACHE to a writable folder to keep it)", TicketforgeWarning, stacklevel=3)


def files_fingerprint(files: Iterable[str | Path], extra: str = "") -> str:
    """sha256 over the contents (and names) of ``files``, hashed once per size and mtime.

    The files' sha256 is remembered under ``<cache>/fingerprints`` keyed by every file's path,
    size, mtime, ctime and inode, so an unchanged set of files costs one ``stat`` each on later
    runs; any change to one of them (rewritten, replaced, resized, even with its mtime set back:
    the ctime moves) hashes the set again.
    """
    paths = [Path(f) for f in files]
    stats = hashlib.sha256(extra.encode())
    for p in paths:
        st = p.stat()
        stats.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}\n".encode())
    memo = cache_root() / "fingerprints" / f"{stats.hexdigest()[:32]}.sha256"
    try:
        known = memo.read_text().strip()
        if len(known) == 64:
            return known
    except OSError:
        pass
    content = hashlib.sha256(extra.encode())
    for p in paths:
        content.update(f"{p.name}|{p.stat().st_size}\n".encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                content.update(chunk)
    digest = content.hexdigest()
    try:
        from .store.atomic import atomic_write_bytes
        atomic_write_bytes(memo, digest.encode())
    except OSError as exc:
        warn_cache("fingerprint memo", memo, exc)
    return digest

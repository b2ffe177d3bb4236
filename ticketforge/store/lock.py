"""One process per run: an advisory ``flock`` that the kernel drops when its holder dies."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..errors import TicketforgeError


class RunLock:
    """Exclusive lock on ``<run>/lock``; a killed holder never leaves it stuck."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / "lock"
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise TicketforgeError(f"run {self.path.parent} is in use by pid {holder}: wait for it to finish "
                                   f"or choose another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def check(self) -> None:
        """Refuse now, in the same words, if another process holds the run (taken and let go at once)."""
        self.acquire().release()

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

"""The run store: content-addressed, resumable run directories written atomically."""

from .atomic import atomic_write_bytes, sha256_file
from .lock import RunLock
from .run_store import RunStore

__all__ = ["atomic_write_bytes", "sha256_file", "RunLock", "RunStore"]

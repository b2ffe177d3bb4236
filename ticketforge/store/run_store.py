"""A run directory: every file written atomically and listed with its sha256 in ``manifest.json``.

Layout::

    RUN/config.json             resolved config (what the directory's hash is made of)
    RUN/manifest.json           {"files": {relative path: sha256}}
    RUN/init.safetensors        theta_0, plain layout
    RUN/rewind.safetensors      theta_tau (the rewind point), plain layout, written when round 0 finishes
    RUN/rewind_points/step-00000010.safetensors   theta at a kept point of round 0 (keep_rewind_points)
    RUN/checkpoint.pt           the unfinished round's last checkpoint (weights_only loadable)
    RUN/train_log.jsonl         per-step log lines (loss, lr, steps/s)
    RUN/rounds/0003/masks.safetensors, weights.safetensors, ema.safetensors, record.json, *.png
    RUN/branches/<name>/        a lottery branch: a one-round run folder of its own (engine/branch.py)
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from torch import Tensor

from ..errors import CheckpointError, ConfigError
from .atomic import atomic_write_bytes, clean_temp_files, sha256_file
from .canonical import safetensors_bytes

MANIFEST = "manifest.json"
CONFIG = "config.json"
LOG = "train_log.jsonl"
FORMAT = "ticketforge-run/1"


def round_dir(k: int) -> str:
    """Relative folder of round ``k``."""
    return f"rounds/{k:04d}"


def store_folders(run_dir: Path, listed: list[str]) -> set[Path]:
    """The folders the store writes in: the run folder, each round's folder, the folders of listed files."""
    folders = {run_dir} | {p for p in (run_dir / "rounds").glob("[0-9][0-9][0-9][0-9]") if p.is_dir()}
    for rel in listed:
        parent = (run_dir / rel).parent
        if ".." not in Path(rel).parts and not Path(rel).is_absolute():
            folders.add(parent)
    return folders


class RunStore:
    """Reads and writes the files of one run directory, verifying checksums on every read."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._manifest: dict[str, str] | None = None

    # -- manifest -------------------------------------------------------------------------------
    @property
    def manifest(self) -> dict[str, str]:
        if self._manifest is None:
            file = self.path / MANIFEST
            if not file.exists():
                self._manifest = {}
            else:
                try:
                    data = json.loads(file.read_text())
                    self._manifest = dict(data["files"])
                except (ValueError, KeyError, TypeError):
                    raise CheckpointError(f"{file} is corrupt: this is not a ticketforge run directory, "
                                          f"or it was damaged; start over with --fresh") from None
        return self._manifest

    def _save_manifest(self) -> None:
        blob = json.dumps({"format": FORMAT, "files": self.manifest}, indent=1, sort_keys=True).encode()
        atomic_write_bytes(self.path / MANIFEST, blob)

    def exists(self) -> bool:
        """Whether a run was started here (its config was written and registered)."""
        return self.has(CONFIG)

    def has(self, rel: str) -> bool:
        """Whether ``rel`` was written completely (listed in the manifest and present)."""
        return rel in self.manifest and (self.path / rel).exists()

    def clean(self) -> None:
        """Drop the store's temp files that a killed writer left, in the folders the store writes."""
        if not self.path.exists():
            return
        try:
            listed = list(self.manifest)
        except CheckpointError:
            listed = []  # a damaged manifest is reported by the next read, not here
        clean_temp_files(store_folders(self.path, listed))

    # -- writing --------------------------------------------------------------------------------
    def write_bytes(self, rel: str, data: bytes) -> None:
        self.manifest[rel] = atomic_write_bytes(self.path / rel, data)
        self._save_manifest()

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_bytes(rel, json.dumps(obj, indent=1, sort_keys=True, default=str).encode())

    def write_tensors(self, rel: str, tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> None:
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        self.write_bytes(rel, safetensors_bytes(tensors, metadata))

    def write_file(self, rel: str) -> None:
        """Register a file someone else wrote under the run (a PNG) with its checksum."""
        self.manifest[rel] = sha256_file(self.path / rel)
        self._save_manifest()

    def forget(self, rel: str) -> None:
        """Remove a file and its manifest entry (the finished round's checkpoint)."""
        (self.path / rel).unlink(missing_ok=True)
        if self.manifest.pop(rel, None) is not None:
            self._save_manifest()

    # -- reading --------------------------------------------------------------------------------
    def read_bytes(self, rel: str) -> bytes:
        file = self.path / rel
        if rel not in self.manifest:
            raise CheckpointError(f"{file} is not part of this run (not in its manifest): run the round again "
                                  f"by giving the same command, or start over with --fresh")
        try:
            data = file.read_bytes()
        except FileNotFoundError:
            raise CheckpointError(f"{file} is missing: give the same command again to redo its round, "
                                  f"or start over with --fresh") from None
        if hashlib.sha256(data).hexdigest() != self.manifest[rel]:
            raise CheckpointError(f"{file} fails its checksum (corrupt or changed since it was written): "
                                  f"delete its round folder and give the same command again")
        return data

    def read_json(self, rel: str) -> Any:
        try:
            return json.loads(self.read_bytes(rel))
        except ValueError:
            raise CheckpointError(f"{self.path / rel} is not valid JSON: delete it and rerun") from None

    def read_tensors(self, rel: str) -> dict[str, Tensor]:
        try:
            return st_load(self.read_bytes(rel))
        except (SafetensorError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{self.path / rel} is not a readable safetensors file ({exc})") from None

    # -- config ---------------------------------------------------------------------------------
    def read_config(self) -> dict[str, Any]:
        if not self.exists():
            raise CheckpointError(f"{self.path} is not a ticketforge run (no {CONFIG}): check the path")
        return self.read_json(CONFIG)

    def write_config(self, config: dict[str, Any]) -> None:
        self.write_json(CONFIG, config)

    # -- checkpoints (torch.save, loaded with weights_only=True) ---------------------------------
    def write_checkpoint(self, rel: str, obj: dict[str, Any]) -> None:
        buf = io.BytesIO()
        torch.save(obj, buf)
        self.write_bytes(rel, buf.getvalue())

    def read_checkpoint(self, rel: str) -> dict[str, Any]:
        data = self.read_bytes(rel)
        try:
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a foreign or truncated pickle
            raise CheckpointError(f"{self.path / rel} cannot be loaded safely ({type(exc).__name__}): "
                                  f"delete it and give the same command again") from None

    # -- rounds ---------------------------------------------------------------------------------
    def finished_rounds(self) -> list[int]:
        """Indices of the rounds whose record was written (a round's last file)."""
        rounds = []
        for rel in self.manifest:
            parts = rel.split("/")
            # A round folder someone deleted (to redo a damaged round) no longer counts as finished.
            if len(parts) == 3 and parts[0] == "rounds" and parts[2] == "record.json" and (self.path / rel).exists():
                rounds.append(int(parts[1]))
        return sorted(rounds)

    def round_record(self, k: int) -> dict[str, Any]:
        if k not in self.finished_rounds():
            done = self.finished_rounds()
            raise ConfigError(f"round {k} of {self.path} is not finished (finished rounds: "
                              f"{', '.join(map(str, done)) or 'none'})")
        return self.read_json(f"{round_dir(k)}/record.json")

    def append_log(self, line: dict[str, Any]) -> None:
        """Append one JSON line to the training log (a log, not a checkpoint: not in the manifest)."""
        with open(self.path / LOG, "a") as f:
            f.write(json.dumps(line) + "\n")

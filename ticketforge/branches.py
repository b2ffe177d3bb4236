"""Find and name the lottery branches of a run: ``RUN/branches/<masks>-<start>-<hash>/``.

A branch is one retraining of round K's masks (or random masks of the same counts, or none) from
another start; its folder is itself a one-round run (``rounds/0000``) whose config carries a
``"branch"`` dict (``of_round``, ``masks``, ``start``, ``rewind_fraction``, ``steps``, ``seed``,
``init_seed``, ``name``, ``parent_run``). This module only reads them: the inspection and evaluation
commands use it to show branches next to the rounds they branch from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import TicketforgeError, UsageError
from .store import RunStore

BRANCHES = "branches"
"""The folder of a run that holds its branches."""

CHECKPOINT = "checkpoint.pt"
_HASH_TAIL = re.compile(r"-[0-9a-f]{12}$")


@dataclass(frozen=True)
class BranchInfo:
    """One branch of a run, finished or not.

    Attributes:
        name: the folder name, ``<masks>-<start>-<12 hex>``.
        path: the branch's folder (a one-round run).
        branch: the ``"branch"`` dict of its config (empty when its config could not be read).
        record: round 0's record when finished, else None.
        step: the step of its last checkpoint while unfinished, when it could be read.
        error: why the branch could not be read (a damaged or foreign folder), else None.
    """

    name: str
    path: Path
    branch: dict[str, Any]
    record: dict[str, Any] | None
    step: int | None = None
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.record is not None

    @property
    def of_round(self) -> int | None:
        value = self.branch.get("of_round")
        return int(value) if value is not None else None

    @property
    def steps(self) -> int | None:
        value = self.branch.get("steps")
        return int(value) if value is not None else None

    @property
    def kind(self) -> str:
        """``masks-start`` (``ticket-tau``, ``ticket-tau0.2``, ``none-trained3``): what the plot legends group by."""
        return branch_kind(self.branch, self.name)

    @property
    def status(self) -> str:
        """``finished``, ``step N of M``, ``unfinished`` or ``unreadable: ...``."""
        if self.error:
            return f"unreadable: {self.error}"
        if self.finished:
            return "finished"
        if self.step is not None:
            return f"step {self.step} of {self.steps if self.steps is not None else '?'}"
        return "unfinished"

    def to_json(self) -> dict[str, Any]:
        """The ``inspect --json`` entry of this branch."""
        return {"name": self.name, "path": str(self.path), "kind": self.kind, "of_round": self.of_round,
                "finished": self.finished, "status": self.status, "step": self.step, "branch": self.branch,
                "record": self.record}


def branch_kind(branch: dict[str, Any], name: str = "") -> str:
    """``masks-start`` of a branch: from its name without the hash, else from its branch dict."""
    if _HASH_TAIL.search(name):
        return _HASH_TAIL.sub("", name)
    start = str(branch.get("start", "?")).replace(":", "")
    if branch.get("rewind_fraction") is not None:  # the rule of the folder names (engine/branch.py)
        start += f"{float(branch['rewind_fraction']):g}"
    return f"{branch.get('masks', '?')}-{start}"


def branches_dir(run: str | Path) -> Path:
    return Path(run) / BRANCHES


def branch_of(path: str | Path) -> dict[str, Any] | None:
    """The branch dict of the run folder ``path`` when it is a branch, else None."""
    store = RunStore(path)
    if not store.exists():
        return None
    branch = store.read_config().get("branch")
    return branch if isinstance(branch, dict) else None


def checkpoint_position(path: str | Path) -> tuple[int, int] | None:
    """(round folder, step) of a run's checkpoint, read without loading its tensors (None if unreadable)."""
    import torch
    file = Path(path) / CHECKPOINT
    if not file.is_file():
        return None
    try:  # mmap: only the pickle is read, the tensors stay on disk
        ckpt = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        return int(ckpt["round"]), int(ckpt["step"])
    except Exception:  # a checkpoint being replaced, or damaged: the listing says "unfinished"
        return None


def checkpoint_step(path: str | Path) -> int | None:
    """The step of an unfinished run's checkpoint, read without loading its tensors (None if unreadable)."""
    position = checkpoint_position(path)
    return None if position is None else position[1]


def read_branch(path: str | Path) -> BranchInfo:
    """What ``path`` holds as a branch; problems are reported in ``error``, never raised."""
    path = Path(path)
    store = RunStore(path)
    try:
        if not store.exists():
            return BranchInfo(path.name, path, {}, None, checkpoint_step(path), error="no config.json")
        branch = store.read_config().get("branch")
        if not isinstance(branch, dict):
            return BranchInfo(path.name, path, {}, None, error="its config has no branch entry")
        record = store.round_record(0) if 0 in store.finished_rounds() else None
    except TicketforgeError as exc:
        return BranchInfo(path.name, path, {}, None, error=str(exc))
    return BranchInfo(path.name, path, dict(branch), record, None if record else checkpoint_step(path))


def list_branches(run: str | Path) -> list[BranchInfo]:
    """Every branch of ``run`` (finished or not), ordered by the round it branches from, then name."""
    folder = branches_dir(run)
    if not folder.is_dir():
        return []
    infos = [read_branch(p) for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted(infos, key=lambda b: (b.of_round if b.of_round is not None else 1 << 30, b.name))


def resolve_branch(run: str | Path, name: str) -> BranchInfo:
    """The branch of ``run`` called ``name``, else the one branch whose name holds it as whole
    dash-separated parts (``reinit`` for ``ticket-reinit-<hash>``; ``ticket-tau`` is not
    ``ticket-tau0.2-<hash>``), else the one whose name starts with it.

    Raises:
        UsageError: no branch or several match; the message lists the known names.
    """
    branches = list_branches(run)
    exact = [b for b in branches if b.name == name]
    # whole parts before prefixes: `ticket-tau` is the kind ticket-tau, not also ticket-tau0.2
    matches = exact or [b for b in branches if f"-{name}-" in f"-{b.name}-"] or \
        [b for b in branches if b.name.startswith(name)]
    if len(matches) == 1:
        return matches[0]
    if not branches:
        raise UsageError(f"{run} has no branches: make one with `ticketforge branch {run} --round K`")
    if matches:
        raise UsageError(f"branch {name!r} of {run} is ambiguous: it starts {', '.join(b.name for b in matches)}; "
                         f"give more of the name")
    raise UsageError(f"{run} has no branch {name!r} (branches: {', '.join(b.name for b in branches)})")


def resolve_source(run: str | Path, branch: str | None = None, round: int | None = None
                   ) -> tuple[Path, int | None, BranchInfo | None]:
    """The folder and round to load for ``RUN [--branch NAME] [--round K]``.

    A branch is a run of one round: with ``--branch`` (or a branch folder given as RUN) the round is 0;
    ``--round`` with ``--branch`` is refused rather than silently ignored.

    Raises:
        UsageError: an unknown or unfinished branch, or ``--round`` together with ``--branch``.
    """
    if branch is None:
        return Path(run), round, None
    if round is not None:
        raise UsageError(f"--round {round} with --branch: a branch has one round (it branches from round "
                         f"{resolve_branch(run, branch).of_round}); drop --round")
    info = resolve_branch(run, branch)
    if info.error:
        raise UsageError(f"branch {info.name} of {run} cannot be read: {info.error}")
    if not info.finished:
        raise UsageError(f"branch {info.name} of {run} is not finished ({info.status}): give its "
                         f"`ticketforge branch` command again to finish it")
    return info.path, 0, info


def describe(path: str | Path, round: int) -> str:
    """``round 3`` for a run's round, ``branch NAME (of round 3)`` for a branch folder."""
    branch = branch_of(path)
    if branch is None:
        return f"round {round}"
    return f"branch {branch.get('name') or Path(path).name} (of round {branch.get('of_round')})"


__all__ = ["BRANCHES", "BranchInfo", "branch_kind", "branch_of", "branches_dir", "checkpoint_position",
           "checkpoint_step", "describe", "list_branches", "read_branch", "resolve_branch", "resolve_source"]

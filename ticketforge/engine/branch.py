"""Lottery branches: a finished round's ticket trained once more, with other masks or other start weights.

The canonical controls of a ticket (Frankle & Carbin 2019; Frankle et al. 2020, 2021; Ma et al. 2021;
open_lth's "lottery branches") take the masks iterative pruning found at round K and retrain them once:

- masks ``ticket`` (round K's), ``random`` (random positions, exactly round K's count in every tensor,
  seeded) or ``none`` (dense, a reference of the same budget);
- start ``tau`` (theta_tau, or with ``rewind_fraction`` theta at a point of round 0 the run kept),
  ``init`` (theta_0), ``reinit`` (a fresh init from ``init_seed``) or ``trained:J`` (round J's trained
  weights: fine-tuning).

A branch trains through the engine's own round code (:func:`ticketforge.engine.loop.train`) with round K's data
order and noise seeds and the run's optimizer, EMA, warm-up, precision, compile and CUDA graphs, so a
``ticket``/``tau`` branch of round K repeats round K exactly on a CPU. It lives in
``RUN/branches/<masks>-<start>-<hash>/``, a one-round run folder (``config.json`` is the run's plus a
``"branch"`` key; ``rounds/0000/`` holds masks, weights, EMA and record), which the same request resumes
or skips and :func:`ticketforge.load_round` loads unchanged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..config import RunConfig, identity_of
from ..errors import CheckpointError, ConfigError, TrainingDiverged, UsageError
from ..progress import ProgressLike
from ..protocols import ModelSpec
from ..pruning.select import prune_tensorwise_like
from ..pruning.state import plain_state_dict
from ..pruning.targets import PrunableNetwork, flatten, group_tensors
from ..registry import Registry
from ..store import RunStore
from ..store.read_checks import round_masks
from ..store.run_store import round_dir
from ..threads import threads_applied
from .data import hash_seed
from .rewind import THETA_TAU, RewindPoints, kept_steps, point_file, point_step

MASK_MODES = ("ticket", "random", "none")
START_MODES = ("tau", "init", "reinit", "trained:J")
BRANCHES = "branches"

# How far a run goes is not what it is: extending a run must not rename its branches.


@dataclass(frozen=True)
class BranchRequest:
    """A branch as asked for, normalised: settings that cannot matter are None (so they never split a name)."""

    of_round: int
    masks: str
    start: str
    rewind_fraction: float | None
    steps: int | None
    seed: int | None
    init_seed: int | None

    @classmethod
    def make(cls, of_round: int, masks: str, start: str, rewind_fraction: float | None, steps: int | None,
             seed: int | None, init_seed: int | None) -> "BranchRequest":
        """Check the request's own values (before any file is read)."""
        if isinstance(of_round, bool) or not isinstance(of_round, int) or of_round < 0:
            raise UsageError(f"--round must be a round index (0, 1, ...), not {of_round!r}")
        if masks not in MASK_MODES:
            raise UsageError(f"unknown masks {masks!r}: use one of {', '.join(MASK_MODES)}")
        j = _trained_round(start) if isinstance(start, str) else None
        if start not in ("tau", "init", "reinit") and j is None:
            raise UsageError(f"unknown start {start!r}: use one of {', '.join(START_MODES)} (e.g. trained:3)")
        if j is not None:
            start = f"trained:{j}"  # trained:03 and trained:3 are one branch
        if rewind_fraction is not None:
            if start != "tau":
                raise UsageError(f"--rewind-fraction picks a point of round 0 for --start tau, not --start {start}")
            if not 0.0 <= rewind_fraction <= 1.0:
                raise UsageError(f"--rewind-fraction is a fraction of round 0's steps in [0, 1], not {rewind_fraction}")
        if steps is not None and steps < 1:
            raise UsageError(f"--steps must be at least 1, not {steps}")
        if init_seed is not None and start != "reinit":
            raise UsageError(f"--init-seed seeds the weights of --start reinit, not --start {start}")
        if seed is not None and masks != "random":
            raise UsageError(f"--seed draws the positions of --masks random, not --masks {masks}")
        return cls(of_round, masks, start, None if rewind_fraction is None else float(rewind_fraction), steps,
                   (seed if seed is not None else 0) if masks == "random" else None, init_seed)


def _trained_round(start: str) -> int | None:
    """J of ``trained:J`` (None for anything else)."""
    kind, sep, j = start.partition(":")
    return int(j) if kind == "trained" and sep and j.isdigit() else None


def parent_digest(config: dict[str, Any]) -> str:
    """sha256 of what a stored run config computes (its name's scheme and how far it goes left out)."""
    identity = identity_of({k: v for k, v in config.items() if k != "branch"})  # the run hash's own rule
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def branch_name(config: dict[str, Any], ticket_sha256: str, fields: dict[str, Any]) -> str:
    """``<masks>-<start>-<12 hex>``: the start folder-safe (``trained:3`` -> ``trained3``, a rewind point at
    fraction 0.2 ``tau0.2``), the hash over
    the run, the ticket's masks and every setting of the branch."""
    blob = json.dumps({"run": parent_digest(config), "ticket_sha256": ticket_sha256, **fields},
                      sort_keys=True, default=str).encode()
    start = fields["start"].replace(":", "")
    if fields.get("rewind_fraction") is not None:  # another rewind point is another kind of control
        start += f"{fields['rewind_fraction']:g}"
    return f"{fields['masks']}-{start}-{hashlib.sha256(blob).hexdigest()[:12]}"


def _engine(run_dir: Path, config: dict[str, Any], device: str | None, registry: Registry | None,
            model: ModelSpec | None) -> Any:
    """An engine on the run with the run's resolved config (one process's settings: device, no rewind points)."""
    from .engine import Engine

    names = {f.name for f in dataclasses.fields(RunConfig)}
    values = {k: v for k, v in config.items() if k in names}
    values.update(out=str(run_dir), world_size=1, keep_rewind_points=[])
    from ..specs import run_preset  # the preset it was trained with, also after the model's default changed
    values["preset"] = run_preset(config)
    if device is not None:
        values["device"] = device
    objects: dict[str, Any] = {}
    if isinstance(values.get("model"), str) and values["model"].startswith("python:"):
        if model is None:
            raise ConfigError(f"this run's model {values['model']!r} was given as a Python object: call "
                              f"ticketforge.branch(..., model=<the same ModelSpec>)")
        objects["model"] = model
    elif model is not None:
        objects["model"] = model
    for key in ("schedule", "scorer"):  # a branch never prunes: an object-made run needs no object here
        if str(values.get(key, "")).startswith("python:"):
            objects[key] = _Unused()
    try:
        return Engine(RunConfig.from_dict(values, source=str(run_dir / "config.json")), registry=registry, **objects)
    except TypeError as exc:
        raise CheckpointError(f"{run_dir}/config.json does not describe a run this version can branch ({exc})") from None


class _Unused:
    """Stands in for a schedule or scorer that was a Python object: branches use stored masks."""

    def validate(self, group_names: list[str]) -> None:
        pass


def run_branch(run: str | Path, request: BranchRequest, *, device: str | None = None,
               registry: Registry | None = None, model: ModelSpec | None = None,
               progress: ProgressLike = None) -> tuple[dict[str, Any], Path, bool]:
    """Train (or resume, or skip) one branch; returns its record, its folder and whether it trained now.
    ``progress`` as for :meth:`Engine.run`."""
    run_dir = Path(run)
    parent = RunStore(run_dir)
    config = parent.read_config()  # before the lock: a folder that is no run gets no lock file
    if "branch" in config:
        raise UsageError(f"{run_dir} is a branch, not a run: branch the run it came from "
                         f"({(run_dir / config['branch'].get('parent_run', '..')).resolve()})")
    engine = _engine(run_dir, config, device, registry, model)
    if engine.dist.enabled:
        raise UsageError("ticketforge branch trains on one process: run it without torchrun (or --nproc)")
    from ..builtins.reporter import reporting
    try:
        with reporting(engine.registry, progress, name="branch-reporter"), \
                threads_applied(engine.config.threads, engine.device):
            return _branch(engine, parent, config, request)
    except TrainingDiverged as exc:  # a branch has no --lr of its own: it trains with the run's settings
        raise TrainingDiverged(exc.detail, "the same command resumes from that checkpoint; a branch trains with "
                                           "its run's learning rate, so a lower one needs a run made with it") from None


def _branch(engine: Any, parent: RunStore, config: dict[str, Any],
            request: BranchRequest) -> tuple[dict[str, Any], Path, bool]:
    """Read round K of the run, then train under the branch folder's own lock.

    The run's lock is not taken: a finished round's files never change (and every read is verified),
    so branches of one run, and the run's later rounds, can train side by side; ``--fresh`` on the run
    takes each branch's lock before it deletes anything.
    """
    from .engine import set_matmul_precision
    from .loop import Run, RunState, TrainingJob, train

    cfg, k = engine.config, request.of_round
    record_k = parent.round_record(k)  # a ConfigError for a round that does not exist or is unfinished
    net = PrunableNetwork.build(engine.spec)
    targets = net.targets
    stored = round_masks(parent, k, targets)  # bool, the model's shapes, the record's mask_sha256
    ticket = [stored[t.name] for t in targets]
    steps = request.steps or cfg.steps_per_round
    init_seed = _reinit_seed(config, request)
    start, source = _start_weights(engine, parent, config, request, init_seed)
    masks = _branch_masks(request, targets, ticket)
    fields = {"of_round": k, "masks": request.masks, "start": request.start,
              "rewind_fraction": request.rewind_fraction, "steps": steps, "seed": request.seed,
              "init_seed": init_seed}
    name = branch_name(config, record_k["mask_sha256"], fields)
    described = {**fields, "name": name, "parent_run": ".."}
    folder = parent.path / BRANCHES / name
    with engine.dist.run_lock(folder):  # one writer per branch; check_run_folder refuses a foreign folder
        store = engine.dist.store(RunStore(folder))
        store.clean()
        if store.exists():
            if store.read_config().get("branch") != described:
                raise CheckpointError(f"{folder} holds another branch than its name says (changed by hand): "
                                      f"delete that folder and give the command again")
            if 0 in store.finished_rounds():
                return store.round_record(0), folder, False
        else:
            store.write_config({**config, "branch": described})
        set_matmul_precision(engine.precision)
        net.network.to(engine.device)
        state = RunState(folder, {**config, "branch": described}, engine.spec, [g.name for g in net.groups],
                         engine.device, net.network)
        job = TrainingJob(k, 0, masks, start, source, steps, RewindPoints({}), {"branch": described})
        return train(Run(engine, store, net, engine.batches(), state), job), folder, True


def _reinit_seed(config: dict[str, Any], request: BranchRequest) -> int | None:
    """The seed of a ``reinit`` start: ``--init-seed``, by default the run's own init seed + 1."""
    if request.start != "reinit":
        return None
    own = config["init_seed"] if config.get("init_seed") is not None else config.get("seed", 0)
    seed = request.init_seed if request.init_seed is not None else own + 1
    if seed == own:
        raise UsageError(f"--init-seed {seed} is this run's own init seed, so reinit would be theta_0: "
                         f"use --start init, or another --init-seed")
    return seed


def _start_weights(engine: Any, parent: RunStore, config: dict[str, Any], request: BranchRequest,
                   init_seed: int | None) -> tuple[dict[str, Tensor], str]:
    """The branch's start weights and where they come from (every read checksum-verified)."""
    cfg = engine.config
    if request.start == "init":
        return parent.read_tensors("init.safetensors"), "theta_0"
    if request.start == "reinit":
        torch.manual_seed(init_seed)  # as theta_0 is built from the run's seed
        return plain_state_dict(engine.spec.build()), f"a fresh init (seed {init_seed})"
    j = _trained_round(request.start)
    if j is not None:
        finished = parent.finished_rounds()
        if j not in finished:
            raise UsageError(f"--start trained:{j}: round {j} of {parent.path} is not finished (finished rounds: "
                             f"{', '.join(map(str, finished)) or 'none'})")
        return parent.read_tensors(f"{round_dir(j)}/weights.safetensors"), f"round {j}'s trained weights"
    tau = point_step(cfg.tau_frac, cfg.steps_per_round)
    step = tau if request.rewind_fraction is None else point_step(request.rewind_fraction, cfg.steps_per_round)
    if step == tau:
        if not parent.has(THETA_TAU):
            raise CheckpointError(f"{parent.path}/{THETA_TAU} (theta_tau) is missing: the run was changed by hand")
        return parent.read_tensors(THETA_TAU), "theta_tau"
    if parent.has(point_file(step)):
        return parent.read_tensors(point_file(step)), f"theta at step {step} of round 0"
    if step == 0:  # theta after 0 steps of round 0 is theta_0
        return parent.read_tensors("init.safetensors"), "theta_0"
    kept = [tau] + kept_steps(parent.manifest)
    listed = ", ".join(f"step {s} ({s / cfg.steps_per_round:g})" for s in sorted(set(kept)))
    raise UsageError(f"theta at fraction {request.rewind_fraction} of round 0 (step {step}) was not recorded in "
                     f"{parent.path} (it keeps {listed}): a run keeps points given with --keep-rewind-points "
                     f"before its round 0 finishes")


def _branch_masks(request: BranchRequest, targets: list[Any], ticket: list[Tensor]) -> list[Tensor]:
    if request.masks == "ticket":
        return ticket
    ones = [torch.ones_like(m) for m in ticket]
    if request.masks == "none":
        return ones
    gen = torch.Generator().manual_seed(hash_seed(request.seed, "branch-random", request.of_round))
    shuffled = prune_tensorwise_like(group_tensors(targets, ticket), group_tensors(targets, ones), gen)
    return [m.bool() for m in flatten(shuffled)]


def branch(run: str | Path, round: int, *, masks: str = "ticket", start: str = "tau",
           rewind_fraction: float | None = None, steps: int | None = None, seed: int | None = None,
           init_seed: int | None = None, device: str | None = None, registry: Registry | None = None,
           model: ModelSpec | None = None, progress: ProgressLike = None) -> dict[str, Any]:
    """Train a lottery branch of round ``round`` of the run in ``run`` and return its record.

    Args:
        run: the run's folder.
        round: K, the finished round whose masks (and data order and noise seeds) the branch uses.
        masks: ``"ticket"`` (round K's), ``"random"`` (random positions, round K's count per tensor,
            drawn from ``seed``) or ``"none"`` (dense).
        start: ``"tau"`` (theta_tau), ``"init"`` (theta_0), ``"reinit"`` (a fresh init from
            ``init_seed``, by default the run's init seed + 1) or ``"trained:J"`` (round J's weights).
        rewind_fraction: with ``start="tau"``, start from theta at this fraction of round 0's steps
            (a point the run kept with ``keep_rewind_points``, theta_tau's own fraction, or 0).
        steps: training steps (default: the run's steps per round).
        seed: seed of the random masks (only with ``masks="random"``; None: 0).
        init_seed: seed of the reinit weights (only with ``start="reinit"``).
        device: where to train (default: the run's ``device`` setting).
        registry: the plugin registry (default: the installed plugins).
        model: the run's model spec, needed only if the run was made with a ModelSpec object.
        progress: ``"rich"``, ``"log"``, ``"none"`` or a callable, as for :meth:`Engine.run`.

    Returns:
        The branch's record, shaped like a round's (``round`` 0, ``sparsity``, ``mask_sha256``,
        ``groups``, ``metrics``) plus ``branch`` (its settings; the folder is
        ``run/branches/<record["branch"]["name"]>``). Asking again returns the finished record, or
        resumes an interrupted branch.

    Raises:
        UsageError: an unknown mode, a round that is not finished, a start the run cannot provide.
        CheckpointError: a file of the run that is missing or fails its checksum.
    """
    request = BranchRequest.make(round, masks, start, rewind_fraction, steps, seed, init_seed)
    return run_branch(run, request, device=device, registry=registry, model=model, progress=progress)[0]

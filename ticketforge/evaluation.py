"""Scoring rounds and branches with an evaluator, and storing the scores with them.

:func:`evaluate_items` (``ticketforge eval``'s loop) scores many items in one process with one
evaluator, dataset and (compiled) denoiser; :class:`Scoring` scores them one at a time as they come.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .errors import UsageError
from .progress import ProgressLike

__all__ = ["EvalItem", "SamplerCache", "Scoring", "copy_state_into", "evaluate_items", "evaluate_rounds"]


@dataclass(frozen=True)
class EvalItem:
    """What to score: round ``round`` of the run folder ``path`` (None: its last), ``branch`` set for a branch."""

    path: str
    round: int | None = None
    branch: str | None = None


def copy_state_into(target: nn.Module, source: nn.Module) -> bool:
    """Copy ``source``'s parameters and buffers (pruning masks included) into ``target``'s own tensors.

    Returns False, copying nothing, when the two do not have the same tensors (names, shapes, dtypes).
    In place, so that a sampler compiled around ``target`` (and its CUDA graphs) serves the new weights
    without being compiled again.
    """
    mine, theirs = target.state_dict(keep_vars=True), source.state_dict(keep_vars=True)
    if mine.keys() != theirs.keys() or any(
            mine[k].shape != theirs[k].shape or mine[k].dtype != theirs[k].dtype for k in mine):
        return False
    with torch.no_grad():
        for k, tensor in mine.items():
            tensor.copy_(theirs[k])
    return True


class SamplerCache:
    """One denoiser for every item of an evaluation: the first item's network, wrapped (and compiled) once.

    Later items' weights and masks are copied into it (:func:`copy_state_into`); a network of another
    shape gets a fresh wrapper.
    """

    def __init__(self, precision: str, compile: bool, device: torch.device) -> None:
        self.precision, self.compile, self.device = precision, compile, device
        self.base: nn.Module | None = None
        self.network: nn.Module | None = None
        self.resolved = ""

    def load(self, network: nn.Module) -> tuple[nn.Module, str]:
        """The sampling network holding ``network``'s weights, and the resolved precision."""
        from .engine.sampling import sampling_network
        if self.base is None or not copy_state_into(self.base, network):
            self.base = network.to(self.device)
            self.network, self.resolved = sampling_network(self.base, self.precision, self.compile, self.device)
        assert self.network is not None
        return self.network, self.resolved


class Scoring:
    """One evaluator, dataset and (compiled) denoiser for many items, scored one at a time as they come.

    Scores are stored in the item's round record under the evaluator's name (a branch's own record
    for a branch), with the seed, whether EMA weights were used and the denoiser's precision and
    compilation; each evaluation draws its samples from ``seed``. The dataset is the first item's run's
    (a branch trains on its run's dataset); later items must share it. Under torchrun the evaluator
    shards the sampling over the processes and rank 0 stores the scores.
    """

    def __init__(self, evaluator_name: str, *, n_samples: int, sampler: str | None, steps: int, options: dict[str, Any],
                 seed: int = 0, device: str = "auto", ema: bool = True, precision: str = "auto",
                 compile: bool = False) -> None:
        from .engine import distributed
        from .engine.engine import resolve_device
        from .registry import get_registry

        self.evaluator_name, self.n_samples, self.sampler, self.steps = evaluator_name, n_samples, sampler, steps
        self.seed, self.ema, self.compile = seed, ema, compile
        self.registry = get_registry()
        self.evaluator = self.registry.create("evaluators", evaluator_name, **options)
        self.ctx = distributed.setup(resolve_device(device))  # torchrun: join the process group, cuda:LOCAL_RANK
        self.denoiser = SamplerCache(precision, compile, self.ctx.device)
        self.dataset: Any = None
        self._dataset_of: tuple[Any, ...] | None = None

    def check_lock(self, path: str) -> None:
        """Refuse, before any work, a run (or branch) that another process is writing."""
        from .store import RunLock
        self.ctx.on_main(RunLock(path).check)

    def data_of(self, path: str) -> Any:
        """The dataset a run (or branch) at ``path`` trained on, made once for every item scored here;
        refuses a run of other data."""
        from .store import RunStore
        config = RunStore(path).read_config()
        options = config.get("dataset_options") or {}
        key = (config["dataset"], config.get("data_root"), json.dumps(options, sort_keys=True))
        if self._dataset_of is None:
            self.dataset = self.registry.create("datasets", config["dataset"], root=config.get("data_root"),
                                                download=bool(config.get("download")), train=True, **options)
            self._dataset_of = key
        elif key != self._dataset_of:
            raise UsageError(f"{path} trains on {key[0]} ({key[1]}), the items before it on {self._dataset_of[0]} "
                             f"({self._dataset_of[1]}): score runs of other data in another evaluation")
        return self.dataset

    def score(self, item: EvalItem, *, store: bool = True) -> dict[str, Any]:
        """Score one item, store its scores (unless ``store`` is False), and return them with what was scored.

        With ``store`` False nothing is written, so a finished round can be scored while its run trains
        on (under the run's lock); :func:`ticketforge.record_metrics` stores the scores later."""
        from .api import load_round, record_metrics

        dataset = self.data_of(item.path)
        loaded = load_round(item.path, item.round, ema=self.ema, device="cpu")
        network, resolved = self.denoiser.load(loaded.network)
        dev = self.ctx.device
        gen = torch.Generator(device=dev).manual_seed(self.seed)
        scores = self.evaluator.evaluate(loaded.spec, network, dataset=dataset, n_samples=self.n_samples,
                                         generator=gen, device=dev, steps=self.steps,
                                         sampler=sampler_of(loaded.spec, self.sampler).get("sampler"))
        scores = {**scores, "seed": self.seed, "ema": self.ema, "precision": resolved, "compile": self.compile}
        if store and self.ctx.is_main:
            record_metrics(item.path, loaded.round, {self.evaluator_name: scores})
        branch = loaded.config.get("branch") if isinstance(loaded.config.get("branch"), dict) else None
        return {"round": loaded.round, "branch": item.branch or (branch or {}).get("name"),
                "of_round": (branch or {}).get("of_round"), "run": str(item.path),
                "sparsity": loaded.record.get("sparsity"), "evaluator": self.evaluator_name, "scores": scores}


def sampler_of(spec: Any, sampler: str | None) -> dict[str, Any]:
    """``{"sampler": name}`` for a model's ``sample``: ``sampler``, else the model's ``default_sampler``
    (an optional attribute), else nothing (its ``sample``'s own default)."""
    name = sampler or getattr(spec, "default_sampler", None)
    return {"sampler": name} if name else {}


def evaluate_items(items: list[EvalItem], evaluator_name: str, *, n_samples: int, sampler: str | None, steps: int,
                   options: dict[str, Any], seed: int = 0, device: str = "auto", ema: bool = True,
                   precision: str = "auto", compile: bool = False, progress: ProgressLike = None
                   ) -> list[dict[str, Any]]:
    """Evaluate each item (rounds of a run, branches) in this process and record its scores with it
    (see :class:`Scoring`); every item's lock is checked before the first is scored. ``progress``
    (``"rich"``, ``"log"``, ``"none"`` or a callable, as for :meth:`ticketforge.Engine.run`) shows the
    items, the featurizer's training and the sampling (rank 0's under torchrun).
    """
    from . import progress as shown

    if not items:
        raise UsageError("nothing to evaluate")
    scoring = Scoring(evaluator_name, n_samples=n_samples, sampler=sampler, steps=steps, options=options,
                      seed=seed, device=device, ema=ema, precision=precision, compile=compile)
    for path in dict.fromkeys(item.path for item in items):  # refused before the work, not after it
        scoring.check_lock(path)
    results = []
    with shown.using(progress if scoring.ctx.is_main else "none"), \
            shown.task(f"evaluating with {evaluator_name}", len(items), "item") as items_done:
        for item in items:
            results.append(scoring.score(item))
            items_done.advance()
    scoring.ctx.barrier()  # every process returns once rank 0 stored the scores
    return results


def evaluate_rounds(run: str, rounds: list[int] | None, evaluator_name: str, **kwargs: Any) -> list[dict[str, Any]]:
    """Evaluate each round of ``run`` (the last finished one when ``rounds`` is None); see :func:`evaluate_items`."""
    return evaluate_items([EvalItem(run, k) for k in (rounds if rounds is not None else [None])], evaluator_name,
                          **kwargs)

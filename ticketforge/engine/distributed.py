"""Several processes under ``torchrun``: DDP training of each round, one writer of the run store.

``torchrun --nproc-per-node N -m ticketforge run ...`` starts N copies of the same command. Each
reads ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``, joins one process group (NCCL on ``cuda:LOCAL_RANK``,
gloo on the CPU) and trains the same network under :class:`DistributedDataParallel`:

- **Data.** The global batch (``batch_size``) is split: each rank takes its contiguous slice of the
  same batch indices, so the data a step sees does not depend on the number of processes. Noise
  and dropout generators are seeded per rank (reproducibly); all other seeds are shared.
- **Run store.** Only rank 0 touches the run folder (lock, config, weights, masks, records,
  checkpoints, logs, sample grids). Every other rank calls the same store methods, which are
  collectives: rank 0 does the work and broadcasts the result (or the exception), so all ranks
  follow the same path through resume and error handling, and no rank ever reads a file
  while another writes it. Nothing needs a shared file system.
- **Masks.** Every rank computes them from identical weights (scores are deterministic); the
  engine all-gathers their sha256 and stops with an error if any rank disagrees. Rank 0 writes them.
- **Lifecycle hooks and progress** run on rank 0 only.
- **Checkpoints** hold every rank's random-generator state, so a resumed round continues each
  rank's noise stream; with another number of processes the streams are re-seeded from the step.

One process (no ``WORLD_SIZE``, or ``WORLD_SIZE=1``) takes none of these paths.
"""

from __future__ import annotations

import atexit
import inspect
import os
import pickle
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ConfigError, TicketforgeError, UsageError
from ..store import RunLock, RunStore
from ..store.claim import check_run_folder, clear_run
from .data import BatchSource, hash_seed

T = TypeVar("T")


def launch_env() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's environment (``(0, 1, 0)`` without it)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise UsageError("WORLD_SIZE, RANK and LOCAL_RANK must be integers (torchrun sets them)") from None
    if world < 1 or not 0 <= rank < world:
        raise UsageError(f"RANK {rank} is outside WORLD_SIZE {world}")
    return rank, world, local


@dataclass
class Distributed:
    """This process's place among the ranks, and the collectives the engine needs."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    _ddp: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- collectives ------------------------------------------------------------------------------
    def _obj_device(self) -> torch.device | None:
        return self.device if self.device.type == "cuda" else None

    def on_main(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 only; every rank returns its result or raises its exception."""
        if not self.enabled:
            return fn()
        import torch.distributed as dist
        payload: list[Any] = [None]
        if self.is_main:
            try:
                payload = [(True, fn())]
            except Exception as exc:  # handed to every rank, re-raised below
                payload = [(False, _picklable(exc))]
        dist.broadcast_object_list(payload, src=0, device=self._obj_device())
        ok, value = payload[0]
        if not ok:
            raise value
        return value

    def all_gather_object(self, obj: T) -> list[T]:
        """``obj`` of every rank, in rank order."""
        if not self.enabled:
            return [obj]
        import torch.distributed as dist
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist
            dist.barrier()

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (fills a cache, downloads), then the others (read it)."""
        if self.enabled and not self.is_main:
            self.barrier()
        try:
            yield
        finally:
            if self.enabled and self.is_main:
                self.barrier()

    def check_same(self, value: str, what: str) -> None:
        """Raise on every rank if ``value`` (a digest) differs between ranks."""
        if not self.enabled:
            return
        values = self.all_gather_object(value)
        if len(set(values)) > 1:
            differing = [r for r, v in enumerate(values) if v != values[0]]
            raise TicketforgeError(
                f"{what} differ between processes (rank 0 has {values[0][:12]}, ranks {differing} another): "
                f"a scorer or schedule is not deterministic on this device; make it deterministic "
                f"(torch.use_deterministic_algorithms) or run on one process")

    def reduce_window(self, loss_sum: Tensor, bad_step: Tensor) -> tuple[Tensor, Tensor]:
        """The training loop's sync point: mean loss over the ranks, first non-finite step of any rank."""
        if not self.enabled:
            return loss_sum, bad_step
        import torch.distributed as dist
        loss = loss_sum.detach().clone()
        dist.all_reduce(loss, op=dist.ReduceOp.SUM)
        never = torch.iinfo(torch.long).max
        bad = torch.where(bad_step < 0, torch.full_like(bad_step, never), bad_step)
        dist.all_reduce(bad, op=dist.ReduceOp.MIN)
        return loss / self.world_size, torch.where(bad == never, torch.full_like(bad, -1), bad)

    # -- seeds and data ---------------------------------------------------------------------------
    def seed(self, seed: int) -> int:
        """A per-rank seed for noise and dropout (unchanged on one process)."""
        return seed if not self.enabled else hash_seed(seed, "rank", self.rank, self.world_size)

    def generator(self, generator: torch.Generator) -> torch.Generator:
        """This rank's sampling generator: ``generator`` itself on rank 0, a derived seed elsewhere."""
        if not self.enabled or self.is_main:
            return generator
        return torch.Generator(device=generator.device).manual_seed(
            hash_seed(generator.initial_seed(), "rank", self.rank))

    def shard_count(self, n: int) -> int:
        """How many of ``n`` items (samples to draw) this rank takes; ranks below ``n % world`` take one more."""
        return n // self.world_size + (1 if self.rank < n % self.world_size else 0)

    def gather_rows(self, rows: np.ndarray) -> np.ndarray:
        """Concatenate every rank's rows (features of its samples) in rank order."""
        if not self.enabled:
            return rows
        return np.concatenate(self.all_gather_object(rows), axis=0)

    def check_batch_size(self, batch_size: int) -> None:
        if batch_size % self.world_size:
            raise ConfigError(f"batch-size {batch_size} does not split over {self.world_size} processes: "
                              f"give a multiple of {self.world_size} (it is the global batch)")

    def shard(self, batches: BatchSource) -> Any:
        """The batches this rank trains on (``batches`` itself on one process)."""
        return _ShardedBatches(batches, self.rank, self.world_size) if self.enabled else batches

    # -- network ----------------------------------------------------------------------------------
    def wrap(self, network: nn.Module) -> nn.Module:
        """``network`` under DistributedDataParallel, built once per network (``network`` on one process).

        DDP holds the parameters it was built with: ``weight_orig`` of every pruned module, whose
        masks later rounds overwrite in place. If the parameters ever change (a new reparametrization),
        the wrapper is rebuilt. Buffers are not re-broadcast each step: the masks are checked equal
        instead, and the models here have no running statistics.
        """
        if not self.enabled:
            return network
        params = [id(p) for p in network.parameters()]
        if self._ddp.get("network") is not network or self._ddp.get("params") != params:
            from torch.nn.parallel import DistributedDataParallel
            ids = [self.device.index] if self.device.type == "cuda" else None
            # torch >= 2.14 renamed broadcast_buffers (deprecated there) to forward_sync_buffers.
            no_sync = ("forward_sync_buffers" if "forward_sync_buffers" in
                       inspect.signature(DistributedDataParallel.__init__).parameters else "broadcast_buffers")
            no_buffer_sync: dict[str, Any] = {no_sync: False}
            ddp = DistributedDataParallel(network, device_ids=ids, **no_buffer_sync)
            self._ddp.update(network=network, params=params, ddp=ddp)
        return self._ddp["ddp"]

    # -- run store, lock, hooks, checkpoints ------------------------------------------------------
    def store(self, store: RunStore) -> "Store":
        """The engine's view of the run store: the store itself on one process, else a :class:`MainStore`."""
        return MainStore(store, self) if self.enabled else store

    @contextmanager
    def run_lock(self, run_dir: Path, fresh: bool = False) -> Iterator[None]:
        """Rank 0 takes the run's lock, then clears the run (``fresh``); its failure stops every rank.

        The folder is checked first (a run starts only in an empty folder or a run's own, see
        store/claim.py), and --fresh deletes only once the lock is held: a run that another process
        writes is refused like any second writer, with nothing deleted."""
        lock = RunLock(run_dir)

        def take() -> None:
            check_run_folder(run_dir, fresh)
            lock.acquire()
            if fresh:
                try:
                    clear_run(run_dir)
                except BaseException:
                    lock.release()
                    raise

        self.on_main(take)
        try:
            yield
        finally:
            lock.release()

    def hooks(self, relay: Any) -> Any:
        """Lifecycle hooks: the registry's relay on rank 0, silent elsewhere."""
        return relay if self.is_main else _SILENT

    def rng_checkpoint(self, gen: torch.Generator) -> dict[str, Any]:
        """Every rank's generator states, for the checkpoint (``{}`` on one process)."""
        if not self.enabled:
            return {}
        mine = {"generator": gen.get_state(), "cpu_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None}
        return {"ranks": self.all_gather_object(mine)}

    def rng_restore(self, ckpt: dict[str, Any], gen: torch.Generator, reseed: int) -> None:
        """Continue this rank's streams from ``ckpt``; re-seed them from ``reseed`` if it had another world size."""
        if not self.enabled:
            return
        ranks = ckpt.get("ranks")
        if ranks is None or len(ranks) != self.world_size:
            gen.manual_seed(self.seed(reseed))
            torch.manual_seed(self.seed(reseed + 1))
            return
        mine = ranks[self.rank]
        gen.set_state(mine["generator"])
        torch.set_rng_state(mine["cpu_rng"])
        if mine["cuda_rng"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(mine["cuda_rng"], self.device)


class _ShardedBatches:
    """Rank ``rank``'s contiguous slice of every global batch of a :class:`BatchSource`."""

    def __init__(self, source: BatchSource, rank: int, world_size: int):
        self.source, self.rank, self.world_size = source, rank, world_size
        self.device = source.device

    def indices(self, round_index: int, step: int) -> Tensor:
        idx = self.source.indices(round_index, step)
        per = len(idx) // self.world_size
        return idx[self.rank * per:(self.rank + 1) * per]

    def batch(self, round_index: int, step: int) -> Tensor:
        return self.source.images[self.indices(round_index, step)].float().div_(255)


class MainStore:
    """The run store under torchrun: rank 0 alone touches the run folder, every rank sees its answers.

    A read runs on rank 0 and every rank returns its result; a write runs on rank 0 and does nothing
    elsewhere (the other ranks wait for it). An exception on rank 0 is raised on every rank, so all
    follow one path through resume and error handling. ``append_log`` is rank 0's alone, no collective
    (nothing comes back from it). Every method is spelled out: a store method this class lacks is an
    AttributeError (and a mypy error), never a call that runs on every rank.
    """

    def __init__(self, store: RunStore, dist: Distributed):
        self._store, self._dist = store, dist

    @property
    def path(self) -> Path:
        return self._store.path

    # -- reads: rank 0's answer on every rank ---------------------------------------------------
    def exists(self) -> bool:
        return self._dist.on_main(self._store.exists)

    def has(self, rel: str) -> bool:
        return self._dist.on_main(lambda: self._store.has(rel))

    def read_config(self) -> dict[str, Any]:
        return self._dist.on_main(self._store.read_config)

    def read_json(self, rel: str) -> Any:
        return self._dist.on_main(lambda: self._store.read_json(rel))

    def read_tensors(self, rel: str) -> dict[str, Tensor]:
        return self._dist.on_main(lambda: self._store.read_tensors(rel))

    def read_checkpoint(self, rel: str) -> dict[str, Any]:
        return self._dist.on_main(lambda: self._store.read_checkpoint(rel))

    def finished_rounds(self) -> list[int]:
        return self._dist.on_main(self._store.finished_rounds)

    def round_record(self, k: int) -> dict[str, Any]:
        return self._dist.on_main(lambda: self._store.round_record(k))

    # -- writes: rank 0 writes, the others wait --------------------------------------------------
    def clean(self) -> None:
        self._dist.on_main(self._store.clean)

    def write_config(self, config: dict[str, Any]) -> None:
        self._dist.on_main(lambda: self._store.write_config(config))

    def write_json(self, rel: str, obj: Any) -> None:
        self._dist.on_main(lambda: self._store.write_json(rel, obj))

    def write_tensors(self, rel: str, tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> None:
        self._dist.on_main(lambda: self._store.write_tensors(rel, tensors, metadata))

    def write_checkpoint(self, rel: str, obj: dict[str, Any]) -> None:
        self._dist.on_main(lambda: self._store.write_checkpoint(rel, obj))

    def write_file(self, rel: str) -> None:
        self._dist.on_main(lambda: self._store.write_file(rel))

    def forget(self, rel: str) -> None:
        self._dist.on_main(lambda: self._store.forget(rel))

    def append_log(self, line: dict[str, Any]) -> None:
        if self._dist.is_main:
            self._store.append_log(line)


Store = RunStore | MainStore  # what the engine writes a run through: Distributed.store's answer


class _Silent:
    def __getattr__(self, name: str) -> Callable[..., list]:
        return lambda **kwargs: []


_SILENT = _Silent()


def _picklable(exc: Exception) -> Exception:
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return TicketforgeError(f"on rank 0: {type(exc).__name__}: {exc}")


# -- this process --------------------------------------------------------------------------------
_CURRENT: Distributed | None = None


def current() -> Distributed:
    """The process's context once :func:`setup` ran; one CPU process before that."""
    return _CURRENT or Distributed()


def setup(device: torch.device) -> Distributed:
    """Join the process group that torchrun's environment describes (once per process).

    ``device`` is the resolved ``--device``: a CUDA device becomes ``cuda:LOCAL_RANK`` (NCCL), a CPU
    one stays (gloo). Without torchrun (or with one process) nothing is initialised.
    """
    global _CURRENT
    import torch.distributed as dist
    rank, world, local = launch_env()
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    if world == 1:
        return Distributed(device=device)
    if device.type == "cuda":
        if device.index is not None and device.index != local:
            raise ConfigError(f"--device {device} under torchrun: each process uses cuda:LOCAL_RANK; "
                              f"give --device cuda (or auto) and pick GPUs with CUDA_VISIBLE_DEVICES")
        if local >= torch.cuda.device_count():
            raise ConfigError(f"process {rank} has LOCAL_RANK {local} but only {torch.cuda.device_count()} "
                              f"GPUs are visible: start at most that many processes per node")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if _CURRENT is not None:
        if _CURRENT.device != device:
            raise ConfigError(f"this process already joined the process group on {_CURRENT.device}, not {device}")
        return _CURRENT
    if not dist.is_initialized():
        if not dist.is_available():
            raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
        atexit.register(_destroy)
    _CURRENT = Distributed(rank, world, local, device)
    return _CURRENT


def _destroy() -> None:
    import torch.distributed as dist
    if dist.is_initialized():
        dist.destroy_process_group()


# -- ``ticketforge run --nproc N`` ----------------------------------------------------------------
def relaunch(nproc: int, argv: Sequence[str]) -> int:
    """Run ``python -m ticketforge ARGV`` in ``nproc`` processes under torchrun (one node); its exit code.

    ``ARGV`` reaches the processes as given: it is handed to torchrun after torchrun's own parser ran
    (see :mod:`ticketforge.engine.launcher`), so no option of ours can be taken for one of torchrun's.
    """
    cmd = [sys.executable, "-m", "ticketforge.engine.launcher", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "ticketforge", "--", *argv]
    return subprocess.call(cmd)

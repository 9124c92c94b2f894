"""One run over several processes: the job torchrun starts, and the few collective steps tlearn takes.

`torchrun --nproc-per-node N -m tlearn train DATA` starts N copies of the same command; torchrun gives
each its RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous address in its environment. `session()` joins
them into one process group (NCCL between GPUs, gloo on CPUs) and leaves it cleanly. Not launched by
torchrun, the world has one process, no process group exists, and every helper here returns its
input: the single-process run is the same code with a world size of 1.

How the work is split: a list of items (images, views, a batch) is cut into equal shares, rank r
taking items r, r + N, r + 2N... (the list first padded by repeating its start, as PyTorch's
DistributedSampler does, so every rank does the same number of steps); rows computed on the shares
are gathered back in list order and the padding dropped, so results are exact. Only rank 0 writes
files; the others compute and stay quiet.
"""

from __future__ import annotations

import datetime
import inspect
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from tlearn.core.errors import ConfigError, TlearnError
from tlearn.core.words import not_one_of

log = logging.getLogger(__name__)

T = TypeVar("T")
# A peer that dies closes its sockets and the others stop at once; this bounds the wait for a peer that
# is alive but stuck. It must exceed the longest stretch rank 0 works alone (writing the report).
DEFAULT_TIMEOUT_S = 1800.0
CPU = torch.device("cpu")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")  # --device


@dataclass(frozen=True)
class World:
    """Where this process stands in the job: its rank among `size` processes, and the device it computes on."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0  # rank on this machine: the GPU it uses
    device: torch.device = CPU


_world = World()
_sessions = 0  # nesting depth: a script may hold one session around several runs


def world() -> World:
    return _world


def is_main() -> bool:
    """Rank 0: the process that writes files and reports progress (always true in a single process)."""
    return _world.rank == 0


def device() -> torch.device:
    return _world.device


def launched_world() -> tuple[int, int]:
    """(rank, world size) as torchrun set them in the environment; (0, 1) when not launched by it."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def choose_device(choice: str = "auto", *, local_rank: int = 0) -> torch.device:
    """`--device`: "cuda" (this process's GPU), "cpu", or "auto" (CUDA when present, else the CPU)."""
    if choice not in DEVICES:
        raise ConfigError(not_one_of("--device", choice, DEVICES))
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("--device cuda: PyTorch sees no CUDA GPU here.", hint="Use --device cpu, or auto.")
    if local_rank >= torch.cuda.device_count():
        raise ConfigError(
            f"Process {local_rank} of this machine has no GPU of its own: {torch.cuda.device_count()} visible.",
            hint="Start at most one process per GPU (torchrun --nproc-per-node).",
        )
    return torch.device("cuda", local_rank)


@contextmanager
def session(device_choice: str = "auto", *, timeout_s: float | None = None) -> Iterator[World]:
    """Join the job torchrun launched (or a world of one), run the block, then leave it cleanly.

    A nested session reuses the outer one. A process group created elsewhere (a script of the user's
    under torchrun) is used as it is and left for its owner to destroy.
    """
    global _world, _sessions
    if _sessions:
        _sessions += 1
        try:
            yield _world
        finally:
            _sessions -= 1
        return
    rank, size = launched_world()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    created = False
    if dist.is_available() and dist.is_initialized():
        rank, size = dist.get_rank(), dist.get_world_size()
    dev = choose_device(device_choice, local_rank=local_rank)
    if size > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        seconds = timeout_s or float(os.environ.get("TLEARN_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
        try:
            dist.init_process_group(
                "nccl" if dev.type == "cuda" else "gloo",
                timeout=datetime.timedelta(seconds=seconds),
                device_id=dev if dev.type == "cuda" else None,
            )
        except RuntimeError as err:  # DistStoreError, DistNetworkError: the rendezvous failed
            raise TlearnError(
                f"Rank {rank} could not join its job of {size} processes: {_first_line(err)}",
                hint="Check that every rank started and that they all reach MASTER_ADDR:MASTER_PORT "
                "(torchrun --rdzv-endpoint on several machines).",
            ) from err
        created = True
    _world, _sessions = World(rank, size, local_rank, dev), 1
    ok = False
    try:
        yield _world
        if size > 1:
            barrier()  # the others wait while rank 0 writes: a failure there fails the whole job
        ok = True
    except RuntimeError as err:
        if size > 1 and lost_peer(err):
            raise TlearnError(
                f"Lost contact with the other processes of the job: {_first_line(err)}",
                hint="Another rank failed or was stopped: its own message says why.",
            ) from err
        raise
    finally:
        _world, _sessions = World(), 0
        if created:
            _leave(ok)


def _leave(ok: bool) -> None:
    try:
        dist.destroy_process_group()
    except Exception as err:  # leaving after a failure must not hide the failure
        if ok:
            raise
        log.debug("Leaving the process group failed: %s", err)


def lost_peer(err: BaseException) -> bool:
    """Is this the error a collective raises when another rank died or stopped answering?"""
    if isinstance(err, dist.DistError):
        return True
    text = str(err)
    return any(s in text for s in ("closed by peer", "reset by peer", "Timed out waiting", "NCCL error", "Broken pipe"))


def _first_line(err: BaseException) -> str:
    line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return line[:300]


# --- splitting work and putting it back together -------------------------------------------------


@dataclass(frozen=True)
class Share:
    """This rank's share of a list: `items` (padded to the same length on every rank) and which are real."""

    items: np.ndarray  # (L,) elements of the list: every size-th, from position rank
    real: np.ndarray  # (L,) bool, False for the padding (repeats of the list's first items)
    total: int  # length of the list that was shared
    size: int  # ranks sharing it

    def __len__(self) -> int:
        return len(self.items)


def share_of(items: Sequence[int] | np.ndarray, rank: int, size: int) -> Share:
    """Rank `rank`'s share of `items` among `size` ranks (see the module docstring); pure, for any world."""
    items = np.asarray(items, dtype=np.int64)
    n = len(items)
    per = -(-n // size)  # ceil
    positions = np.arange(per) * size + rank
    padded = items[positions % n] if n else np.zeros(0, dtype=np.int64)
    return Share(items=padded, real=positions < n, total=n, size=size)


def shard(items: Sequence[int] | np.ndarray) -> Share:
    """This process's share of `items` (all of them in a single process)."""
    return share_of(items, _world.rank, _world.size)


def gather_rows(rows: np.ndarray, share: Share, start: int = 0) -> np.ndarray:
    """Rows every rank computed for share positions [start, start + len(rows)), in list order.

    Each rank passes the same number of rows (row j is its share's item `start + j`). The result holds
    the list's items start * size, start * size + 1, ... up to the list's end: the padding is dropped.
    """
    if share.size == 1:
        return rows
    t = torch.from_numpy(np.ascontiguousarray(rows)).to(_comm_device())
    parts = [torch.empty_like(t) for _ in range(share.size)]
    dist.all_gather(parts, t)
    block = torch.stack(parts, dim=1).reshape(-1, *t.shape[1:])  # row j of rank r lands at j * size + r
    keep = max(0, min(len(block), share.total - start * share.size))
    return block[:keep].cpu().numpy()


def map_in_parts(n: int, compute: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """`compute(items)` -> one row per item, run on this rank's share of range(n); all n rows, in order.

    `n` must be above 0 (every rank then has at least one item).
    """
    share = shard(np.arange(n))
    return gather_rows(compute(share.items), share)


def sum_across(*values: float) -> tuple[float, ...]:
    """Each value summed over the ranks (the same numbers on every rank, bit for bit)."""
    if _world.size == 1:
        return tuple(float(v) for v in values)
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return tuple(float(v) for v in t.cpu())


def union(items: Sequence[int]) -> list[int]:
    """The sorted union of every rank's `items` (what any rank is missing, say)."""
    if _world.size == 1:
        return list(items)
    lists: list[Any] = [None] * _world.size
    dist.all_gather_object(lists, [int(i) for i in items])
    return sorted({i for one in lists for i in one})


def from_main(make: Callable[[], T]) -> T:
    """`make()` on rank 0, its value on every rank: one decision, one reading of rank 0's files."""
    if _world.size == 1:
        return make()
    box: list[Any] = [make() if _world.rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def check_same(value: Any, what: str, *, hint: str | None = None) -> None:
    """Raise on every rank unless all ranks hold the same `value` (a digest, say): a job whose ranks
    disagree on their inputs would train on mismatched data, or hang at the first collective."""
    if _world.size == 1:
        return
    values: list[Any] = [None] * _world.size
    dist.all_gather_object(values, value)
    differ = [r for r, v in enumerate(values) if v != values[0]]
    if differ:
        who = f"Rank {differ[0]} does" if len(differ) == 1 else f"Ranks {', '.join(map(str, differ))} do"
        raise TlearnError(f"{who} not see the same {what} as rank 0.", hint=hint)


def barrier() -> None:
    if _world.size > 1:
        dist.barrier()


def wrap(module: nn.Module) -> nn.Module:
    """The module as DistributedDataParallel trains it (gradients averaged over ranks); itself alone.

    Buffers are not synchronised at each step: BatchNorm's statistics are frozen (see
    `set_train_mode_frozen_bn`) and identical on every rank, so there is nothing to sync and no
    SyncBatchNorm is needed.
    """
    if _world.size == 1:
        return module
    # Convolutions on channels-last inputs give channels-last gradients for contiguous weights: DDP
    # copies them into its buckets with a strided copy and warns; the copy happens either way.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    ddp = nn.parallel.DistributedDataParallel
    # Recent PyTorch names the option forward_sync_buffers (broadcast_buffers=False is deprecated there).
    new_name = "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters
    no_sync: dict[str, Any] = {"forward_sync_buffers": False} if new_name else {"broadcast_buffers": False}
    dev = _world.device
    return ddp(module, device_ids=[dev.index] if dev.type == "cuda" else None, **no_sync)


def _comm_device() -> torch.device:
    """NCCL moves CUDA tensors only; gloo CPU ones."""
    return _world.device if _world.device.type == "cuda" else CPU


def module_device(module: nn.Module) -> torch.device:
    """Where a module's parameters (or buffers) live; the CPU for one without either."""
    for p in module.parameters():
        return p.device
    for b in module.buffers():
        return b.device
    return CPU


@contextmanager
def moved(module: nn.Module, to: torch.device) -> Iterator[nn.Module]:
    """The module on device `to` for the block, then back where it was (between steps, modules live on the CPU)."""
    home = module_device(module)
    module.to(to)
    try:
        yield module
    finally:
        module.to(home)

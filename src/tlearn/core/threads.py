"""How many threads torch uses for a block of work, and a thread pool that works a few items ahead.

Small tensor operations (a linear head on 1,000 feature vectors, an L-BFGS step) finish faster on one
thread than on several: splitting them costs more than it saves, and when other programs keep the
cores busy, threads that wait for each other at every operation slow them down by an order of
magnitude (measured here: 65 ms per L-BFGS step on 2 threads under load, 0.8 ms on 1).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import numpy as np

T = TypeVar("T")
R = TypeVar("R")


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with `n` intra-op threads, then restore the previous number."""
    import torch  # here, not at the top: the CLI imports this module, and `tlearn --help` must not load torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def usable_cpus() -> list[int]:
    """The CPUs this process may run on: its affinity on Linux (a container or taskset may limit it),
    all of the machine's elsewhere (os.sched_getaffinity does not exist on macOS or Windows)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def cpu_flags() -> frozenset[str] | None:
    """The instruction-set flags of this machine's CPU (Linux's /proc/cpuinfo, e.g. "avx2", "avx512_vnni");
    None where they cannot be read (macOS, Windows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            line = next((line for line in fh if line.startswith("flags")), None)
    except OSError:
        return None
    return None if line is None else frozenset(line.split(":", 1)[1].split())


def cpu_workers(cap: int) -> int:
    """Worker threads or processes for work that scales with the CPUs: one per usable CPU, at most `cap`."""
    return max(1, min(cap, len(usable_cpus())))


def prefetched(fn: Callable[[T], R], items: Sequence[T], *, ahead: int, workers: int | None = None) -> Iterator[R]:
    """`fn(item)` for each item, in order, computed on a thread pool at most `ahead` items in front of the
    caller: the caller's work on one result overlaps the next ones' (for work that releases the GIL,
    such as Pillow's decoding), and memory stays flat on any number of items."""
    if len(items) <= 1:
        yield from (fn(item) for item in items)
        return
    pool = ThreadPoolExecutor(max_workers=workers or cpu_workers(8), thread_name_prefix="tlearn-prefetch")
    pending: deque[Future[R]] = deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def by_row_chunks(
    fn: Callable[[np.ndarray], Sequence[np.ndarray | None]],
    x: np.ndarray,
    step: int,
    *,
    pool: Executor | None = None,
) -> list[np.ndarray | None]:
    """`fn` on the rows of `x`, `step` at a time (rows are independent; on `pool`, side by side), each of
    its outputs concatenated back in row order (an output that is None stays None). One call: as it is."""
    import numpy as np  # here, not at the top: see torch_threads

    if len(x) <= step:
        return list(fn(x))
    chunks = [x[s : s + step] for s in range(0, len(x), step)]
    parts = list(pool.map(fn, chunks) if pool is not None else map(fn, chunks))
    return [None if parts[0][k] is None else np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]
